// Builds dist/ from src/: app.js (the modules and uPlot, bundled and minified), app.css
// (uPlot's styles, then the page's, minified) and index.html (copied). Reproducible: the same
// sources and the locked esbuild give the same bytes. Run it through scripts/ui-build.sh;
// `--out DIR` builds into DIR instead (the test that checks the committed dist/ does).
import { build, transform } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';

const root = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({ options: { out: { type: 'string' } } });
const dist = args.out ? resolve(args.out) : join(root, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

// app.js, and app.css from the CSS that charts.js imports (uPlot's).
await build({
  entryPoints: { app: join(root, 'src/main.js') },
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  outdir: dist,
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
});
const styles =
  readFileSync(join(dist, 'app.css'), 'utf8') + readFileSync(join(root, 'src/style.css'), 'utf8');
const css = await transform(styles, { loader: 'css', minify: true, legalComments: 'eof' });
writeFileSync(join(dist, 'app.css'), css.code);
copyFileSync(join(root, 'src/index.html'), join(dist, 'index.html'));

let total = 0;
let compressed = 0;
for (const name of readdirSync(dist).sort()) {
  const body = readFileSync(join(dist, name));
  total += body.length;
  compressed += gzipSync(body, { level: 9 }).length;
}
console.log(`${dist}: ${total} bytes, ${compressed} bytes gzipped`);
