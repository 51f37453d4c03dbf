// The pipeline graph: sources, then the chain of steps, then the sinks, each with its kind,
// events in and out per second, and its busy / backpressured / starved shares; the stage
// `bottleneck` names (as `admin backpressure` does) is marked.

import { h, fill } from './dom.js';
import { compact, dominant } from './model.js';

const STATE_WORDS = {
  busy: 'busy',
  backpressured: 'backpressured',
  starved: 'starved',
  idle: 'idle',
  unknown: 'no report yet',
};

function percent(share) {
  return share == null ? '—' : `${Math.round(share * 100)}%`;
}

function node(graphNode, rates, share, bottleneck) {
  const state = dominant(share);
  const isBottleneck = bottleneck === graphNode.name;
  const r = rates.get(graphNode.name) ?? {};
  const bar = h(
    'div',
    { class: 'shares', title: 'busy / backpressured / starved share of the last interval' },
    h('span', { class: 'busy', style: `width:${(share?.busy ?? 0) * 100}%` }),
    h('span', { class: 'backpressured', style: `width:${(share?.backpressured ?? 0) * 100}%` }),
    h('span', { class: 'starved', style: `width:${(share?.starved ?? 0) * 100}%` }),
  );
  return h(
    'div',
    {
      class: `node state-${state}${isBottleneck ? ' bottleneck' : ''}`,
      dataset: { name: graphNode.name, role: graphNode.role, state },
    },
    h(
      'div',
      { class: 'node-head' },
      h('span', { class: 'kind' }, graphNode.kind),
      isBottleneck ? h('span', { class: 'badge', title: 'holds the pipeline back' }, 'bottleneck') : null,
    ),
    h('div', { class: 'node-name' }, graphNode.name),
    h(
      'div',
      { class: 'node-rates' },
      graphNode.events_in == null ? null : h('span', { class: 'rate-in' }, `in ${compact(r.in)}/s`),
      graphNode.events_out == null ? null : h('span', { class: 'rate-out' }, `out ${compact(r.out)}/s`),
    ),
    bar,
    h(
      'div',
      { class: 'node-shares' },
      `${STATE_WORDS[state]} · busy ${percent(share?.busy)} · bp ${percent(share?.backpressured)} · starved ${percent(share?.starved)}`,
    ),
  );
}

function column(title, nodes) {
  return h('div', { class: 'column' }, h('div', { class: 'column-title' }, title), nodes);
}

/** Draws `graph` (GET /api/v1/graph) with `rates` (model.nodeRates) and `backpressure`
 * (GET /api/v1/backpressure, may be null). */
export function renderGraph(element, graph, rates, backpressure) {
  const shares = new Map((backpressure?.stages ?? []).map((s) => [s.stage, s]));
  const bottleneck = backpressure?.bottleneck ?? null;
  const of = (role) =>
    graph.nodes
      .filter((n) => n.role === role)
      .map((n) => node(n, rates, shares.get(n.name), bottleneck));
  const arrow = () => h('div', { class: 'arrow', 'aria-hidden': 'true' }, '→');
  const steps = of('step');
  const chain = [];
  steps.forEach((step, i) => {
    if (i > 0) chain.push(h('div', { class: 'arrow small', 'aria-hidden': 'true' }, '↓'));
    chain.push(step);
  });
  fill(
    element,
    h(
      'div',
      { class: 'graph' },
      column('sources', of('source')),
      arrow(),
      column('steps', chain),
      arrow(),
      column('sinks', of('sink')),
    ),
    h(
      'p',
      { class: 'legend' },
      h('span', { class: 'swatch busy' }), ' busy ',
      h('span', { class: 'swatch backpressured' }), ' backpressured (blocked on its output) ',
      h('span', { class: 'swatch starved' }), ' starved (waiting for input) · ',
      bottleneck
        ? ['bottleneck: ', h('strong', { class: 'bottleneck-name' }, bottleneck)]
        : 'no stage is the bottleneck now (the input is the limit)',
    ),
  );
}
