import { Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Config, ConfigInput } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, withClient, type PgPool } from '../../shared/pg.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { batchesOf, rebuildBars } from '../../consumers/bars/rebuild.ts';
import { BarStore } from '../../consumers/bars/store.ts';
import { barStoreSettings } from '../../consumers/sinks/bars.ts';
import { migrate } from '../../shared/schema/migrate.ts';
import { computeAt, paramsOf } from '../../consumers/indicators/compute.ts';
import { indicatorKey } from '../../consumers/indicators/job.ts';
import { jobOptions, schedulerId } from '../../consumers/indicators/scheduler.ts';
import { IndicatorStore } from '../../consumers/indicators/store.ts';
import { IndicatorService, indicatorQueueStatus } from '../../consumers/indicators/worker.ts';
import { mulberry32 } from '../../producers/synthetic.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

const log = silentLogger();
const T0 = 1_699_999_980_000_000_000n;
const MS = 1_000_000n;
const SYMBOLS = ['IA', 'IB', 'IC', 'ID'];

interface Ctx {
  config: Config;
  redis: RedisClient;
  pool: PgPool;
  schema: string;
  prefix: string;
}

async function setup(indicators: ConfigInput['indicators'] = {}): Promise<Ctx> {
  const schema = uniqueName('ind');
  const prefix = uniqueName('tsind');
  const config = testConfig({
    postgres: { schema, timescale: 'off', partitionsAhead: 0 },
    bars: { timeframes: ['1s', '1m'], allowedLatenessMs: 0, keyPrefix: `${prefix}:bar:` },
    indicators: {
      timeframes: ['1s', '1m'],
      queueName: uniqueName('q'),
      bullPrefix: `${prefix}:bull`,
      keyPrefix: `${prefix}:ind:`,
      window: 40,
      recentBars: 3,
      activeWindowMs: 0,
      chunkSymbols: 3,
      backoffMs: 20,
      lockDurationMs: 1000,
      stalledIntervalMs: 500,
      ...indicators,
    },
  });
  const pool = createPgPool(config.postgres, { log, max: 4 });
  await migrate(pool, { schema, timescale: 'off', compressAfter: 'off', retention: 'off', log });
  // Three minutes of trades for four symbols, one trade per 0.5 s and symbol, a few seconds without any (gaps).
  const rand = mulberry32(5);
  const trades: Trade[] = [];
  let seq = 0;
  for (let ms = 0; ms < 180_000; ms += 500) {
    if (ms >= 60_000 && ms < 63_000) continue;
    for (const symbol of SYMBOLS) {
      trades.push({
        type: 'trade',
        source: 'S',
        symbol,
        ts: T0 + BigInt(ms) * MS,
        seq: ++seq,
        venue: '',
        price: Math.round((50 + rand() * 2) * 100) / 100,
        size: 100,
        side: '',
      });
    }
  }
  const store = new BarStore(barStoreSettings(config));
  await rebuildBars(pool, store, batchesOf(trades), { from: T0, to: T0 + 180_000n * MS });
  return { config, redis: testRedis(config), pool, schema, prefix };
}

async function teardown(c: Ctx): Promise<void> {
  const queue = new Queue(c.config.indicators.queueName, {
    connection: c.redis,
    prefix: c.config.indicators.bullPrefix,
  });
  await queue.obliterate({ force: true });
  await queue.close();
  await cleanupPrefix(c.redis, c.prefix);
  await closeRedis(c.redis);
  await withClient(c.pool, (cl) => cl.query(`DROP SCHEMA IF EXISTS "${c.schema}" CASCADE`));
  await closePgPool(c.pool);
}

async function indicatorRows(c: Ctx, tf: string) {
  const { rows } = await c.pool.query(
    `SELECT symbol, start_ns::text AS start, sma, ema, rsi, macd, macd_signal, macd_hist, bb_upper, bb_middle, bb_lower, atr, vwap, status, bars, filled, computed_at
       FROM "${c.schema}".indicators WHERE tf = $1 ORDER BY symbol, start_ns`,
    [tf],
  );
  return rows as Record<string, unknown>[];
}

describe('indicator jobs on BullMQ (real Redis, PostgreSQL)', () => {
  let c: Ctx;
  beforeAll(async () => {
    c = await setup();
  });
  afterAll(async () => teardown(c));

  it('two workers + a restart: one scheduler per timeframe, one row per (symbol, tf, bar), values never change', async () => {
    const a = new IndicatorService({ config: c.config, log, pool: c.pool });
    const b = new IndicatorService({ config: c.config, log, pool: c.pool });
    await Promise.all([a.start(), b.start()]);
    const schedulers = await a.queue.getJobSchedulers(0, -1);
    expect(schedulers.map((s) => [s.key, s.every]).sort()).toEqual([
      [schedulerId('1m'), 60_000],
      [schedulerId('1s'), 1000],
    ]);

    // Every closed bar gets its row (not only the newest few), each continued from the previous row's state.
    const closed = Number(
      (
        await c.pool.query<{ n: string }>(
          `SELECT count(*)::text AS n FROM "${c.schema}".bars WHERE tf = '1s' AND closed`,
        )
      ).rows[0]!.n,
    );
    expect(closed).toBeGreaterThan(SYMBOLS.length * 150);
    await waitUntil(
      async () => (await indicatorRows(c, '1s')).length === closed,
      'every closed 1s bar computed',
    );
    const first = await indicatorRows(c, '1s');
    const jobsBefore = a.stats.completed + b.stats.completed;
    await waitUntil(() => a.stats.completed + b.stats.completed >= jobsBefore + 3, 'three more jobs', {
      timeoutMs: 15_000,
    });
    // Same bars, same values: later jobs compute nothing new and write nothing (computed_at unchanged).
    expect(await indicatorRows(c, '1s')).toEqual(first);

    // The values are those of an independent computation over each symbol's whole history (computeAt with a
    // window longer than the history, which fills the 3 s gap the same way).
    const store = new IndicatorStore(c.schema);
    const bars = await withClient(c.pool, (cl) => store.closedBars(cl, '1s', SYMBOLS, 1000));
    const params = paramsOf(c.config.indicators);
    for (const row of first) {
      const r = computeAt(
        bars.get(row.symbol as string)!,
        BigInt(row.start as string),
        1_000_000_000n,
        1000,
        'carry',
        params,
      );
      const got = [row.sma, row.ema, row.rsi, row.macd, row.macd_signal, row.atr, row.vwap] as (
        number | null
      )[];
      const want = [
        r.values.sma,
        r.values.ema,
        r.values.rsi,
        r.values.macd,
        r.values.macdSignal,
        r.values.atr,
        r.values.vwap,
      ];
      got.forEach((g, k) => {
        if (want[k] === null) expect(g).toBeNull();
        else expect(Math.abs(g! - want[k]!)).toBeLessThanOrEqual(1e-9 * Math.abs(want[k]!));
      });
      expect([row.status, row.bars, row.filled]).toEqual([r.status, r.bars, r.filled]);
    }
    expect(first.filter((r) => r.status === 'ok').length).toBeGreaterThan(SYMBOLS.length * 100);
    expect(first.some((r) => (r.filled as number) > 0)).toBe(true);

    // The Redis hash holds the newest bar's values.
    const newest = first.filter((r) => r.symbol === 'IA').at(-1)!;
    const hash = await c.redis.hgetall(indicatorKey(c.config.indicators.keyPrefix, 'IA', '1s'));
    expect(hash).toMatchObject({
      symbol: 'IA',
      tf: '1s',
      start: newest.start,
      status: 'ok',
      rsi: String(newest.rsi),
      vwap: String(newest.vwap),
    });

    // Restart one worker: still exactly one scheduler per timeframe, and at most one pending job per scheduler.
    await a.close();
    const a2 = new IndicatorService({ config: c.config, log, pool: c.pool });
    await a2.start();
    const after = await a2.queue.getJobSchedulers(0, -1);
    expect(after.map((s) => s.key).sort()).toEqual([schedulerId('1m'), schedulerId('1s')]);
    const delayed = await a2.queue.getDelayed();
    const perScheduler = new Map<string, number>();
    for (const j of delayed)
      perScheduler.set(String(j.repeatJobKey), (perScheduler.get(String(j.repeatJobKey)) ?? 0) + 1);
    for (const n of perScheduler.values()) expect(n).toBeLessThanOrEqual(1);
    const done = a2.stats.completed + b.stats.completed;
    await waitUntil(() => a2.stats.completed + b.stats.completed >= done + 2, 'jobs after the restart', {
      timeoutMs: 15_000,
    });
    expect(await indicatorRows(c, '1s')).toEqual(first);
    await Promise.all([a2.close(), b.close()]);
  });
});

describe('indicator job failures', () => {
  // Each test its own schema and queue: a job left behind by one test cannot be taken by the next one's worker.
  let c: Ctx;
  beforeEach(async () => {
    c = await setup({ timeframes: ['1m'], attempts: 3 });
  });
  afterEach(async () => teardown(c));

  it('a job that throws is retried with backoff and then succeeds', async () => {
    let calls = 0;
    const svc = new IndicatorService({
      config: c.config,
      log,
      pool: c.pool,
      schedule: false,
      wrap: (run) => async (job) => {
        calls++;
        if (job.attemptsMade === 0) throw new Error('injected crash in the job body');
        return run(job);
      },
    });
    await svc.start();
    const job = await svc.queue.add('indicators-1m', { tf: '1m' }, jobOptions(c.config.indicators));
    await waitUntil(
      async () => (await svc.queue.getJobState(job.id!)) === 'completed',
      'job completed after a retry',
    );
    const done = await svc.queue.getJob(job.id!);
    expect(done!.attemptsMade).toBe(2);
    expect(calls).toBe(2);
    expect(svc.stats).toMatchObject({ failed: 1, completed: 1 });
    expect(done!.returnvalue).toMatchObject({ tf: '1m', symbols: SYMBOLS.length });
    expect((await indicatorRows(c, '1m')).length).toBeGreaterThan(0);
    await svc.close();
  });

  it('a job that keeps failing is kept in the failed set and shown by status', async () => {
    const svc = new IndicatorService({
      config: c.config,
      log,
      pool: c.pool,
      schedule: false,
      wrap: () => async () => {
        throw new Error('store unavailable (injected)');
      },
    });
    await svc.start();
    const job = await svc.queue.add('indicators-1m', { tf: '1m' }, jobOptions(c.config.indicators));
    await waitUntil(async () => (await svc.queue.getJobState(job.id!)) === 'failed', 'job failed for good');
    expect((await svc.queue.getJob(job.id!))!.attemptsMade).toBe(3);
    const rows = await indicatorQueueStatus(c.config, c.redis);
    expect(rows).toBeDefined();
    expect(rows![0]).toMatchObject({ queue: c.config.indicators.queueName, failed: 1 });
    expect(rows!.find((r) => r.failed_job === job.id)).toMatchObject({
      attempts: 3,
      reason: 'store unavailable (injected)',
    });
    await svc.close();
  });

  it('a job whose worker dies mid-run is taken over by another worker (stalled job)', async () => {
    let started = false;
    let release: () => void = () => undefined;
    const dying = new IndicatorService({
      config: c.config,
      log,
      pool: c.pool,
      schedule: false,
      wrap: () => () => {
        started = true;
        // Never finishes by itself: the process "dies" below. Released at the end only so the test can clean up.
        return new Promise((_, reject) => (release = () => reject(new Error('this worker was dead'))));
      },
    });
    await dying.start();
    const job = await dying.queue.add('indicators-1m', { tf: '1m' }, jobOptions(c.config.indicators));
    await waitUntil(() => started, 'the first worker took the job');
    // A crash: no more lock renewals, no clean hand-back of the job.
    await dying.worker.close(true);
    const rescuer = new IndicatorService({ config: c.config, log, pool: c.pool, schedule: false });
    await rescuer.start();
    await waitUntil(
      async () => (await rescuer.queue.getJobState(job.id!)) === 'completed',
      'job taken over',
      { timeoutMs: 20_000 },
    );
    expect(rescuer.stats.completed).toBe(1);
    expect((await rescuer.queue.getJob(job.id!))!.returnvalue).toMatchObject({
      tf: '1m',
      symbols: SYMBOLS.length,
    });
    await rescuer.close();
    release();
    await dying.close();
  });
});
