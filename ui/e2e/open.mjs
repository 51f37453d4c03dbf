// Keeps the dashboard open in headless Chromium, polling, until this process is stopped
// (SIGTERM or SIGINT): the load of a watching operator, for scripts/ui-bench.sh.
//
//   node ui/e2e/open.mjs --url http://127.0.0.1:PORT --token T [--poll MS]
import { chromium } from 'playwright-core';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    poll: { type: 'string', default: '1000' },
    browser: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
  },
});
if (!args.url || !args.token) throw new Error('open.mjs: --url and --token are required');

const browser = await chromium.launch({
  executablePath: args.browser,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
});
const stop = async () => {
  await browser.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
await page.goto(`${args.url}/ui?poll=${Number(args.poll)}`);
await page.fill('#token', args.token);
await page.click('#token-form button[type=submit]');
await page.locator('.node').first().waitFor({ timeout: 30_000 });
console.error('open.mjs: the dashboard is open and polling');
await new Promise(() => {});
