// The dashboard: asks for the token once per tab, then polls the API every second and
// draws the views (graph, watermarks, charts, checkpoints). Any failed call shows its reason
// in words in the view it feeds; a refused token clears every view and asks again.

import { get, setToken, token } from './api.js';
import { h, fill, problem } from './dom.js';
import { renderGraph } from './graph.js';
import { renderWatermarks } from './watermarks.js';
import { Charts } from './charts.js';
import { Checkpoints } from './checkpoints.js';
import { compact, duration, instant, nodeRates } from './model.js';

const POLL_MS = Number(new URLSearchParams(location.search).get('poll')) || 1000;
const CHECKPOINTS_EVERY = 3;
const VIEWS = ['graph', 'watermarks', 'charts', 'checkpoints'];

const $ = (id) => document.getElementById(id);
const views = Object.fromEntries(VIEWS.map((v) => [v, $(`view-${v}`)]));

let charts = null;
let chartsProblem = null;
let checkpoints = null;
let timer = null;
let previousGraph = null;
let tick = 0;
let generation = 0;

function currentView() {
  const name = location.hash.replace('#', '');
  return VIEWS.includes(name) ? name : 'graph';
}

function showView() {
  const name = currentView();
  for (const [view, element] of Object.entries(views)) element.hidden = view !== name;
  for (const link of document.querySelectorAll('.tabs a')) {
    link.classList.toggle('active', link.dataset.tab === name);
  }
  if (name === 'charts') charts?.shown();
  if (name === 'checkpoints') checkpoints?.refresh();
}

function signedOut(message) {
  generation += 1;
  clearTimeout(timer);
  timer = null;
  setToken(null);
  previousGraph = null;
  charts = null;
  checkpoints = null;
  for (const element of Object.values(views)) fill(element);
  fill($('overview'));
  fill($('pipeline'));
  $('state').hidden = true;
  $('app').hidden = true;
  $('forget').hidden = true;
  $('login').hidden = false;
  const box = $('login-message');
  box.hidden = !message;
  box.textContent = message ?? '';
  $('token').focus();
}

function overview(status) {
  $('pipeline').textContent = status.pipeline;
  const pill = $('state');
  pill.hidden = false;
  pill.textContent = status.state;
  pill.className = `pill state-${status.state}`;
  const item = (label, value, key) => h('div', { class: 'figure-box', dataset: { key } }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
  fill(
    $('overview'),
    item('uptime', duration(status.uptime_ms), 'uptime'),
    item('read', compact(status.events_read), 'read'),
    item('emitted', compact(status.events_emitted), 'emitted'),
    item('dead letters', compact(status.dead_letters), 'dead'),
    item('late', compact(status.late_events), 'late'),
    item('watermark', instant(status.watermark), 'watermark'),
    item('last checkpoint', status.last_checkpoint ?? '—', 'last-checkpoint'),
    item('restored from', status.restored_from ?? '—', 'restored-from'),
    status.error ? h('div', { class: 'problem' }, `the run failed: ${status.error}`) : null,
  );
}

async function poll(mine) {
  const [status, graph, backpressure, marks] = await Promise.allSettled([
    get('/api/v1/status'),
    get('/api/v1/graph'),
    get('/api/v1/backpressure'),
    get('/api/v1/watermarks'),
  ]);
  if (mine !== generation) return;
  const refused = [status, graph, backpressure, marks].find((r) => r.status === 'rejected' && r.reason.unauthorized);
  if (refused) {
    signedOut(refused.reason.message);
    return;
  }
  if (status.status === 'fulfilled') overview(status.value);
  else fill($('overview'), problem(status.reason));

  if (graph.status === 'fulfilled') {
    const rates = nodeRates(previousGraph, graph.value);
    previousGraph = graph.value;
    renderGraph(views.graph, graph.value, rates, backpressure.status === 'fulfilled' ? backpressure.value : null);
    if (backpressure.status === 'rejected') views.graph.append(problem(backpressure.reason));
    if (status.status === 'fulfilled') charts.record(status.value, graph.value);
  } else {
    fill(views.graph, problem(graph.reason));
  }
  if (marks.status === 'fulfilled') renderWatermarks(views.watermarks, marks.value);
  else fill(views.watermarks, problem(marks.reason));
  const chartsFailed = [graph, status].find((r) => r.status === 'rejected');
  if (chartsFailed) fill(chartsProblem, problem(chartsFailed.reason));
  else fill(chartsProblem);
  tick += 1;
  if (currentView() === 'checkpoints' && tick % CHECKPOINTS_EVERY === 0) checkpoints.refresh();
}

function schedule(mine) {
  timer = setTimeout(async () => {
    await poll(mine).catch((error) => fill($('overview'), problem(error)));
    if (mine === generation) schedule(mine);
  }, POLL_MS);
}

async function start() {
  generation += 1;
  const mine = generation;
  // One call first: a refused token shows its message and no view at all.
  let status;
  try {
    status = await get('/api/v1/status');
  } catch (error) {
    if (error.unauthorized) {
      signedOut(error.message);
      return;
    }
    status = null;
    $('login-message').hidden = true;
    $('app').hidden = false;
    fill($('overview'), problem(error));
  }
  $('login').hidden = true;
  $('login-message').hidden = true;
  $('app').hidden = false;
  $('forget').hidden = false;
  chartsProblem = h('div', { class: 'charts-problem' });
  const chartsBody = h('div', { class: 'charts' });
  fill(views.charts, chartsProblem, chartsBody);
  charts = new Charts(chartsBody);
  checkpoints = new Checkpoints(views.checkpoints, {
    status: () => get('/api/v1/status'),
    onRestored: () => {
      previousGraph = null;
    },
  });
  if (status) overview(status);
  showView();
  await poll(mine);
  schedule(mine);
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('token').value.trim();
  $('token').value = '';
  if (!value) return;
  setToken(value);
  start();
});
$('forget').addEventListener('click', () => signedOut(null));
window.addEventListener('hashchange', showView);

if (token()) start();
else signedOut(null);
