// The dashboard's computations against naive references: rates, the quantiles of the results
// between two latency readings (as the processor computes quantiles), state colouring, history.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  History, bucketsBetween, compact, dominant, duration, meanCheckpointDuration, nodeRates,
  quantile, rate,
} from '../src/model.js';

test('rates are count differences over time, 0 after a restart, null when unknown', () => {
  assert.equal(rate(100, 600, 500), 1000);
  assert.equal(rate(600, 100, 1000), 0);
  assert.equal(rate(null, 5, 1000), null);
  assert.equal(rate(1, 5, 0), null);
  const before = { now_ms: 1000, nodes: [{ name: 'a', events_in: null, events_out: 10 }, { name: 'b', events_in: 10, events_out: 5 }] };
  const after = { now_ms: 3000, nodes: [{ name: 'a', events_in: null, events_out: 30 }, { name: 'b', events_in: 30, events_out: 5 }, { name: 'c', events_in: 1, events_out: null }] };
  const rates = nodeRates(before, after);
  assert.deepEqual(rates.get('a'), { in: null, out: 10 });
  assert.deepEqual(rates.get('b'), { in: 10, out: 0 });
  assert.deepEqual(rates.get('c'), { in: null, out: null });
  assert.deepEqual(nodeRates(null, after).get('b'), { in: null, out: null });
});

/** The naive reference: quantiles of the sorted samples, by the same rank rule. */
function reference(samples, q) {
  if (samples.length === 0) return null;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1];
}

function histogram(samples) {
  const counts = new Map();
  for (const s of samples) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => a[0] - b[0]);
}

test('quantiles between two readings equal those of the samples between them', () => {
  let seed = 7;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed;
  };
  for (let round = 0; round < 50; round += 1) {
    const earlier = Array.from({ length: next() % 200 }, () => next() % 900);
    const later = Array.from({ length: next() % 200 }, () => next() % 900);
    const between = bucketsBetween(histogram(earlier), histogram([...earlier, ...later]));
    for (const q of [0, 0.01, 0.5, 0.9, 0.99, 1]) {
      assert.equal(quantile(between, q), reference(later, q), `round ${round}, q ${q}`);
    }
  }
  assert.equal(quantile([], 0.5), null);
});

test('a stage is coloured by what it spends most time on', () => {
  assert.equal(dominant({ busy: 0.9, backpressured: 0.05, starved: 0 }), 'busy');
  assert.equal(dominant({ busy: 0.2, backpressured: 0.7, starved: 0 }), 'backpressured');
  assert.equal(dominant({ busy: 0.01, backpressured: 0, starved: 0.95 }), 'starved');
  assert.equal(dominant({ busy: 0.01, backpressured: 0.02, starved: 0.03 }), 'idle');
  assert.equal(dominant(undefined), 'unknown');
});

test('the history keeps the newest points in uPlot columns', () => {
  const history = new History(2, 3);
  for (let i = 1; i <= 5; i += 1) history.push(i * 1000, i, i * 10);
  assert.deepEqual(history.columns(), [[3, 4, 5], [3, 4, 5], [30, 40, 50]]);
  assert.equal(history.length, 3);
});

test('figures read as people write them', () => {
  assert.equal(compact(950.4), '950');
  assert.equal(compact(12_345), '12.3k');
  assert.equal(compact(2_500_000), '2.50M');
  assert.equal(compact(null), '—');
  assert.equal(compact(0.5), '0.5');
  assert.equal(compact(3), '3');
  assert.equal(duration(850), '850 ms');
  assert.equal(duration(12_500), '12.5 s');
  assert.equal(duration(200_000), '3 min 20 s');
});

test('the mean checkpoint duration comes from the histogram in /metrics', () => {
  const text = [
    '# TYPE dataflow_checkpoint_duration_seconds histogram',
    'dataflow_checkpoint_duration_seconds_sum{pipeline="p"} 0.75',
    'dataflow_checkpoint_duration_seconds_count{pipeline="p"} 3',
    'dataflow_checkpoint_duration_seconds_bucket{le="0.001",pipeline="p"} 0',
  ].join('\n');
  assert.deepEqual(meanCheckpointDuration(text), { ms: 250, count: 3 });
  assert.equal(meanCheckpointDuration(text.replace('} 3', '} 0')), null);
  assert.equal(meanCheckpointDuration('# EOF'), null);
});
