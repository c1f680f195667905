import { encodeFrame, decodeFrame } from '../shared/codec.ts';
import { loadConfig, type Config } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import type { Tick, Trade } from '../shared/model.ts';
import { closePgPool, createPgPool, withClient, type PgPool } from '../shared/pg.ts';
import { closeRedis, createRedis, type RedisClient, deleteByPrefix } from '../shared/redis.ts';
import { SyntheticMarket, symbolNames } from '../producers/synthetic.ts';
import { BarBuilder, timeframes, type Bar, type BarEvent } from '../consumers/bars/aggregate.ts';
import { BarStore } from '../consumers/bars/store.ts';
import { BarsSink, barStoreSettings } from '../consumers/sinks/bars.ts';
import { migrate } from '../shared/schema/migrate.ts';
import { computeAt, INDICATOR_COUNT, paramsOf } from '../consumers/indicators/compute.ts';
import { runIndicatorJob } from '../consumers/indicators/job.ts';
import { IndicatorStore, rowOf } from '../consumers/indicators/store.ts';
import { IndicatorService } from '../consumers/indicators/worker.ts';
import { jobOptions } from '../consumers/indicators/scheduler.ts';
import { sleep } from '../shared/lifecycle.ts';
import { measurement, repeat, type BenchReport, type Measurement } from './lib.ts';

/**
 * Bars and indicators benchmark (issue 5):
 *   1. bars builder (pure, 1s/1m/5m/1h) trades/s vs two baselines: decoding the same trades from stream frames
 *      (the floor every consumer pays), and a naive per-trade read-modify-write of Redis hashes;
 *   2. the bars sink end to end (ledger + merge + close in PostgreSQL, Redis projection) trades/s;
 *   3. one indicator job for 1,000 symbols of 1-minute bars (window 200, 3 newest bars each) from PostgreSQL:
 *      symbols × indicators per second, vs a naive job (one query and one insert per symbol and bar). Target:
 *      a 1-minute schedule for 1,000 symbols finishes in under 2 s (also measured through BullMQ).
 */
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://127.0.0.1:5432/test';
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const BUILDER_TICKS = Number(process.env.BENCH_BARS_TICKS ?? 600_000);
const SINK_TRADES = Number(process.env.BENCH_BARS_SINK_TRADES ?? 40_000);
const NAIVE_TRADES = 2000;
const SYMBOLS = Number(process.env.BENCH_IND_SYMBOLS ?? 1000);
const NAIVE_SYMBOLS = 100;
const TF_1M = 60_000_000_000n;
const log = silentLogger();
const ALL_TFS = timeframes(['1s', '1m', '5m', '1h']);

function configFor(schema: string, prefix: string): Config {
  return loadConfig({
    env: { REDIS_URL, DATABASE_URL },
    overrides: {
      streams: { prefix, shards: 4 },
      postgres: { schema, timescale: 'off', partitionsAhead: 0, poolSize: 4 },
      bars: { keyPrefix: `${prefix}:bar:`, timeframes: ['1s', '1m', '5m', '1h'] },
      indicators: {
        timeframes: ['1m'],
        queueName: `bench-ind-${process.pid}`,
        bullPrefix: `${prefix}:bull`,
        keyPrefix: `${prefix}:ind:`,
        activeWindowMs: 0,
      },
      log: { level: 'silent' },
    },
  });
}

function tradesOf(n: number, symbols: number, seed: number): Trade[] {
  // 100,000 ticks per second of market time (10 µs apart): 1s bars close along the way, as in a busy feed.
  let ts = 1_700_000_000_000_000_000n;
  const market = new SyntheticMarket({
    symbols: symbolNames(symbols),
    seed,
    source: 'bench',
    clock: () => (ts += 10_000n),
  });
  const out: Trade[] = [];
  for (let i = 0; i < n; i += 10_000) {
    for (const t of market.next(Math.min(10_000, n - i))) if (t.type === 'trade') out.push(t);
  }
  return out;
}

function builderRun(trades: readonly Trade[]): number {
  const started = performance.now();
  const b = new BarBuilder({ timeframes: ALL_TFS, allowedLatenessNs: 2_000_000_000n });
  const events: BarEvent[] = [];
  for (const t of trades) {
    b.add(t, events);
    if (events.length > 10_000) events.length = 0;
  }
  b.drain(events);
  return trades.length / ((performance.now() - started) / 1000);
}

function decodeRun(frames: string[][], count: number): number {
  const started = performance.now();
  let n = 0;
  for (const f of frames) n += decodeFrame(f).ticks.length;
  if (n !== count) throw new Error('decode count mismatch');
  return count / ((performance.now() - started) / 1000);
}

/** The naive way: per trade and timeframe, HGETALL the bar, update it in JS, HSET it back (awaited). */
async function naiveRun(redis: RedisClient, prefix: string, trades: readonly Trade[]): Promise<number> {
  const started = performance.now();
  for (const t of trades) {
    for (const tf of ALL_TFS) {
      const key = `${prefix}:naive:${t.symbol}:${tf.name}:${t.ts - (t.ts % tf.ns)}`;
      const h = await redis.hgetall(key);
      const seen = Object.keys(h).length > 0;
      await redis.hset(key, {
        open: seen ? h.open! : String(t.price),
        high: String(seen ? Math.max(Number(h.high), t.price) : t.price),
        low: String(seen ? Math.min(Number(h.low), t.price) : t.price),
        close: String(t.price),
        volume: String((seen ? Number(h.volume) : 0) + t.size),
        trades: String((seen ? Number(h.trades) : 0) + 1),
      });
    }
  }
  return trades.length / ((performance.now() - started) / 1000);
}

async function sinkRun(
  config: Config,
  pool: PgPool,
  redis: RedisClient,
  trades: readonly Trade[],
): Promise<number> {
  await withClient(pool, (c) =>
    c.query(
      `TRUNCATE "${config.postgres.schema}".bars, "${config.postgres.schema}".bar_ledger_runs, "${config.postgres.schema}".bar_clocks, "${config.postgres.schema}".bar_symbols`,
    ),
  );
  const sink = new BarsSink({
    pool,
    ownsPool: false,
    redis,
    store: new BarStore(barStoreSettings(config)),
    keyPrefix: config.bars.keyPrefix,
    pruneIntervalMs: 0,
    log,
  });
  await sink.start();
  const started = performance.now();
  for (let i = 0; i < trades.length; i += 5000) {
    await sink.write(trades.slice(i, i + 5000));
    await sink.flush();
  }
  const rate = trades.length / ((performance.now() - started) / 1000);
  await sink.close();
  return rate;
}

/** 1,000 symbols × (window + 2) closed 1-minute bars, written straight through the bar store. */
async function seedMinuteBars(config: Config, pool: PgPool, symbols: string[], bars: number): Promise<void> {
  const store = new BarStore(barStoreSettings(config));
  const end = 1_700_000_040_000_000_000n - (1_700_000_040_000_000_000n % TF_1M);
  let seq = 0;
  const batch: Bar[] = [];
  const flush = async () => {
    await withClient(pool, (c) => store.mergeBars(c, batch));
    batch.length = 0;
  };
  const tf = ALL_TFS[1]!;
  for (const [k, symbol] of symbols.entries()) {
    let price = 20 + (k % 200);
    for (let i = bars - 1; i >= 0; i--) {
      const start = end - BigInt(i) * TF_1M;
      const drift = Math.sin((k + i) * 0.37) * 0.4;
      price = Math.round(Math.max(1, price + drift) * 100) / 100;
      const key = { ts: start, seq: ++seq, source: 'bench' };
      const volume = BigInt(100 + ((k * 7 + i * 13) % 900)) * 1_000_000_000n;
      batch.push({
        symbol,
        tf,
        start,
        open: price,
        high: Math.round((price + 0.3) * 100) / 100,
        low: Math.round((price - 0.3) * 100) / 100,
        close: price,
        openKey: key,
        closeKey: { ...key, ts: start + 1n },
        volume,
        notional: volume * BigInt(Math.round(price * 100)) * 10_000_000n,
        trades: 10,
        late: 0,
      });
      if (batch.length >= 5000) await flush();
    }
  }
  await flush();
  const s = `"${config.postgres.schema}"`;
  await pool.query(`UPDATE ${s}.bars SET closed = true`);
  await pool.query(
    `INSERT INTO ${s}.bar_symbols (symbol, wkey, max_ts) SELECT symbol, symbol, max(start_ns) FROM ${s}.bars GROUP BY symbol
     ON CONFLICT DO NOTHING`,
  );
  await pool.query(`ANALYZE ${s}.bars`);
}

/** Remove each symbol's newest indicator row: the next job computes one new bar per symbol from stored state. */
async function dropNewestRows(pool: PgPool, schema: string): Promise<void> {
  await pool.query(
    `DELETE FROM "${schema}".indicators i USING (SELECT symbol, max(start_ns) AS s FROM "${schema}".indicators GROUP BY symbol) n
      WHERE i.symbol = n.symbol AND i.start_ns = n.s`,
  );
}

/** Naive job: per symbol one query for its bars, then one INSERT per computed bar. */
async function naiveJob(config: Config, pool: PgPool, symbols: string[]): Promise<number> {
  const s = config.indicators;
  const params = paramsOf(s);
  const store = new IndicatorStore(config.postgres.schema);
  const started = performance.now();
  await withClient(pool, async (c) => {
    for (const symbol of symbols) {
      const bars = (await store.closedBars(c, '1m', [symbol], s.window + s.recentBars - 1)).get(symbol) ?? [];
      for (let j = Math.max(0, bars.length - s.recentBars); j < bars.length; j++) {
        const r = computeAt(bars, bars[j]!.start, TF_1M, s.window, s.gaps, params);
        await store.upsert(c, '1m', [rowOf(symbol, '1m', r, 'naive')]);
      }
    }
  });
  return (performance.now() - started) / 1000;
}

export default async function run(): Promise<BenchReport> {
  const pid = process.pid;
  const schema = `bench_ind_${pid}`;
  const prefix = `bench:ind:${pid}`;
  const config = configFor(schema, prefix);
  const redis = createRedis(config, { log });
  const pool = createPgPool(config.postgres, { log, max: 4 });
  const measurements: Measurement[] = [];
  const notes: string[] = [];
  const summary: BenchReport['summary'] = {};
  try {
    await migrate(pool, { schema, timescale: 'off', compressAfter: 'off', retention: 'off', log });

    // 1. Builder vs decode vs naive.
    const trades = tradesOf(BUILDER_TICKS, 1000, 1);
    const frames: string[][] = [];
    for (let i = 0; i < trades.length; i += 256) frames.push(encodeFrame(trades.slice(i, i + 256) as Tick[]));
    builderRun(trades.slice(0, 20_000)); // warm-up
    const builder = measurement(
      'bars builder (pure, 4 timeframes)',
      'trades/s',
      await repeat(RUNS, async () => builderRun(trades)),
    );
    const decode = measurement(
      'baseline: decode the same trades from frames',
      'trades/s',
      await repeat(RUNS, async () => decodeRun(frames, trades.length)),
    );
    const naive = measurement(
      'baseline: naive per-trade Redis read-modify-write',
      'trades/s',
      await repeat(RUNS, async () => naiveRun(redis, prefix, trades.slice(0, NAIVE_TRADES))),
    );
    await deleteByPrefix(redis, `${prefix}:naive`);
    measurements.push(builder, decode, naive);
    summary['builder vs decode'] = `${(builder.value / decode.value).toFixed(2)}x`;
    summary['builder vs naive read-modify-write'] = `${Math.round(builder.value / naive.value)}x`;

    // 2. Bars sink end to end.
    const sinkTrades = tradesOf(SINK_TRADES * 3.4, 1000, 2).slice(0, SINK_TRADES);
    const sink = measurement(
      'bars sink: ledger + merge + close (PostgreSQL) + Redis',
      'trades/s',
      await repeat(RUNS, () => sinkRun(config, pool, redis, sinkTrades)),
    );
    measurements.push(sink);
    summary['sink vs naive read-modify-write'] = `${(sink.value / naive.value).toFixed(1)}x`;

    // 3. Indicator job, 1,000 symbols.
    await withClient(pool, (c) =>
      c.query(`TRUNCATE "${schema}".bars, "${schema}".bar_symbols, "${schema}".indicators`),
    );
    const symbols = symbolNames(SYMBOLS);
    const window = config.indicators.window;
    await seedMinuteBars(config, pool, symbols, window + config.indicators.recentBars + 2);
    const deps = { pool, redis, settings: config.indicators, schema, log };
    await runIndicatorJob(deps, { tf: '1m' }); // first run writes the rows; then they are steady
    const jobSeconds = await repeat(RUNS, async () => {
      await dropNewestRows(pool, schema);
      const started = performance.now();
      const r = await runIndicatorJob(deps, { tf: '1m' });
      if (r.symbols !== SYMBOLS) throw new Error(`job saw ${r.symbols} symbols`);
      return (performance.now() - started) / 1000;
    });
    const steadySeconds = await repeat(RUNS, async () => {
      const started = performance.now();
      await runIndicatorJob(deps, { tf: '1m' });
      return (performance.now() - started) / 1000;
    });
    const jobRate = jobSeconds.map((s) => (SYMBOLS * INDICATOR_COUNT) / s);
    measurements.push(
      measurement(`indicator job, ${SYMBOLS} symbols × 1 new bar (rows written)`, 's', jobSeconds),
      measurement(`indicator job, ${SYMBOLS} symbols (unchanged rows)`, 's', steadySeconds),
      measurement('indicator job throughput', 'symbols×indicators/s', jobRate),
    );
    const naiveSeconds = await repeat(RUNS, () => naiveJob(config, pool, symbols.slice(0, NAIVE_SYMBOLS)));
    const naiveRate = naiveSeconds.map((s) => (NAIVE_SYMBOLS * INDICATOR_COUNT) / s);
    const naiveM = measurement(
      `baseline: naive job (round trips per symbol and bar, ${NAIVE_SYMBOLS} symbols)`,
      'symbols×indicators/s',
      naiveRate,
    );
    measurements.push(naiveM);
    summary['job vs naive'] = `${(measurements.at(-2)!.value / naiveM.value).toFixed(1)}x`;

    // Through BullMQ: the scheduled job's own run time (processedOn → finishedOn).
    const service = new IndicatorService({ config, log, pool, schedule: false });
    await service.start();
    const viaQueue: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      await dropNewestRows(pool, schema);
      const job = await service.queue.add('indicators-1m', { tf: '1m' }, jobOptions(config.indicators));
      for (let waited = 0; (await service.queue.getJobState(job.id!)) !== 'completed'; waited += 20) {
        if (waited > 60_000) throw new Error('indicator job did not complete within 60 s');
        await sleep(20);
      }
      const done = await service.queue.getJob(job.id!);
      viaQueue.push(((done!.finishedOn ?? 0) - (done!.processedOn ?? 0)) / 1000);
    }
    await service.queue.obliterate({ force: true });
    await service.close();
    const q = measurement(`indicator job through BullMQ, ${SYMBOLS} symbols`, 's', viaQueue);
    measurements.push(q);
    summary['target: 1-minute schedule, 1,000 symbols < 2 s'] =
      q.value < 2 ? `met (${q.value.toFixed(2)} s)` : `NOT met (${q.value.toFixed(2)} s)`;
    notes.push(
      `indicator job: one new closed bar per symbol, continued from the state stored with the previous row (the naive baseline recomputes a ${window}-bucket window for ${config.indicators.recentBars} bars); ${INDICATOR_COUNT} indicators (SMA, EMA, RSI, MACD, Bollinger, ATR, VWAP); chunks of ${config.indicators.chunkSymbols} symbols`,
      `builder input: ${trades.length} trades of ${BUILDER_TICKS} synthetic ticks, 1,000 symbols; sink: batches of 5,000 trades`,
    );
  } finally {
    await deleteByPrefix(redis, prefix);
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await closePgPool(pool);
    await closeRedis(redis);
  }
  return { name: 'indicators', measurements, summary, notes };
}
