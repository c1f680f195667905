import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import type * as BinanceModule from '../../producers/feeds/binance.ts';
import type * as SourceModule from '../../producers/feeds/source.ts';
import { silentLogger } from '../../shared/logger.ts';
import { fastFeedSettings, FeedStandIn } from '../helpers/feed-standin.ts';
import { uniqueName } from '../helpers/index.ts';

// The feed worker from the compiled build: `npm run build` emits worker.js beside source.js, and FeedSource
// must start that one, without tsx. The feed modules are compiled here with the build's settings (types not
// checked again: `npm run typecheck` does that), into a directory the .gitignore leaves out, inside the
// checkout so that the compiled modules find node_modules. No other test file loads the feed modules' compiled
// copies, so prom-client sees the feed metrics registered once in this process.
const root = join(import.meta.dirname, '..', '..');
const dir = join(root, `.tickstream-build-${uniqueName('feeds')}`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the feed worker in the compiled build', () => {
  it('resolves worker.js beside source.js and runs a feed from it', async () => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        extends: '../tsconfig.build.json',
        include: [],
        files: [
          '../producers/feeds/index.ts',
          '../producers/feeds/source.ts',
          '../producers/feeds/worker.ts',
        ],
        compilerOptions: {
          outDir: 'out',
          rootDir: '..',
          noCheck: true,
          typeRoots: ['../node_modules/@types'],
        },
      }),
    );
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    await promisify(execFile)(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json')], { cwd: root });
    const feeds = join(dir, 'out', 'producers', 'feeds');
    expect(existsSync(join(feeds, 'worker.js'))).toBe(true);

    const { FeedSource, feedWorkerUrl } = (await import(
      pathToFileURL(join(feeds, 'source.js')).href
    )) as typeof SourceModule;
    const { BinanceMapper } = (await import(
      pathToFileURL(join(feeds, 'binance.js')).href
    )) as typeof BinanceModule;
    expect(fileURLToPath(feedWorkerUrl())).toBe(join(feeds, 'worker.js'));

    const standIn = await FeedStandIn.start({
      onConnection: (peer) => {
        for (let t = 1; t <= 3; t++)
          peer.send(
            JSON.stringify({
              stream: 'btcusdt@trade',
              data: { e: 'trade', s: 'BTCUSDT', t, p: '1.5', q: '2', T: 1_796_026_767_000_000 + t, m: false },
            }),
          );
      },
    });
    const mapper = new BinanceMapper({ symbols: ['BTCUSDT'], channels: ['trades'], url: standIn.url });
    // The mapper the worker builds is the compiled one too.
    expect(mapper.spec.module).toBe(pathToFileURL(join(feeds, 'binance.js')).href);
    const source = new FeedSource({
      mapper,
      settings: fastFeedSettings,
      log: silentLogger(),
    });
    try {
      expect(source.threaded).toBe(true);
      const seqs: number[] = [];
      for await (const batch of source.batches()) {
        seqs.push(...batch.map((t) => t.seq));
        if (seqs.length >= 3) break;
      }
      expect(seqs).toEqual([1, 2, 3]);
    } finally {
      await source.close();
      await standIn.close();
    }
  });
});
