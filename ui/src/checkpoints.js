// Checkpoints: the list (id, time, size, duration, status), verify one, the diff of two, take one now,
// and restore: a dry run shows what would be restored and dropped, a confirmation restores,
// and the page follows the status until the pipeline runs again from the checkpoint.

import { get, getText, post, segment } from './api.js';
import { h, fill, problem } from './dom.js';
import { bytes, duration, instant, meanCheckpointDuration } from './model.js';

const byId = (id) => `/api/v1/checkpoints/${segment(id)}`;

function pairs(rows, render) {
  return h('table', { class: 'table compact' }, h('tbody', {}, rows.map(render)));
}

function arrowed([older, newer], format = (v) => v) {
  return older === newer ? `${format(older)}` : `${format(older)} → ${format(newer)}`;
}

export class Checkpoints {
  constructor(element, { onRestored, status }) {
    this.element = element;
    this.onRestored = onRestored;
    this.status = status;
    this.rows = [];
    this.list = h('div', { class: 'checkpoint-list' });
    this.durations = h('p', { class: 'muted durations' });
    this.result = h('div', { class: 'checkpoint-result', 'aria-live': 'polite' });
    this.diffA = h('select', { name: 'diff-a', 'aria-label': 'older checkpoint' });
    this.diffB = h('select', { name: 'diff-b', 'aria-label': 'newer checkpoint' });
    fill(
      element,
      h(
        'div',
        { class: 'toolbar' },
        h('button', { type: 'button', class: 'trigger', onclick: () => this.trigger() }, 'take a checkpoint now'),
        h('span', { class: 'spacer' }),
        'diff ', this.diffA, ' → ', this.diffB, ' ',
        h('button', { type: 'button', class: 'diff', onclick: () => this.diff() }, 'diff'),
      ),
      this.result,
      this.durations,
      this.list,
    );
  }

  async refresh() {
    this.refreshDurations();
    try {
      this.rows = await get('/api/v1/checkpoints');
    } catch (error) {
      fill(this.list, problem(error));
      return;
    }
    this.renderList();
  }

  /** The mean duration from /metrics, over the checkpoints this process took. */
  async refreshDurations() {
    try {
      const mean = meanCheckpointDuration(await getText('/metrics'));
      this.durations.textContent = mean
        ? `duration: ${duration(mean.ms)} on average over the ${mean.count} checkpoint(s) this process took`
        : 'duration: no checkpoint completed by this process yet';
    } catch (error) {
      this.durations.textContent = `duration unknown: ${error.message}`;
    }
  }

  renderList() {
    if (this.rows.length === 0) {
      fill(this.list, h('p', { class: 'muted' }, 'no checkpoint stored yet'));
    } else {
      const newestFirst = [...this.rows].reverse();
      fill(
        this.list,
        h(
          'table',
          { class: 'table checkpoints' },
          h('thead', {}, h('tr', {}, ['id', 'taken (UTC)', 'size', 'duration', 'status', ''].map((t) => h('th', {}, t)))),
          h(
            'tbody',
            {},
            newestFirst.map((row) =>
              h(
                'tr',
                { dataset: { id: row.id }, class: row.verified ? '' : 'invalid' },
                h('td', { class: 'num' }, row.id),
                h('td', { class: 'mono' }, row.created_at ? instant(Date.parse(row.created_at)) : '—'),
                h('td', { class: 'num' }, bytes(row.bytes)),
                h('td', { class: 'num duration' }, duration(row.duration_ms)),
                h('td', {}, row.status),
                h(
                  'td',
                  {},
                  h(
                    'div',
                    { class: 'actions' },
                    h('button', { type: 'button', class: 'verify', onclick: () => this.verify(row.id) }, 'verify'),
                    h('button', { type: 'button', class: 'restore', onclick: () => this.dryRun(row.id) }, 'restore…'),
                  ),
                ),
              ),
            ),
          ),
        ),
      );
    }
    this.fillSelects();
  }

  fillSelects() {
    const ids = this.rows.map((row) => row.id);
    for (const [select, fallback] of [
      [this.diffA, ids[Math.max(0, ids.length - 2)]],
      [this.diffB, ids[ids.length - 1]],
    ]) {
      const chosen = ids.includes(Number(select.value)) ? Number(select.value) : fallback;
      fill(select, ids.map((id) => h('option', { value: id, selected: id === chosen }, `#${id}`)));
    }
  }

  show(...children) {
    fill(this.result, ...children);
  }

  async run(what, work) {
    this.show(h('p', { class: 'muted' }, `${what}…`));
    try {
      await work();
    } catch (error) {
      this.show(problem(error));
    }
  }

  verify(id) {
    return this.run(`verifying checkpoint ${id}`, async () => {
      const answer = await post(`${byId(id)}/verify`);
      this.show(
        h('div', { class: 'ok verified', dataset: { id } }, `checkpoint ${answer.id} verified: checksum and decoding are good (sha256 ${answer.sha256})`),
      );
    });
  }

  trigger() {
    return this.run('taking a checkpoint', async () => {
      const answer = await post('/api/v1/checkpoints');
      this.show(h('div', { class: 'ok' }, `checkpoint ${answer.id} requested: it appears in the list once stored`));
      await this.refresh();
    });
  }

  diff() {
    const a = Number(this.diffA.value);
    const b = Number(this.diffB.value);
    if (!a || !b) {
      this.show(problem(new Error('choose two checkpoints to compare')));
      return Promise.resolve();
    }
    return this.run(`comparing ${a} and ${b}`, async () => {
      const diff = await get(`${byId(a)}/diff/${segment(b)}`);
      const s = diff.summary;
      this.show(
        h(
          'div',
          { class: 'diff-result' },
          h('h3', {}, `checkpoint ${s.from} → ${s.to}`, s.same_pipeline ? '' : ' (taken by pipelines of different shapes)'),
          pairs(
            [
              ['watermark', arrowed(s.watermark, instant)],
              ...s.operators.map((o) => [`${o.name}`, `keys ${arrowed(o.key_count)}, bytes ${arrowed(o.bytes, bytes)}`]),
              ...s.partitions.map((p) => [`${p.source} / ${p.partition}`, `offset ${arrowed(p.offset)}`]),
            ],
            ([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'mono' }, v)),
          ),
          h(
            'table',
            { class: 'table compact' },
            h('thead', {}, h('tr', {}, ['operator', 'keys added', 'removed', 'changed'].map((t) => h('th', {}, t)))),
            h(
              'tbody',
              {},
              diff.keys.map((k) =>
                h(
                  'tr',
                  {},
                  h('td', {}, k.operator),
                  k.error
                    ? h('td', { colspan: 3 }, problem(new Error(k.error)))
                    : [k.added.length, k.removed.length, k.changed.length].map((n) => h('td', { class: 'num' }, n)),
                ),
              ),
            ),
          ),
        ),
      );
    });
  }

  dryRun(id) {
    return this.run(`asking what a restore of checkpoint ${id} would do`, async () => {
      const report = await post(`${byId(id)}/restore`, { dry_run: true });
      this.show(
        h(
          'div',
          { class: 'restore-plan', dataset: { id } },
          h('h3', {}, `restore checkpoint ${id}? (dry run: nothing changed yet)`),
          this.report(report),
          h(
            'div',
            { class: 'toolbar' },
            h('button', { type: 'button', class: 'confirm danger', onclick: () => this.restore(id) }, `confirm: restore checkpoint ${id}`),
            h('button', { type: 'button', class: 'cancel', onclick: () => this.show() }, 'cancel'),
          ),
        ),
      );
    });
  }

  report(report) {
    return pairs(
      [
        ['watermark', instant(report.watermark)],
        ['restored', report.operators.map((o) => `${o.name} (${o.kind}): ${o.key_count} keys`).join('; ') || 'no operator state'],
        ['start empty', report.empty.join(', ') || 'none'],
        ['sources resume at', report.sources.map((s) => `${s.name}: ${s.partitions.map(([p, offset]) => `${p} @ ${offset}`).join(', ')}`).join('; ') || '—'],
        ['dropped', report.dropped.join(', ') || 'nothing'],
        ['discarded', report.discarded || '—'],
        ['last checkpoint before', report.last_checkpoint_before ?? '—'],
      ],
      ([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, String(v))),
    );
  }

  restore(id) {
    return this.run(`restoring checkpoint ${id}`, async () => {
      const report = await post(`${byId(id)}/restore`, {});
      this.show(h('div', { class: 'muted' }, `restored checkpoint ${id}: waiting for the pipeline to run again…`), this.report(report));
      const deadline = Date.now() + 60_000;
      for (;;) {
        const status = await this.status();
        if (status.restored_from === id && status.state === 'running') {
          this.show(
            h('div', { class: 'ok restored', dataset: { id } }, `the pipeline runs again from checkpoint ${id} (restores since start: ${status.restores})`),
            this.report(report),
          );
          this.onRestored?.(id);
          return;
        }
        if (status.state === 'failed') throw new Error(`the pipeline failed after the restore: ${status.error ?? 'no reason given'}`);
        if (Date.now() > deadline) throw new Error(`the pipeline did not report running from checkpoint ${id} within a minute (state ${status.state})`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    });
  }
}
