// Live charts of the last minutes: events per second in and out, end-to-end latency p50/p99
// (of the results written between two readings), dead letters and late events per second.
// uPlot draws them; the history keeps five minutes of one-second readings.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h, fill } from './dom.js';
import { History, bucketsBetween, compact, quantile, rate } from './model.js';

const CHARTS = [
  {
    id: 'throughput',
    title: 'events per second',
    series: [
      { label: 'in (read)', stroke: '#2563eb' },
      { label: 'out (emitted)', stroke: '#16a34a' },
    ],
    unit: '/s',
  },
  {
    id: 'latency',
    title: 'end-to-end latency (ms)',
    series: [
      { label: 'p50', stroke: '#7c3aed' },
      { label: 'p99', stroke: '#db2777' },
    ],
    unit: ' ms',
  },
  {
    id: 'side',
    title: 'dead letters and late events per second',
    series: [
      { label: 'dead letters', stroke: '#dc2626' },
      { label: 'late', stroke: '#d97706' },
    ],
    unit: '/s',
  },
];

export class Charts {
  constructor(element) {
    this.element = element;
    this.histories = new Map(CHARTS.map((c) => [c.id, new History(c.series.length)]));
    this.plots = new Map();
    this.last = null;
    window.addEventListener('resize', () => this.resize());
  }

  /** Adds a reading: `status` (GET /api/v1/status) and `graph` (GET /api/v1/graph). */
  record(status, graph) {
    const now = graph.now_ms;
    const previous = this.last;
    this.last = { now, status, latency: graph.latency.buckets };
    if (!previous) return;
    const millis = now - previous.now;
    const between = bucketsBetween(previous.latency, graph.latency.buckets);
    this.histories.get('throughput').push(
      now,
      rate(previous.status.events_read, status.events_read, millis),
      rate(previous.status.events_emitted, status.events_emitted, millis),
    );
    this.histories.get('latency').push(now, quantile(between, 0.5), quantile(between, 0.99));
    this.histories.get('side').push(
      now,
      rate(previous.status.dead_letters, status.dead_letters, millis),
      rate(previous.status.late_events, status.late_events, millis),
    );
    this.draw();
  }

  /** The latest value of each series of chart `id`, for the page's figures and tests. */
  latest(id) {
    const columns = this.histories.get(id).columns();
    return columns.slice(1).map((column) => column[column.length - 1] ?? null);
  }

  width() {
    return Math.max(320, Math.min(this.element.clientWidth - 24, 1100));
  }

  /** Creates the plots once the view is shown (uPlot needs a width). */
  ensure() {
    if (this.plots.size > 0 || this.element.clientWidth === 0) return;
    fill(this.element);
    for (const chart of CHARTS) {
      const box = h('div', { class: 'chart', dataset: { chart: chart.id } }, h('h3', {}, chart.title));
      const figure = h('div', { class: 'figure mono' });
      box.append(figure);
      this.element.append(box);
      const options = {
        width: this.width(),
        height: 170,
        series: [
          {},
          ...chart.series.map((s) => ({
            label: s.label,
            stroke: s.stroke,
            width: 2,
            spanGaps: false,
            value: (_, v) => (v == null ? '—' : `${compact(v)}${chart.unit}`),
          })),
        ],
        axes: [{}, { values: (_, ticks) => ticks.map((v) => compact(v)), size: 60 }],
        scales: { y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
        legend: { live: false },
      };
      const plot = new uPlot(options, this.histories.get(chart.id).columns(), box);
      this.plots.set(chart.id, { plot, figure, chart });
    }
  }

  draw() {
    this.ensure();
    for (const [id, { plot, figure, chart }] of this.plots) {
      const history = this.histories.get(id);
      plot.setData(history.columns());
      const values = this.latest(id);
      figure.textContent = chart.series
        .map((s, i) => `${s.label}: ${values[i] == null ? '—' : compact(values[i]) + chart.unit}`)
        .join('   ');
    }
  }

  resize() {
    for (const { plot } of this.plots.values()) plot.setSize({ width: this.width(), height: 170 });
  }

  shown() {
    this.ensure();
    this.resize();
    this.draw();
  }
}
