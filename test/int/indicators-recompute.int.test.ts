import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, withClient, type PgPool } from '../../shared/pg.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { TIMEFRAME_NS, type TimeframeName } from '../../consumers/bars/aggregate.ts';
import { batchesOf, rebuildBars } from '../../consumers/bars/rebuild.ts';
import { BarStore } from '../../consumers/bars/store.ts';
import { backfillIndicators, recomputeStale } from '../../consumers/indicators/backfill.ts';
import { computeAt, paramsOf } from '../../consumers/indicators/compute.ts';
import { indicatorKey, runIndicatorJob } from '../../consumers/indicators/job.ts';
import { IndicatorStore } from '../../consumers/indicators/store.ts';
import { migrate } from '../../shared/schema/migrate.ts';
import { barStoreSettings, createBarsSink } from '../../consumers/sinks/bars.ts';
import { mulberry32 } from '../../producers/synthetic.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

/**
 * A late trade that amends an old closed bar, a rebuild that replaces bars, and a backfill: afterwards every
 * indicator row of every timeframe equals a from-scratch computation over the stored bars (computeAt with a
 * window longer than the history: an independent implementation of the same definitions).
 */

const log = silentLogger();
const T0 = 1_699_999_200_000_000_000n; // a whole hour
const S = 1_000_000_000n;
const TFS: TimeframeName[] = ['1m', '5m'];
const SYMBOLS = ['RA', 'RB'];

interface Ctx {
  config: Config;
  pool: PgPool;
  redis: RedisClient;
  schema: string;
}

function tradesFor(minutes: number, seed: number): Trade[] {
  const rand = mulberry32(seed);
  const out: Trade[] = [];
  let seq = 0;
  const price: Record<string, number> = { RA: 100, RB: 20 };
  for (let s = 0; s < minutes * 60; s += 7) {
    // A quiet stretch (minutes 30-33 without trades) makes gaps that the series fills.
    if (s >= 1800 && s < 1980) continue;
    for (const symbol of SYMBOLS) {
      price[symbol] = Math.round(price[symbol]! * (1 + (rand() - 0.5) * 0.004) * 100) / 100;
      out.push({
        type: 'trade',
        source: 'S',
        symbol,
        ts: T0 + BigInt(s) * S + BigInt(Math.floor(rand() * 1000)) * 1_000_000n,
        seq: ++seq,
        venue: '',
        price: price[symbol]!,
        size: 1 + Math.floor(rand() * 50),
        side: '',
      });
    }
  }
  return out;
}

async function setup(): Promise<Ctx> {
  const schema = uniqueName('indre');
  const base = testConfig();
  const p = base.streams.prefix;
  const config = testConfig({
    streams: { prefix: p, shards: 2 },
    postgres: { schema, timescale: 'off', partitionsAhead: 0 },
    bars: { timeframes: TFS, allowedLatenessMs: 0, keyPrefix: `${p}:bar:`, channelPrefix: `${p}:bars:` },
    indicators: {
      timeframes: TFS,
      activeWindowMs: 0,
      keyPrefix: `${p}:ind:`,
      channelPrefix: `${p}:indicators:`,
      chunkSymbols: 1,
    },
  });
  const pool = createPgPool(config.postgres, { log, max: 4 });
  await migrate(pool, { schema, timescale: 'off', compressAfter: 'off', retention: 'off', log });
  return { config, pool, redis: testRedis(config), schema };
}

async function teardown(c: Ctx): Promise<void> {
  await c.pool.query(`DROP SCHEMA IF EXISTS "${c.schema}" CASCADE`);
  await closePgPool(c.pool);
  await cleanupPrefix(c.redis, c.config.streams.prefix);
  await closeRedis(c.redis);
}

type Row = Record<string, number | string | null>;

async function rows(c: Ctx, tf: TimeframeName): Promise<Row[]> {
  const { rows: r } = await c.pool.query<Row>(
    `SELECT symbol, start_ns::text AS start, sma, ema, rsi, macd, macd_signal, macd_hist, bb_upper, bb_middle,
            bb_lower, atr, vwap, status, bars, filled, computed_at::text AS computed_at
       FROM "${c.schema}".indicators WHERE tf = $1 ORDER BY symbol, start_ns`,
    [tf],
  );
  return r;
}

/** Every closed bar has exactly one row, and each row equals the from-scratch computation at its bar. */
async function expectFromScratch(c: Ctx): Promise<number> {
  const store = new IndicatorStore(c.schema);
  const params = paramsOf(c.config.indicators);
  let checked = 0;
  for (const tf of TFS) {
    const bars = await withClient(c.pool, (cl) => store.closedBars(cl, tf, SYMBOLS, 100_000));
    const got = await rows(c, tf);
    const expected = [...bars.values()].reduce((n, b) => n + b.length, 0);
    expect(got.length, `${tf} rows`).toBe(expected);
    for (const row of got) {
      const series = bars.get(row.symbol as string)!;
      const want = computeAt(series, BigInt(row.start as string), TIMEFRAME_NS[tf], 100_000, 'carry', params);
      const pairs: [string, number | null][] = [
        ['sma', want.values.sma],
        ['ema', want.values.ema],
        ['rsi', want.values.rsi],
        ['macd', want.values.macd],
        ['macd_signal', want.values.macdSignal],
        ['macd_hist', want.values.macdHist],
        ['bb_upper', want.values.bbUpper],
        ['bb_lower', want.values.bbLower],
        ['atr', want.values.atr],
        ['vwap', want.values.vwap],
      ];
      for (const [col, w] of pairs) {
        const g = row[col] as number | null;
        if (w === null) expect(g, `${tf} ${row.symbol} ${row.start} ${col}`).toBeNull();
        else if (Math.abs(g! - w) > 1e-9 * Math.abs(w))
          throw new Error(`${tf} ${row.symbol} ${row.start} ${col}: stored ${g}, from scratch ${w}`);
      }
      expect([row.status, row.bars, row.filled]).toEqual([want.status, want.bars, want.filled]);
      checked++;
    }
  }
  return checked;
}

async function jobs(c: Ctx): Promise<void> {
  const deps = { pool: c.pool, redis: c.redis, settings: c.config.indicators, schema: c.schema, log };
  for (const tf of TFS) await runIndicatorJob(deps, { tf });
}

describe('indicator rows after late trades, rebuilds and backfills', () => {
  let c: Ctx;
  beforeEach(async () => {
    c = await setup();
  });
  afterEach(async () => teardown(c));

  it('a late trade into an old bar recomputes that row and every later one, in every timeframe', async () => {
    const trades = tradesFor(90, 1);
    const sink = await createBarsSink({ config: c.config, redis: c.redis, log });
    await sink.start();
    for (let i = 0; i < trades.length; i += 500) {
      await sink.write(trades.slice(i, i + 500));
      await sink.flush();
      if (i % 3000 === 0) await jobs(c);
    }
    await jobs(c);
    await expectFromScratch(c);
    const before = await rows(c, '1m');

    // 70 minutes back (inside the 2 h ledger horizon): the last trade of its minute, far above the others, so
    // the bar's high and close (and every EMA, RSI, MACD and ATR after it) change.
    const late: Trade = {
      type: 'trade',
      source: 'S',
      symbol: 'RA',
      ts: T0 + 20n * 60n * S + 59_999n * 1_000_000n,
      seq: 999_999,
      venue: '',
      price: 150,
      size: 10,
      side: '',
    };
    const subscriber = testRedis(c.config);
    const messages: string[] = [];
    await subscriber.subscribe(indicatorKey(c.config.indicators.channelPrefix, 'RA', '1m'));
    subscriber.on('message', (_ch: string, m: string) => messages.push(m));
    await sink.write([late]);
    await sink.flush();
    expect(sink.stats.late).toBe(1);
    await sink.close();
    const stale = await c.pool.query(
      `SELECT symbol, tf, from_ns::text AS f FROM "${c.schema}".indicator_dirty`,
    );
    expect(stale.rows.map((r) => [r.symbol, r.tf]).sort()).toEqual([
      ['RA', '1m'],
      ['RA', '5m'],
    ]);

    await jobs(c);
    const checked = await expectFromScratch(c);
    expect(checked).toBeGreaterThan(150);
    const after = await rows(c, '1m');
    const changed = after.filter((r, i) => r.symbol === 'RA' && r.atr !== before[i]!.atr);
    // Every RA row from the amended bar on (ATR carries the bar's true range forward), none before it.
    const amended = (T0 + 20n * 60n * S).toString();
    expect(changed[0]!.start).toBe(amended);
    expect(changed.length).toBe(
      after.filter((r) => r.symbol === 'RA' && BigInt(r.start as string) >= BigInt(amended)).length,
    );
    expect((await c.pool.query(`SELECT 1 FROM "${c.schema}".indicator_dirty`)).rowCount).toBe(0);
    // The newest rewritten row was published once for the series.
    await waitUntil(() => messages.length >= 1, 'indicator message');
    const msg = JSON.parse(messages.at(-1)!) as Record<string, unknown>;
    const newest = after.filter((r) => r.symbol === 'RA').at(-1)!;
    expect(msg).toMatchObject({
      symbol: 'RA',
      tf: '1m',
      start: newest.start,
      atr: newest.atr,
      rsi: newest.rsi,
    });
    await subscriber.quit();
  });

  it('bars rebuild recomputes the rows of what it replaced (changed and removed bars); backfill twice changes nothing', async () => {
    const trades = tradesFor(75, 2);
    const store = new BarStore(barStoreSettings(c.config));
    await rebuildBars(c.pool, store, batchesOf(trades), { from: T0, to: T0 + 75n * 60n * S });
    const deps = { pool: c.pool, redis: c.redis, settings: c.config.indicators, schema: c.schema, log };
    // A loaded history: backfill computes every closed bar's row.
    const first = await backfillIndicators(deps, { tfs: TFS });
    expect(first.reduce((n, r) => n + r.written, 0)).toBeGreaterThan(150);
    await expectFromScratch(c);
    const snapshot = [...(await rows(c, '1m')), ...(await rows(c, '5m'))];
    // Twice, and with --from: nothing is written (computed_at unchanged).
    const again = await backfillIndicators(deps, { tfs: TFS });
    const fromAgain = await backfillIndicators(deps, { tfs: TFS, from: T0 + 10n * 60n * S });
    expect(again.reduce((n, r) => n + r.written, 0)).toBe(0);
    expect(fromAgain.reduce((n, r) => n + r.computed, 0)).toBeGreaterThan(100);
    expect(fromAgain.reduce((n, r) => n + r.written, 0)).toBe(0);
    expect([...(await rows(c, '1m')), ...(await rows(c, '5m'))]).toEqual(snapshot);

    // Rebuild from a source where RB's trades of minutes 40-44 are gone and RA's prices moved: bars removed and
    // changed. The rebuild marks the series; recomputeStale (what `bars rebuild` runs) brings the rows back.
    const changedSource = trades
      .filter((t) => !(t.symbol === 'RB' && t.ts >= T0 + 40n * 60n * S && t.ts < T0 + 45n * 60n * S))
      .map((t) => (t.symbol === 'RA' && t.ts >= T0 + 50n * 60n * S ? { ...t, price: t.price + 1 } : t));
    await rebuildBars(c.pool, store, batchesOf(changedSource), { from: T0, to: T0 + 75n * 60n * S });
    const marks = await c.pool.query(`SELECT symbol, tf FROM "${c.schema}".indicator_dirty ORDER BY 1, 2`);
    expect(marks.rows.length).toBe(4);
    const re = await recomputeStale(deps, TFS);
    expect(re.reduce((n, r) => n + r.deleted, 0)).toBe(5 + 1); // five 1m bars and one 5m bar of RB are gone
    await expectFromScratch(c);
    expect((await c.pool.query(`SELECT 1 FROM "${c.schema}".indicator_dirty`)).rowCount).toBe(0);
  });
});
