import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { createBarsSink } from '../../consumers/sinks/bars.ts';
import { QuotesSink } from '../../consumers/sinks/quotes.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { BUNDLE, buildWeb } from '../../server/build-web.ts';
import { startServer } from '../../server/server.ts';
import { silentLogger } from '../../shared/logger.ts';
import { closePgPool, createPgPool } from '../../shared/pg.ts';
import { closeRedis } from '../../shared/redis.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

/**
 * The dashboard in a real browser: Debian's chromium driven by playwright-core, against `tickstream serve` on
 * a free port while a producer and the quotes and bars consumer groups run. The screenshot goes to
 * test-results/dashboard/ (gitignored).
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const OUT = join(import.meta.dirname, '..', '..', 'test-results', 'dashboard');

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch {
      // keep cleaning up
    }
  }
});

describe.skipIf(!existsSync(CHROMIUM))(`dashboard in headless chromium (${CHROMIUM})`, () => {
  it('loads without console errors, quotes change live, the chart shows bars, the lag table shows the groups', async () => {
    if (!existsSync(BUNDLE)) await buildWeb();
    const schema = uniqueName('dash');
    const config = testConfig({
      postgres: { schema },
      bars: { keyPrefix: `${schema}:bar:`, channelPrefix: `${schema}:bars:`, timeframes: ['1s', '1m'] },
      indicators: { keyPrefix: `${schema}:ind:`, channelPrefix: `${schema}:indicators:` },
      api: { port: 0, warmSymbols: 0 },
    });
    const log = silentLogger();
    const redis = testRedis(config);
    const pool = createPgPool(config.postgres, { log, max: 1 });
    cleanups.push(async () => {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await closePgPool(pool);
      await cleanupPrefix(redis, schema);
      await cleanupPrefix(redis, config.streams.prefix);
      await closeRedis(redis);
    });

    // The pipeline: quotes and bars consumer groups, and a producer at ~500 ticks/s.
    for (const [group, sink] of [
      ['quotes', new QuotesSink({ redis, settings: config.quotes, log })],
      ['bars', await createBarsSink({ config, redis, log })],
    ] as const) {
      const blocking = testRedis(config, true);
      const worker = new GroupWorker({
        redis,
        blocking,
        layout: config.streams,
        group,
        consumer: `${group}-e2e`,
        sink,
        settings: config.consumer,
        log,
      });
      await worker.start();
      cleanups.push(async () => {
        await worker.close();
        await closeRedis(blocking);
      });
    }
    const symbols = ['AAA', 'BBB', 'CCC'];
    const market = new SyntheticMarket({ symbols, seed: 3, source: uniqueName('src') });
    const publisher = new Publisher({ redis, layout: config.streams, settings: config.producer, log });
    let producing = true;
    const producer = (async () => {
      while (producing) {
        await publisher.publish(market.next(50));
        await publisher.flush();
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    cleanups.push(async () => {
      producing = false;
      await producer;
    });

    const server = await startServer(config, log);
    cleanups.push(() => server.close());
    // Some closed 1s bars exist before the page loads.
    await waitUntil(
      async () =>
        (
          await pool.query(
            `SELECT count(*)::int AS n FROM "${schema}".bars WHERE symbol = 'AAA' AND tf = '1s'`,
          )
        ).rows[0]?.n >= 3,
      '1s bars in PostgreSQL',
      { timeoutMs: 30_000 },
    );

    const browser: Browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
    cleanups.push(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));

    await page.goto(`${server.url}/?symbols=${symbols.join(',')}&tf=1s`);
    await page.waitForSelector('#conn.ok', { timeout: 20_000 });

    // The quote board fills, then changes as ticks arrive.
    const bidCell = page.locator('#board tr[data-symbol="AAA"] td:nth-child(2)');
    await waitUntil(async () => /^\d/.test(await bidCell.innerText()), 'a first AAA quote on the board');
    const firstAll = await page.locator('#board tbody').innerText();
    await waitUntil(
      async () => (await page.locator('#board tbody').innerText()) !== firstAll,
      'the quote board to change',
    );

    // The chart has bars (from the API, then pushed) and drew them on canvas.
    const bars = await waitUntil(
      () =>
        page.evaluate(
          () =>
            (globalThis as unknown as { tickstream: { chart: { barCount: number } } }).tickstream.chart
              .barCount,
        ),
      'bars in the chart',
    );
    expect(bars).toBeGreaterThanOrEqual(3);
    expect(await page.locator('#chart canvas').count()).toBeGreaterThan(0);

    // The lag table lists both consumer groups.
    await waitUntil(
      async () =>
        (await page.locator('#groups tr[data-group="quotes"]').count()) > 0 &&
        (await page.locator('#groups tr[data-group="bars"]').count()) > 0,
      'both groups in the lag table',
    );
    // A second status poll gives throughput figures.
    await waitUntil(
      async () =>
        /^\d+$/.test(
          await page.locator('#groups tr[data-group="quotes"] td:nth-child(3)').first().innerText(),
        ),
      'a throughput figure for the quotes group',
    );

    mkdirSync(OUT, { recursive: true });
    await page.screenshot({ path: join(OUT, 'dashboard.png'), fullPage: true });
    expect(errors).toEqual([]);
  });
});
