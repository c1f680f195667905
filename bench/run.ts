import { report, type BenchReport } from './lib.ts';

/**
 * `npm run bench` runs every benchmark; `npm run bench -- <name...>` runs some. Each is a module under bench/
 * whose default export returns a report; they run one after another so they do not compete for the 2 cores.
 */
const BENCHES: Record<string, () => Promise<{ default: () => Promise<BenchReport> }>> = {
  core: () => import('./core.ts'),
  archive: () => import('./archive.ts'),
  file: () => import('./file.ts'),
  bridge: () => import('./bridge.ts'),
  questdb: () => import('./questdb.ts'),
  indicators: () => import('./indicators.ts'),
  feed: () => import('./feed.ts'),
  e2e: () => import('./e2e.ts'),
  serve: () => import('./serve.ts'),
  bars: () => import('./bars.ts'),
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const names = wanted.length > 0 ? wanted : Object.keys(BENCHES);
for (const name of names) {
  const load = BENCHES[name];
  if (load === undefined) {
    process.stderr.write(`unknown benchmark "${name}"; choose from ${Object.keys(BENCHES).join(', ')}\n`);
    process.exitCode = 2;
    continue;
  }
  const mod = await load();
  report(await mod.default());
}
