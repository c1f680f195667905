import { loadavg } from 'node:os';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { loadConfig, type Config } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import type { Trade } from '../shared/model.ts';
import { closePgPool, createPgPool, inTransaction, withClient, type PgPool } from '../shared/pg.ts';
import { closeRedis, createRedis, deleteByPrefix, type RedisClient } from '../shared/redis.ts';
import { SyntheticMarket, symbolNames } from '../producers/synthetic.ts';
import { BarStore } from '../consumers/bars/store.ts';
import { BarsSink, barStoreSettings } from '../consumers/sinks/bars.ts';
import { migrate } from '../shared/schema/migrate.ts';
import { computeAt, paramsOf, SeriesComputer, type WindowBar } from '../consumers/indicators/compute.ts';
import { measurement, repeat, type BenchReport, type Measurement } from './lib.ts';

/**
 * Bars write path (issue 12, docs/adr/0009 and 0015): the bars sink end to end (ledger + merge + close in
 * PostgreSQL, Redis projection and pub/sub) at 1,000 symbols and 4 timeframes, for three flush sizes: 5,000
 * trades (the earlier benchmark's), 16,384 (a read of 64 entries × 256 ticks) and 65,536 (a read of `consume
 * bars` under a backlog, TICKSTREAM_BARS_BATCH_SIZE bounded by the read's bytes). In the same run:
 * - redelivery: every flush written twice, the second time wholly known to the ledger (what a replay, a
 *   re-loaded file or a claimed batch costs);
 * - baseline: the per-trade ledger of the earlier design alone (a row per trade COPYed into a table keyed on
 *   (symbol, ts, seq, source), one transaction per flush), the step that design paid before any bar was touched.
 * Then the indicator math per new bar: continuing a series from stored state vs recomputing the 200-bar window
 * (the earlier job's way).
 */
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://127.0.0.1:5432/test';
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const TRADES = Number(process.env.BENCH_BARS_TRADES ?? 200_000);
/**
 * 65,536 is what one read of `consume bars` holds under a backlog with the defaults: the read's byte bound
 * (TICKSTREAM_BATCH_BYTES, 16 MiB over 4 shards) is about 210 frames of 256 ticks per shard, 30% of them trades.
 */
const FLUSHES = [5000, 16_384, 65_536];
const log = silentLogger();

function configFor(schema: string, prefix: string): Config {
  return loadConfig({
    env: { REDIS_URL, DATABASE_URL },
    overrides: {
      streams: { prefix, shards: 4 },
      postgres: { schema, timescale: 'off', partitionsAhead: 0, poolSize: 4 },
      bars: {
        keyPrefix: `${prefix}:bar:`,
        channelPrefix: `${prefix}:bars:`,
        timeframes: ['1s', '1m', '5m', '1h'],
      },
      log: { level: 'silent' },
    },
  });
}

function tradesOf(n: number): Trade[] {
  // 100,000 trades per second of market time: 1s bars close along the way, as in a busy feed.
  let ts = 1_700_000_000_000_000_000n;
  const market = new SyntheticMarket({
    symbols: symbolNames(1000),
    seed: 2,
    source: 'bench',
    clock: () => (ts += 10_000n),
  });
  const out: Trade[] = [];
  while (out.length < n)
    for (const t of market.next(10_000)) if (t.type === 'trade' && out.length < n) out.push(t);
  return out;
}

async function sinkRun(
  config: Config,
  pool: PgPool,
  redis: RedisClient,
  trades: readonly Trade[],
  flush: number,
  redeliver: boolean,
): Promise<number> {
  const s = `"${config.postgres.schema}"`;
  await pool.query(
    `TRUNCATE ${s}.bars, ${s}.bar_ledger_runs, ${s}.bar_clocks, ${s}.bar_symbols, ${s}.indicator_dirty`,
  );
  const store = new BarStore(barStoreSettings(config));
  const sink = new BarsSink({
    pool,
    ownsPool: false,
    redis,
    store,
    keyPrefix: config.bars.keyPrefix,
    channelPrefix: config.bars.channelPrefix,
    pruneIntervalMs: 0,
    log,
  });
  await sink.start();
  const started = performance.now();
  for (let i = 0; i < trades.length; i += flush) {
    const batch = trades.slice(i, i + flush);
    await sink.write(batch);
    await sink.flush();
    if (!redeliver) continue;
    await sink.write(batch);
    await sink.flush();
  }
  const rate = ((redeliver ? 2 : 1) * trades.length) / ((performance.now() - started) / 1000);
  await sink.close();
  if (sink.stats.applied !== trades.length)
    throw new Error(`applied ${sink.stats.applied} of ${trades.length}`);
  if (sink.stats.duplicates !== (redeliver ? trades.length : 0))
    throw new Error(`${sink.stats.duplicates} duplicates`);
  return rate;
}

/** The earlier design's ledger step alone: a row per trade COPYed into a four-column primary key. */
async function perTradeLedgerRun(pool: PgPool, schema: string, trades: readonly Trade[], flush: number) {
  const table = `"${schema}".per_trade_ledger`;
  await pool.query(
    `CREATE TABLE IF NOT EXISTS ${table} (symbol text COLLATE "C" NOT NULL, ts bigint NOT NULL,
       seq bigint NOT NULL, source text COLLATE "C" NOT NULL, PRIMARY KEY (symbol, ts, seq, source))`,
  );
  await pool.query(`TRUNCATE ${table}`);
  const started = performance.now();
  for (let i = 0; i < trades.length; i += flush) {
    let text = '';
    for (const t of trades.slice(i, i + flush)) text += `${t.symbol}\t${t.ts}\t${t.seq}\t${t.source}\n`;
    await withClient(pool, (client) =>
      inTransaction(client, async () => {
        const copy = client.query(copyFrom(`COPY ${table} (symbol, ts, seq, source) FROM STDIN`));
        await pipeline(Readable.from([text]), copy);
      }),
    );
  }
  return trades.length / ((performance.now() - started) / 1000);
}

function minuteBars(n: number): WindowBar[] {
  const out: WindowBar[] = [];
  let price = 100;
  for (let i = 0; i < n; i++) {
    price = Math.max(1, price + Math.sin(i * 0.37) * 0.4);
    out.push({
      start: BigInt(i) * 60_000_000_000n,
      high: price + 0.3,
      low: price - 0.3,
      close: price,
      volume: 1_000_000_000_000n,
      notional: BigInt(Math.round(price * 1e6)) * 1_000_000_000_000_000n,
    });
  }
  return out;
}

export default async function run(): Promise<BenchReport> {
  const pid = process.pid;
  const schema = `bench_bars_${pid}`;
  const prefix = `bench:bars:${pid}`;
  const config = configFor(schema, prefix);
  const redis = createRedis(config, { log });
  const pool = createPgPool(config.postgres, { log, max: 4 });
  const measurements: Measurement[] = [];
  const summary: BenchReport['summary'] = {};
  try {
    await migrate(pool, { schema, timescale: 'off', compressAfter: 'off', retention: 'off', log });
    const trades = tradesOf(TRADES);
    await sinkRun(config, pool, redis, trades.slice(0, 20_000), 5000, false); // warm-up
    for (const flush of FLUSHES) {
      const direct = measurement(
        `bars sink, ${flush.toLocaleString('en-US')} trades per flush`,
        'trades/s',
        await repeat(RUNS, () => sinkRun(config, pool, redis, trades, flush, false)),
      );
      const again = measurement(
        `redelivery: every flush written twice (the second wholly known)`,
        'trades/s',
        await repeat(RUNS, () => sinkRun(config, pool, redis, trades, flush, true)),
      );
      const perTrade = measurement(
        `baseline: the per-trade ledger alone (earlier design), ${flush.toLocaleString('en-US')} per transaction`,
        'trades/s',
        await repeat(RUNS, () => perTradeLedgerRun(pool, schema, trades, flush)),
      );
      measurements.push(direct, again, perTrade);
      summary[`flush ${flush}: whole sink vs the earlier ledger step alone`] =
        `${(direct.value / perTrade.value).toFixed(2)}x`;
    }
    const best = Math.max(...measurements.filter((m) => m.label.startsWith('bars sink')).map((m) => m.value));
    summary['target ≥ 100k trades/s (1,000 symbols)'] =
      best >= 100_000 ? `met (${Math.round(best)})` : `NOT met on this machine (best ${Math.round(best)})`;

    // Indicator math per new bar: state carried vs the 200-bar window.
    const params = paramsOf(config.indicators);
    const bars = minuteBars(2400);
    const carried = await repeat(RUNS, async () => {
      const started = performance.now();
      const s = new SeriesComputer(params, 60_000_000_000n, 'carry');
      for (const b of bars) s.next(b);
      return bars.length / ((performance.now() - started) / 1000);
    });
    const windowed = await repeat(RUNS, async () => {
      const started = performance.now();
      for (let i = 200; i < 600; i++) computeAt(bars, bars[i]!.start, 60_000_000_000n, 200, 'carry', params);
      return 400 / ((performance.now() - started) / 1000);
    });
    const c = measurement('indicator math per new bar, state carried', 'bars/s', carried);
    const w = measurement(
      'baseline: indicator math per new bar, 200-bar window recomputed',
      'bars/s',
      windowed,
    );
    measurements.push(c, w);
    summary['carried state vs window recompute'] = `${(c.value / w.value).toFixed(1)}x`;
  } finally {
    await deleteByPrefix(redis, prefix);
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await closePgPool(pool);
    await closeRedis(redis);
  }
  return {
    name: 'bars',
    measurements,
    summary,
    notes: [
      `${TRADES.toLocaleString('en-US')} synthetic trades of 1,000 symbols, 4 timeframes (1s, 1m, 5m, 1h); medians of ${RUNS} runs`,
      `2-core machine, PostgreSQL and Redis on the same cores; load average at the end ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' / ')}`,
    ],
  };
}
