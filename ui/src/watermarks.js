// Watermarks per source and partition: the watermark, its lag behind the wall clock, whether
// idle or ended, when the last event came; and which input holds the operators back.

import { h, fill } from './dom.js';
import { duration, hasWatermark, instant } from './model.js';

function lag(now, watermark) {
  return hasWatermark(watermark) ? duration(now - watermark) : '—';
}

function since(now, ms) {
  return ms == null ? 'never' : `${duration(now - ms)} ago`;
}

/** Draws `marks` (GET /api/v1/watermarks). */
export function renderWatermarks(element, marks) {
  const now = marks.now_ms;
  const rows = [];
  for (const source of marks.sources) {
    const holds = marks.holding_back === source.name;
    rows.push(
      h(
        'tr',
        { class: `source${holds ? ' holding' : ''}`, dataset: { source: source.name } },
        h('td', {}, h('strong', {}, source.name), holds ? h('span', { class: 'badge' }, 'holds the operators back') : null),
        h('td', {}, '(source)'),
        h('td', { class: 'mono' }, instant(source.watermark)),
        h('td', { class: 'num' }, lag(now, source.watermark)),
        h('td', {}, source.ended ? 'ended' : source.idle ? 'idle' : 'active'),
        h('td', { class: 'num' }, since(now, source.last_event_ms)),
      ),
    );
    for (const partition of source.partitions) {
      const held = source.holding_back === partition.name;
      rows.push(
        h(
          'tr',
          { class: `partition${held ? ' holding' : ''}` },
          h('td', {}, ''),
          h('td', {}, partition.name, held && source.partitions.length > 1 ? h('span', { class: 'badge' }, 'holds the source back') : null),
          h('td', { class: 'mono' }, instant(partition.watermark)),
          h('td', { class: 'num' }, lag(now, partition.watermark)),
          h('td', {}, partition.idle ? 'idle' : 'active'),
          h('td', { class: 'num' }, since(now, partition.last_event_ms)),
        ),
      );
    }
  }
  fill(
    element,
    h(
      'div',
      { class: 'summary' },
      h('div', {}, 'operators’ watermark ', h('strong', { class: 'mono' }, instant(marks.watermark))),
      h('div', {}, 'lag behind wall clock ', h('strong', {}, lag(now, marks.watermark))),
      h(
        'div',
        {},
        'held back by ',
        h('strong', { class: 'holding-back' }, marks.holding_back ?? 'no input (all idle or ended)'),
      ),
      h('div', { class: 'muted' }, `operators: ${marks.operators.join(', ') || 'none'}`),
    ),
    h(
      'table',
      { class: 'table' },
      h(
        'thead',
        {},
        h('tr', {}, ['source', 'partition', 'watermark (UTC)', 'lag behind wall clock', 'state', 'last event'].map((t) => h('th', {}, t))),
      ),
      h('tbody', {}, rows),
    ),
  );
}
