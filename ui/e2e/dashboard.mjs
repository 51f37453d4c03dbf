// Drives the dashboard of a running processor in headless Chromium (Debian's, through
// playwright-core: it never downloads a browser) and checks what a person would: a wrong token
// shows a clear message and no data; with the right one the graph shows every node, the rates
// move, the watermarks and charts fill, a checkpoint is listed, verifies and diffs, and a
// restore through the page (dry run, then confirm) ends with the pipeline running from it.
// Saves a screenshot of each view. Prints one JSON line: {"restored": ID, "screenshots": [...]}.
//
//   node ui/e2e/dashboard.mjs --url http://127.0.0.1:PORT --token T --nodes a,b,c --out DIR
//
// Run by cmd/processor/tests/dashboard_e2e.rs, which starts the processor and checks the
// restore through `admin status` afterwards.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    nodes: { type: 'string' },
    out: { type: 'string' },
    browser: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
  },
});
for (const required of ['url', 'token', 'nodes', 'out']) {
  if (!args[required]) throw new Error(`dashboard.mjs: --${required} is required`);
}
const nodes = args.nodes.split(',');
mkdirSync(args.out, { recursive: true });

const TIMEOUT = 60_000;
const shots = [];
function step(what) {
  console.error(`dashboard e2e: ${what}`);
}
async function shot(page, name) {
  const path = join(args.out, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
}
function check(condition, message) {
  if (!condition) throw new Error(`dashboard e2e: ${message}`);
}
/** Polls `read` until `accept` holds of its value, within the deadline. */
async function until(what, read, accept) {
  const deadline = Date.now() + TIMEOUT;
  let last;
  for (;;) {
    last = await read();
    if (accept(last)) return last;
    if (Date.now() > deadline) throw new Error(`dashboard e2e: timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
const number = (text) => {
  const match = /([\d.]+)\s*([kMG]?)/.exec(text ?? '');
  if (!match) return null;
  return Number(match[1]) * ({ k: 1e3, M: 1e6, G: 1e9 }[match[2]] ?? 1);
};

const browser = await chromium.launch({
  executablePath: args.browser,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  page.setDefaultTimeout(TIMEOUT);

  step('a wrong token: a clear message and no data');
  await page.goto(`${args.url}/ui`);
  await page.fill('#token', 'not-the-token');
  await page.click('#token-form button[type=submit]');
  const message = page.locator('#login-message');
  await message.waitFor({ state: 'visible' });
  const text = await message.textContent();
  check(/refused the token/.test(text) && /401/.test(text), `the wrong token's message is unclear: ${text}`);
  check(await page.locator('#app').isHidden(), 'the views show with a wrong token');
  check((await page.locator('.node, tr[data-id], .chart').count()) === 0, 'data is on the page with a wrong token');
  check((await page.locator('#overview').textContent()) === '', 'the overview shows data with a wrong token');
  await shot(page, 'wrong-token');

  step('the right token: the graph shows every node');
  await page.fill('#token', args.token);
  await page.click('#token-form button[type=submit]');
  for (const name of nodes) {
    await page.locator(`.node[data-name="${name}"]`).waitFor();
  }
  const shown = await page.locator('.node').evaluateAll((els) => els.map((e) => e.dataset.name));
  check(JSON.stringify(shown) === JSON.stringify(nodes), `the graph shows ${shown}, expected ${nodes}`);
  for (const name of nodes) {
    const kind = await page.locator(`.node[data-name="${name}"] .kind`).textContent();
    check(kind.trim().length > 0, `${name} shows no kind`);
  }

  step('the rates move');
  const lastStep = nodes.filter((n) => n.startsWith('steps[')).pop();
  const rateIn = page.locator(`.node[data-name="${lastStep}"] .rate-in`);
  const first = await until(`a rate on ${lastStep}`, () => rateIn.textContent(), (t) => number(t) > 0);
  const readCount = page.locator('.figure-box[data-key=read] .value');
  const before = number(await readCount.textContent());
  await until('the read count to grow', () => readCount.textContent(), (t) => number(t) > before);
  const states = await page.locator('.node').evaluateAll((els) => els.map((e) => e.dataset.state));
  check(states.every((s) => s !== 'unknown'), `some stages have no backpressure report: ${states}`);
  await shot(page, 'graph');
  console.error(`dashboard e2e: ${lastStep} ${first.trim()}; states ${states.join(',')}`);

  step('the token is kept for the tab across a reload');
  await page.reload();
  await page.locator(`.node[data-name="${nodes[0]}"]`).waitFor();

  step('watermarks');
  await page.click('a[data-tab=watermarks]');
  await page.locator('#view-watermarks tr.source').first().waitFor();
  const held = await page.locator('#view-watermarks .holding-back').textContent();
  check(held.trim().length > 0, 'the watermarks do not say which input holds back');
  await shot(page, 'watermarks');

  step('charts');
  await page.click('a[data-tab=charts]');
  await until('three charts', () => page.locator('#view-charts .chart canvas').count(), (n) => n >= 3);
  const throughput = page.locator('.chart[data-chart=throughput] .figure');
  await until('a throughput figure', () => throughput.textContent(), (t) => /in \(read\): [\d.]+[kMG]?\/s/.test(t) && number(t.split('in (read): ')[1]) > 0);
  await until('a latency figure', () => page.locator('.chart[data-chart=latency] .figure').textContent(), (t) => /p50: \d/.test(t));
  await page.waitForTimeout(2500); // a few more points on the charts for the screenshot
  await shot(page, 'charts');

  step('checkpoints: listed, verified, diffed');
  await page.click('a[data-tab=checkpoints]');
  await until('two checkpoints in the list', () => page.locator('tr[data-id]').count(), (n) => n >= 2);
  const ids = (await page.locator('tr[data-id]').evaluateAll((els) => els.map((e) => Number(e.dataset.id)))).sort((a, b) => a - b);
  const newest = ids[ids.length - 1];
  await until('the mean checkpoint duration', () => page.locator('.durations').textContent(), (t) => /on average over the \d+ checkpoint/.test(t));
  const took = await page.locator(`tr[data-id="${newest}"] td.duration`).textContent();
  check(/^\d+(\.\d)? (ms|s)$/.test(took.trim()), `checkpoint ${newest} shows its own duration, not "${took}"`);
  const oldest = ids[0];
  await page.click(`tr[data-id="${newest}"] button.verify`);
  await page.locator(`.verified[data-id="${newest}"]`).waitFor();
  await page.selectOption('select[name=diff-a]', String(oldest));
  await page.selectOption('select[name=diff-b]', String(newest));
  await page.click('button.diff');
  await page.locator('.diff-result').waitFor();
  const diffTitle = await page.locator('.diff-result h3').textContent();
  check(diffTitle.includes(`${oldest} → ${newest}`), `the diff is of ${diffTitle}`);
  await shot(page, 'checkpoints-diff');

  step(`restore checkpoint ${oldest}: dry run, confirm, resume`);
  await page.click(`tr[data-id="${oldest}"] button.restore`);
  await page.locator(`.restore-plan[data-id="${oldest}"]`).waitFor();
  const plan = await page.locator('.restore-plan').textContent();
  check(plan.includes('dry run') && plan.includes('sources resume at'), `the dry run says: ${plan}`);
  await shot(page, 'restore-dry-run');
  await page.click('.restore-plan button.confirm');
  await page.locator(`.restored[data-id="${oldest}"]`).waitFor();
  await until('the overview to show the restore', () => page.locator('.figure-box[data-key=restored-from] .value').textContent(), (t) => t.trim() === String(oldest));
  await shot(page, 'restored');

  step('an API error is shown in words, in the view it feeds');
  await page.route('**/api/v1/watermarks', (route) =>
    route.fulfill({
      status: 500,
      contentType: 'application/json',
      body: JSON.stringify({ code: 'internal', message: 'injected by the test: the report failed' }),
    }),
  );
  await page.click('a[data-tab=watermarks]');
  const failure = page.locator('#view-watermarks .problem');
  await failure.waitFor();
  const said = await failure.textContent();
  check(/500 internal: injected by the test/.test(said), `the failed call shows: ${said}`);
  await shot(page, 'api-error');
  await page.unroute('**/api/v1/watermarks');

  check(pageErrors.length === 0, `the page threw: ${pageErrors.join('; ')}`);
  console.log(JSON.stringify({ restored: oldest, screenshots: shots }));
} finally {
  await browser.close();
}
