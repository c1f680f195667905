import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, type PgPool } from '../../shared/pg.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { migrate } from '../../shared/schema/migrate.ts';
import { createBarsSink } from '../../consumers/sinks/bars.ts';
import { runIndicatorJob } from '../../consumers/indicators/job.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName } from '../helpers/index.ts';

/**
 * Indicators equal full-history TA-Lib. test/fixtures/talib/ holds three long 1-minute series with the outputs
 * of the TA-Lib C library over each whole series (copied from the shared reference set; README there). Each
 * series goes through the real path: trades into the bars sink (PostgreSQL), indicator jobs run every few
 * hundred bars so each job continues the series from the state stored with the previous row. Every value
 * TA-Lib gives must agree within 1e-9 relative, and the first value of each output must appear at TA-Lib's
 * begIndex (null before it).
 */

interface RefBar {
  time: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
}
interface Reference {
  bars: RefBar[];
  talib: Record<string, Record<string, { begIndex: number; values: number[] }>>;
}

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'talib');
const log = silentLogger();

/** TA-Lib output → our column. */
const OUTPUTS: [string, string, string][] = [
  ['SMA(20)', 'outReal', 'sma'],
  ['EMA(20)', 'outReal', 'ema'],
  ['RSI(14)', 'outReal', 'rsi'],
  ['MACD(12,26,9)', 'outMACD', 'macd'],
  ['MACD(12,26,9)', 'outMACDSignal', 'macd_signal'],
  ['MACD(12,26,9)', 'outMACDHist', 'macd_hist'],
  ['BBANDS(20,2,2,SMA)', 'outRealUpperBand', 'bb_upper'],
  ['BBANDS(20,2,2,SMA)', 'outRealMiddleBand', 'bb_middle'],
  ['BBANDS(20,2,2,SMA)', 'outRealLowerBand', 'bb_lower'],
  ['ATR(14)', 'outReal', 'atr'],
];

/** Four trades per bar: open, high, low, close in time order, the volume split over them. */
function tradesOf(symbol: string, bars: readonly RefBar[]): Trade[] {
  const out: Trade[] = [];
  let seq = 0;
  for (const b of bars) {
    const t0 = BigInt(b.time) * 1_000_000_000n;
    const part = Math.floor(b.volume / 4);
    const sizes = [part, part, part, b.volume - 3 * part];
    [b.open, b.high, b.low, b.close].forEach((price, i) => {
      out.push({
        type: 'trade',
        source: 'ref',
        symbol,
        ts: t0 + BigInt([0, 10, 20, 59][i]!) * 1_000_000_000n,
        seq: ++seq,
        venue: '',
        price,
        size: sizes[i]!,
        side: '',
      });
    });
  }
  return out;
}

function relErr(a: number, b: number): number {
  if (a === b) return 0;
  return Math.abs(a - b) / Math.max(Math.abs(b), Number.MIN_VALUE);
}

describe('indicators equal TA-Lib over the whole history (bars sink → indicator jobs)', () => {
  let config: Config;
  let pool: PgPool;
  let redis: RedisClient;
  const schema = uniqueName('talib');
  beforeAll(async () => {
    config = testConfig({
      postgres: { schema, timescale: 'off', partitionsAhead: 0 },
      bars: { timeframes: ['1m'], allowedLatenessMs: 0 },
      indicators: { timeframes: ['1m'], activeWindowMs: 0, chunkSymbols: 2 },
    });
    config = testConfig({
      ...config,
      bars: { ...config.bars, keyPrefix: `${config.streams.prefix}:bar:` },
      indicators: { ...config.indicators, keyPrefix: `${config.streams.prefix}:ind:` },
    });
    pool = createPgPool(config.postgres, { log, max: 4 });
    redis = testRedis(config);
    await migrate(pool, { schema, timescale: 'off', compressAfter: 'off', retention: 'off', log });
  });
  afterAll(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await closePgPool(pool);
    await cleanupPrefix(redis, config.streams.prefix);
    await closeRedis(redis);
  });

  it.each(['gbm-0.5-6dp.json', 'gbm-150-2dp.json', 'gbm-60000-2dp.json'])(
    '%s: every TA-Lib value within 1e-9 relative, first values at begIndex, VWAP exact',
    async (file) => {
      const ref = JSON.parse(readFileSync(join(FIXTURES, file), 'utf8')) as Reference;
      const symbol = file
        .replace(/\.json$/, '')
        .replace(/[^A-Za-z0-9]/g, '_')
        .toUpperCase();
      const trades = tradesOf(symbol, ref.bars);
      // One more trade a minute after the last bar, so that the last bar closes.
      const last = trades.at(-1)!;
      trades.push({ ...last, ts: last.ts + 60_000_000_000n, seq: last.seq + 1 });
      const sink = await createBarsSink({ config, redis, log });
      await sink.start();
      const deps = { pool, redis, settings: config.indicators, schema, log };
      let jobs = 0;
      // Segments of 317 bars (a prime: jobs fall at arbitrary points of the warm-up and of the series).
      for (let i = 0; i < trades.length; i += 4 * 317) {
        for (let j = i; j < Math.min(trades.length, i + 4 * 317); j += 400) {
          await sink.write(trades.slice(j, Math.min(j + 400, i + 4 * 317, trades.length)));
          await sink.flush();
        }
        await runIndicatorJob(deps, { tf: '1m' });
        jobs++;
      }
      await sink.close();
      expect(jobs).toBeGreaterThan(3);

      const { rows } = await pool.query<Record<string, number | null | string>>(
        `SELECT start_ns::text AS start, sma, ema, rsi, macd, macd_signal, macd_hist, bb_upper, bb_middle,
                bb_lower, atr, vwap, status FROM "${schema}".indicators WHERE symbol = $1 AND tf = '1m'
          ORDER BY start_ns`,
        [symbol],
      );
      expect(rows.length).toBe(ref.bars.length);
      rows.forEach((r, i) => expect(r.start).toBe(String(BigInt(ref.bars[i]!.time) * 1_000_000_000n)));

      let compared = 0;
      let worst = 0;
      for (const [fn, output, column] of OUTPUTS) {
        const { begIndex, values } = ref.talib[fn]![output]!;
        if (begIndex > 0) expect(rows[begIndex - 1]![column], `${column} before begIndex`).toBeNull();
        expect(rows[begIndex]![column], `${column} at begIndex ${begIndex}`).not.toBeNull();
        values.forEach((want, k) => {
          const got = rows[begIndex + k]![column] as number;
          const err = relErr(got, want);
          if (err > 1e-9)
            throw new Error(`${file} ${column} at bar ${begIndex + k}: ${got} vs TA-Lib ${want}`);
          worst = Math.max(worst, err);
          compared++;
        });
      }
      expect(compared).toBe(OUTPUTS.reduce((n, [fn, o]) => n + ref.talib[fn]![o]!.values.length, 0));
      expect(worst).toBeLessThanOrEqual(1e-9);

      // VWAP(20) = Σ price·size / Σ size over the last 20 bars, from the trades (exact rational, compared in
      // doubles at 1e-12).
      const perBar = ref.bars.map((_, i) => trades.slice(4 * i, 4 * i + 4));
      for (let i = 0; i < ref.bars.length; i++) {
        const got = rows[i]!.vwap;
        if (i < 19) {
          expect(got).toBeNull();
          continue;
        }
        let num = 0;
        let den = 0;
        for (const t of perBar.slice(i - 19, i + 1).flat()) {
          num += t.price * t.size;
          den += t.size;
        }
        expect(relErr(got as number, num / den)).toBeLessThan(1e-12);
      }
      expect(rows.slice(33).every((r) => r.status === 'ok')).toBe(true);
    },
    120_000,
  );
});
