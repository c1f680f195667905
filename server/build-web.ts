import { join } from 'node:path';
import { build } from 'esbuild';

/**
 * Bundle the dashboard (server/web/src → server/web/public/dist/app.js): one ES module, minified, with
 * lightweight-charts and the indicator math inside. `npm run build:web`; the browser test calls it when the
 * bundle is missing.
 */
export const WEB_DIR = join(import.meta.dirname, 'web');
export const BUNDLE = join(WEB_DIR, 'public', 'dist', 'app.js');

export async function buildWeb(): Promise<void> {
  await build({
    entryPoints: [join(WEB_DIR, 'src', 'main.ts')],
    outfile: BUNDLE,
    bundle: true,
    format: 'esm',
    target: 'es2022',
    minify: true,
    sourcemap: true,
    logLevel: 'warning',
  });
}

if (process.argv[1] === import.meta.filename) await buildWeb();
