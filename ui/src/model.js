// Pure computations on the API's readings: rates from two readings of growing counts, the
// latency quantiles of the results written between two readings, the state colouring of a
// stage, and a bounded history for the charts. No DOM here (tested with `node --test`).

/** Events per second between two counts `before` and `after` taken `millis` apart; null when
 * either is unknown or no time passed. A count that went down (the process restarted) gives 0. */
export function rate(before, after, millis) {
  if (before == null || after == null || !(millis > 0)) return null;
  return Math.max(0, after - before) / (millis / 1000);
}

/** Per node name, `{in, out}` events per second between two graph readings. */
export function nodeRates(previous, current) {
  const rates = new Map();
  if (!current) return rates;
  const millis = previous ? current.now_ms - previous.now_ms : 0;
  const before = new Map((previous?.nodes ?? []).map((n) => [n.name, n]));
  for (const node of current.nodes) {
    const old = before.get(node.name);
    rates.set(node.name, {
      in: rate(old?.events_in, node.events_in, millis),
      out: rate(old?.events_out, node.events_out, millis),
    });
  }
  return rates;
}

/** The buckets `[lowerMs, count]` counted between two readings of the latency histogram. */
export function bucketsBetween(before, after) {
  const earlier = new Map(before ?? []);
  const between = [];
  for (const [lower, count] of after ?? []) {
    const added = count - (earlier.get(lower) ?? 0);
    if (added > 0) between.push([lower, added]);
  }
  return between;
}

/** The smallest latency with at least `q` of the counts at or below it (as the processor
 * computes its own quantiles), or null for no counts. */
export function quantile(buckets, q) {
  const total = buckets.reduce((sum, [, count]) => sum + count, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(Math.min(1, Math.max(0, q)) * total));
  let seen = 0;
  for (const [lower, count] of buckets) {
    seen += count;
    if (seen >= rank) return lower;
  }
  return buckets[buckets.length - 1][0];
}

/** What a stage spends most of its time on: `busy`, `backpressured`, `starved` or `idle`
 * (none of the three reaches a tenth of the interval). */
export function dominant(share) {
  if (!share) return 'unknown';
  const parts = [
    ['busy', share.busy],
    ['backpressured', share.backpressured],
    ['starved', share.starved],
  ];
  parts.sort((a, b) => b[1] - a[1]);
  return parts[0][1] >= 0.1 ? parts[0][0] : 'idle';
}

/** A time series of at most `capacity` points: `push(t, ...values)`; `columns()` gives
 * uPlot's data layout (times in seconds first). */
export class History {
  constructor(series, capacity = 300) {
    this.capacity = capacity;
    this.data = [[], ...Array.from({ length: series }, () => [])];
  }

  push(timeMs, ...values) {
    this.data[0].push(timeMs / 1000);
    for (let i = 1; i < this.data.length; i += 1) this.data[i].push(values[i - 1] ?? null);
    while (this.data[0].length > this.capacity) {
      for (const column of this.data) column.shift();
    }
  }

  get length() {
    return this.data[0].length;
  }

  columns() {
    return this.data;
  }
}

/** `1234567` as `1.23M`, `950.4` as `950`; null as an em dash. */
export function compact(value) {
  if (value == null || Number.isNaN(value)) return '—';
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(2)}G`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(1)}k`;
  if (abs < 10 && !Number.isInteger(value)) return value.toFixed(1);
  return `${Math.round(value)}`;
}

/** A duration in ms as `850 ms`, `12.5 s`, `3 min 20 s`, `2 h 5 min`. */
export function duration(ms) {
  if (ms == null || Number.isNaN(ms)) return '—';
  const abs = Math.abs(ms);
  const sign = ms < 0 ? '-' : '';
  if (abs < 1000) return `${sign}${Math.round(abs)} ms`;
  if (abs < 60_000) return `${sign}${(abs / 1000).toFixed(1)} s`;
  if (abs < 3_600_000) {
    return `${sign}${Math.floor(abs / 60_000)} min ${Math.round((abs % 60_000) / 1000)} s`;
  }
  return `${sign}${Math.floor(abs / 3_600_000)} h ${Math.round((abs % 3_600_000) / 60_000)} min`;
}

/** Bytes as `18.9 KiB`. */
export function bytes(value) {
  if (value == null) return '—';
  if (value < 1024) return `${value} B`;
  if (value < 1024 * 1024) return `${(value / 1024).toFixed(1)} KiB`;
  return `${(value / 1024 / 1024).toFixed(1)} MiB`;
}

/** An epoch-ms watermark as ISO text; the "no watermark yet" sentinels as a dash. */
export function instant(ms) {
  if (ms == null || ms <= -8.64e15 || ms >= 8.64e15) return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

/** Whether a watermark is a real time (not the minimum before the first event). */
export function hasWatermark(ms) {
  return ms != null && ms > -8.64e15 && ms < 8.64e15;
}

/** The mean checkpoint duration in ms from the `/metrics` text
 * (`dataflow_checkpoint_duration_seconds` sum over count), with the count; null before the
 * first checkpoint or when the series is absent. */
export function meanCheckpointDuration(metricsText) {
  const value = (suffix) => {
    const pattern = new RegExp(`^dataflow_checkpoint_duration_seconds_${suffix}(?:\\{[^}]*\\})? (\\S+)`, 'm');
    const match = pattern.exec(metricsText ?? '');
    return match ? Number(match[1]) : null;
  };
  const sum = value('sum');
  const count = value('count');
  if (sum == null || !count) return null;
  return { ms: (sum / count) * 1000, count };
}
