import { createHash } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../shared/config.ts';
import { consumerName } from '../../shared/config.ts';
import { SinkError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey, type Tick, type Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, type PgPool } from '../../shared/pg.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { deadLetterKey, allStreamKeys } from '../../shared/streams.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { RejectedTicksError, type Sink } from '../../consumers/sink.ts';
import {
  ArchiveShortfallError,
  ArchiveSink,
  archiveCounts,
  compareTicks,
  readArchive,
} from '../../consumers/sinks/archive.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import {
  DATABASE_URL,
  cleanupPrefix,
  testConfig,
  testRedis,
  uniqueName,
  waitUntil,
} from '../helpers/index.ts';

const log = silentLogger();
const DAY_NS = 86_400_000_000_000n;
const MARCH_1_2024 = 1_709_251_200_000_000_000n;

interface Ctx {
  config: Config;
  schema: string;
  redis: RedisClient;
  pool: PgPool;
  workers: GroupWorker[];
  blocking: RedisClient[];
}

const contexts: Ctx[] = [];
const extraCleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const c of extraCleanups.splice(0).reverse()) await c();
  for (const c of contexts.splice(0)) {
    for (const w of c.workers) await w.close();
    for (const b of c.blocking) await closeRedis(b);
    await c.pool.query(`DROP SCHEMA IF EXISTS "${c.schema}" CASCADE`);
    await closePgPool(c.pool);
    await cleanupPrefix(c.redis, c.config.streams.prefix);
    await closeRedis(c.redis);
  }
});

function setup(postgres: Partial<Config['postgres']> = {}, consumer: Partial<Config['consumer']> = {}): Ctx {
  const schema = uniqueName('arch');
  const config = testConfig({
    postgres: { schema, timescale: 'off', partitionsAhead: 1, ...postgres },
    consumer,
  });
  const ctx: Ctx = {
    config,
    schema,
    redis: testRedis(config),
    pool: createPgPool({ ...config.postgres, url: DATABASE_URL }, { log, max: 2 }),
    workers: [],
    blocking: [],
  };
  contexts.push(ctx);
  return ctx;
}

async function startWorker(ctx: Ctx, sink: Sink, consumer = consumerName(ctx.config)): Promise<GroupWorker> {
  const blocking = testRedis(ctx.config, true);
  ctx.blocking.push(blocking);
  const worker = new GroupWorker({
    redis: ctx.redis,
    blocking,
    layout: ctx.config.streams,
    group: 'archive',
    consumer,
    sink,
    settings: ctx.config.consumer,
    log,
  });
  await worker.start();
  ctx.workers.push(worker);
  return worker;
}

async function publish(ctx: Ctx, ticks: readonly Tick[]): Promise<void> {
  const publisher = new Publisher({
    redis: ctx.redis,
    layout: ctx.config.streams,
    settings: ctx.config.producer,
    log,
  });
  for (let i = 0; i < ticks.length; i += 1000) await publisher.publish(ticks.slice(i, i + 1000));
  await publisher.flush();
}

/** Entries the archive group has read but not acknowledged, over every shard. */
async function pending(ctx: Ctx): Promise<number> {
  let n = 0;
  for (const stream of allStreamKeys(ctx.config.streams)) {
    const [count] = (await ctx.redis.call('XPENDING', stream, 'archive')) as [number];
    n += Number(count);
  }
  return n;
}

async function total(ctx: Ctx): Promise<number> {
  const c = await archiveCounts(ctx.pool, ctx.schema);
  return c.trades + c.quotes;
}

/** Synthetic ticks from `start`, `stepNs` apart (the market reads its clock once per call). */
function market(count: number, start: bigint, stepNs: bigint, source = uniqueName('src')): Tick[] {
  let ts = start - stepNs;
  const m = new SyntheticMarket({
    symbols: ['AAA', 'BBB', 'CCC', 'DDD', 'EEE'],
    seed: 11,
    source,
    clock: () => (ts += stepNs),
  });
  return Array.from({ length: count }, () => m.next(1)[0]!);
}

function md5(text: string): string {
  return createHash('md5').update(text).digest('hex');
}

/** Count, distinct identities and an order-independent checksum of the archive, computed by PostgreSQL. */
async function archiveDigest(ctx: Ctx): Promise<{ rows: number; distinct: number; checksum: string }> {
  const { rows } = await ctx.pool.query<{ rows: string; distinct: string; checksum: string }>(
    `WITH k AS (
       SELECT source || '|' || symbol || '|' || ts_ns || '|' || seq AS key FROM "${ctx.schema}".trades
       UNION ALL
       SELECT source || '|' || symbol || '|' || ts_ns || '|' || seq FROM "${ctx.schema}".quotes)
     SELECT count(*) AS rows, count(DISTINCT key) AS distinct,
            coalesce(md5(string_agg(key, ',' ORDER BY key COLLATE "C")), '') AS checksum
       FROM k`,
  );
  return { rows: Number(rows[0]!.rows), distinct: Number(rows[0]!.distinct), checksum: rows[0]!.checksum };
}

function expectedDigest(ticks: readonly Tick[]): { rows: number; distinct: number; checksum: string } {
  const keys = ticks.map(tickKey).sort();
  return { rows: ticks.length, distinct: new Set(keys).size, checksum: md5(keys.join(',')) };
}

describe('archive sink (real PostgreSQL and Redis)', () => {
  it('archives a produced run with exactly the produced ticks (count and checksum), across day partitions', async () => {
    const ctx = setup();
    // 20k ticks over 3 days of March 2024: old days, so their partitions are created as the batches arrive.
    const ticks = market(20_000, MARCH_1_2024, (3n * DAY_NS) / 20_000n);
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log });
    const worker = await startWorker(ctx, sink);
    await publish(ctx, ticks);
    await waitUntil(
      async () => (await total(ctx)) === ticks.length && (await pending(ctx)) === 0,
      'archive to catch up',
    );

    expect(await archiveDigest(ctx)).toEqual(expectedDigest(ticks));
    expect(worker.stats.deadLettered).toBe(0);
    const parts = await ctx.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = '"${ctx.schema}".trades'::regclass
          AND inhrelid::regclass::text LIKE '%trades_p202403%'`,
    );
    expect(parts.rows[0]!.n).toBe(3);

    const read: Tick[] = [];
    for await (const batch of readArchive(ctx.pool, ctx.schema, {
      from: 0n,
      to: MARCH_1_2024 + 4n * DAY_NS,
    })) {
      read.push(...batch);
    }
    expect(read).toEqual([...ticks].sort(compareTicks));
  });

  it('readArchive filters by range, symbol and type, and resumes after a given tick', async () => {
    const ctx = setup();
    const ticks = market(3_000, MARCH_1_2024, 1_000_003n);
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, pool: ctx.pool });
    await sink.start();
    await sink.write(ticks);
    await sink.flush();

    const from = ticks[500]!.ts;
    const to = ticks[2500]!.ts;
    const want = ticks.filter((t) => t.ts >= from && t.ts < to && t.symbol !== 'CCC' && t.type === 'trade');
    const got: Tick[] = [];
    let batches = 0;
    for await (const batch of readArchive(ctx.pool, ctx.schema, {
      from,
      to,
      symbols: ['AAA', 'BBB', 'DDD', 'EEE'],
      types: ['trade'],
      batchSize: 97,
    })) {
      expect(batch.length).toBeLessThanOrEqual(97);
      batches++;
      got.push(...batch);
    }
    expect(got).toEqual(want);
    expect(batches).toBe(Math.ceil(want.length / 97));

    const resumeAfter = ticks[1_000]!;
    const rest: Tick[] = [];
    for await (const batch of readArchive(ctx.pool, ctx.schema, {
      from: -1n,
      to: 2n ** 70n, // open-ended bounds are clamped
      after: resumeAfter,
      batchSize: 250,
    })) {
      rest.push(...batch);
    }
    expect(rest).toEqual(ticks.slice(1_001));
  });

  it('redelivered and replayed ticks are stored once; a batch with duplicates inside it too', async () => {
    const ctx = setup();
    const ticks = market(2_000, MARCH_1_2024, 5_000_000n);
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, pool: ctx.pool });
    await sink.start();
    await sink.write(ticks.slice(0, 1_500));
    await sink.flush();
    expect(sink.stats).toMatchObject({ inserted: 1_500, duplicates: 0, directFlushes: 1 });

    // A redelivered batch overlapping what is stored, with one tick twice in it.
    await sink.write([...ticks.slice(1_000), ticks[1_999]!]);
    await sink.flush();
    expect(sink.stats).toMatchObject({ inserted: 2_000, duplicates: 501, directFlushes: 1 });
    expect(await archiveDigest(ctx)).toEqual(expectedDigest(ticks));

    // A replay of everything: nothing new.
    await sink.write(ticks);
    await sink.flush();
    expect(sink.stats.inserted).toBe(2_000);
    expect(await archiveDigest(ctx)).toEqual(expectedDigest(ticks));
  });

  it('a consumer that COMMITs but dies before XACK: the one that claims its entries stores nothing twice', async () => {
    const ctx = setup({}, { claimMinIdleMs: 300, claimIntervalMs: 100 });
    const ticks = market(4_000, MARCH_1_2024, 7_000_000n);

    // Consumer A commits its first batch, then "dies": its flush never returns, so it never acknowledges.
    const dying = new DiesAfterCommit(new ArchiveSink({ settings: ctx.config.postgres, log }));
    extraCleanups.push(() => dying.release());
    const a = await startWorker(ctx, dying, 'consumer-a');
    await publish(ctx, ticks);
    await dying.committed;
    const committedByA = await total(ctx);
    expect(committedByA).toBeGreaterThan(0);
    expect(await pending(ctx)).toBeGreaterThan(0);
    expect(a.stats.acked).toBe(0);

    const survivor = new ArchiveSink({ settings: ctx.config.postgres, log });
    const b = await startWorker(ctx, survivor, 'consumer-b');
    await waitUntil(
      async () => (await total(ctx)) === ticks.length && (await pending(ctx)) === 0,
      'consumer B to claim and finish',
    );
    expect(b.stats.claimed).toBeGreaterThan(0);
    // B wrote A's committed batch again: every one of those ticks was a duplicate, none stored twice.
    expect(survivor.stats.duplicates).toBeGreaterThanOrEqual(committedByA);
    expect(await archiveDigest(ctx)).toEqual(expectedDigest(ticks));
  });

  it('PostgreSQL unavailable for a while: entries stay pending and are all written when it is back', async () => {
    const target = new URL(DATABASE_URL);
    const proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
    await proxy.up();
    extraCleanups.push(() => proxy.down());
    const proxied = new URL(DATABASE_URL);
    proxied.port = String(proxy.port);
    const ctx = setup({ url: proxied.toString(), connectTimeoutMs: 1_000 });
    const ticks = market(5_000, MARCH_1_2024, 3_000_000n);

    const sink = new ArchiveSink({ settings: ctx.config.postgres, log });
    const worker = await startWorker(ctx, sink);
    await publish(ctx, ticks.slice(0, 2_000));
    await waitUntil(
      async () => (await total(ctx)) === 2_000 && (await pending(ctx)) === 0,
      'first part archived',
    );

    await proxy.down();
    const retriesBefore = worker.stats.retries;
    await publish(ctx, ticks.slice(2_000));
    await waitUntil(
      async () => worker.stats.retries > retriesBefore + 3,
      'the worker to retry against the outage',
    );
    expect(await pending(ctx)).toBeGreaterThan(0);
    expect(await total(ctx)).toBe(2_000);

    await proxy.up();
    await waitUntil(
      async () => (await total(ctx)) === ticks.length && (await pending(ctx)) === 0,
      'the backlog to be archived after PostgreSQL is back',
    );
    expect(worker.stats.deadLettered).toBe(0);
    expect(await ctx.redis.xlen(deadLetterKey(ctx.config.streams))).toBe(0);
    expect(await archiveDigest(ctx)).toEqual(expectedDigest(ticks));
  });

  it('a late tick for an old day lands in that day’s partition, with its exact nanoseconds', async () => {
    const ctx = setup({ partitionsAhead: 2 });
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, pool: ctx.pool });
    const day = () => new Date().toISOString().slice(0, 10).replaceAll('-', '');
    // start() creates today's partition and the ones ahead; if UTC midnight passes while it runs, "today" is
    // either day, so both are read around it.
    const before = day();
    await sink.start();
    const after = day();
    const ahead = await ctx.pool.query<{ name: string }>(
      `SELECT inhrelid::regclass::text AS name FROM pg_inherits WHERE inhparent = '"${ctx.schema}".trades'::regclass ORDER BY 1`,
    );
    expect(ahead.rows).toHaveLength(3);
    expect([`${ctx.schema}.trades_p${before}`, `${ctx.schema}.trades_p${after}`]).toContain(
      ahead.rows[0]!.name,
    );

    const late: Trade = {
      type: 'trade',
      source: 'late',
      symbol: 'OLD',
      ts: 1_623_758_399_999_999_123n, // 2021-06-15T11:59:59.999999123Z
      seq: 1,
      venue: '',
      price: 1.5,
      size: 2,
      side: 'sell',
    };
    const now: Trade = { ...late, ts: BigInt(Date.now()) * 1_000_000n, seq: 2 };
    await sink.write([now, late]);
    await sink.flush();

    const rows = await ctx.pool.query<{ part: string; ts: string; ts_ns: string; bound: string }>(
      `SELECT t.tableoid::regclass::text AS part, to_char(t.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS ts,
              t.ts_ns::text, pg_get_expr(c.relpartbound, c.oid) AS bound
         FROM "${ctx.schema}".trades t JOIN pg_class c ON c.oid = t.tableoid
        WHERE t.symbol = 'OLD' ORDER BY t.ts`,
    );
    expect(rows.rows[0]).toEqual({
      part: `${ctx.schema}.trades_p20210615`,
      ts: '2021-06-15T11:59:59.999999',
      ts_ns: '1623758399999999123',
      bound: expect.stringMatching(/FROM \('2021-06-15 00:00:00\+00'\) TO \('2021-06-16 00:00:00\+00'\)/),
    });
    // The current tick lands in the partition of its own day (read from the tick, not the clock again).
    const nowDay = new Date(Number(now.ts / 1_000_000n)).toISOString().slice(0, 10).replaceAll('-', '');
    expect(rows.rows[1]!.part).toBe(`${ctx.schema}.trades_p${nowDay}`);
  });

  it('retention drops whole days past it (plain PostgreSQL), and a dropped day is recreated when written again', async () => {
    const ctx = setup({ retention: '30 days', partitionsAhead: 0 });
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, pool: ctx.pool });
    await sink.start();
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    const old = market(10, nowNs - 40n * DAY_NS, 1_000n, 'ret');
    const recent = market(10, nowNs - 1_000_000_000n, 1_000n, 'ret2');
    await sink.write([...old, ...recent]);
    await sink.flush();
    expect(await total(ctx)).toBe(20);
    await sink.maintain();
    expect(await total(ctx)).toBe(10);
    await sink.write(old);
    await sink.flush();
    expect(await total(ctx)).toBe(20);
  });

  it('a tick PostgreSQL could not store (NUL) is refused at the stream boundary, alone', async () => {
    const ctx = setup();
    const ticks = market(1_000, MARCH_1_2024, 9_000_000n);
    const bad = { ...ticks[400]!, venue: 'X\u0000Y' } as Tick;
    ticks[400] = bad;
    const worker = await startWorker(ctx, new ArchiveSink({ settings: ctx.config.postgres, log }));
    await publish(ctx, ticks);
    await waitUntil(
      async () => (await total(ctx)) === 999 && (await pending(ctx)) === 0,
      'the good ticks archived',
    );
    await expectOneDeadLetter(ctx, bad, /venue: must hold printable characters only/);
    expect(worker.stats.deadLettered).toBe(1);
    expect(await archiveDigest(ctx)).toEqual(expectedDigest(ticks.filter((t) => t !== bad)));
  });

  it('a tick beyond PostgreSQL bigint is refused at the stream boundary, alone', async () => {
    const ctx = setup();
    const ticks = market(1_000, MARCH_1_2024, 9_000_000n);
    // 19 digits, beyond PostgreSQL's bigint: the model's range stops at its maximum.
    const bad = { ...ticks[123]!, ts: 9_300_000_000_000_000_000n } as Tick;
    ticks[123] = bad;
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, validate: false });
    const worker = await startWorker(ctx, sink);
    await publish(ctx, ticks);
    await waitUntil(
      async () => (await total(ctx)) === 999 && (await pending(ctx)) === 0,
      'the good ticks archived',
    );
    await expectOneDeadLetter(ctx, bad, /ts: timestamp out of range \(0 to 9223372036854775807\)/);
    expect(worker.stats.deadLettered).toBe(1);
    expect(await archiveDigest(ctx)).toEqual(expectedDigest(ticks.filter((t) => t !== bad)));
  });

  it('refuses days outside the archive window with a dead letter naming the day: no table per stray day', async () => {
    const ctx = setup({ archiveDaysBack: 30, archiveDaysAhead: 1 });
    // The sink's window is placed by the same instant as the days below: were it read from the wall clock
    // when a batch arrives, a run across UTC midnight would move the window by a day under the test.
    const nowMs = Date.now();
    const todayNs = (BigInt(nowMs) / 86_400_000n) * DAY_NS;
    // 200 trades on 200 distinct days back from today: 31 fall inside the window.
    const ticks = market(200, todayNs - 199n * DAY_NS + 1_000n, DAY_NS);
    const inside = ticks.filter((t) => t.ts >= todayNs - 30n * DAY_NS);
    expect(inside).toHaveLength(31);
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, windowClock: () => nowMs });
    const worker = await startWorker(ctx, sink);
    await publish(ctx, ticks);
    await waitUntil(
      async () => (await total(ctx)) === 31 && (await pending(ctx)) === 0,
      'the ticks inside the window archived',
    );
    expect(worker.stats.deadLettered).toBe(169);
    const letters = (await ctx.redis.xrange(deadLetterKey(ctx.config.streams), '-', '+', 'COUNT', 1000)) as [
      string,
      string[],
    ][];
    expect(letters).toHaveLength(169);
    const reasons = letters.map(([, f]) => f[f.indexOf('reason') + 1]!);
    const oldest = new Date(Number((todayNs - 199n * DAY_NS) / 1_000_000n)).toISOString().slice(0, 10);
    expect(reasons).toContain(
      `day ${oldest} is outside the archive window ${new Date(Number((todayNs - 30n * DAY_NS) / 1_000_000n))
        .toISOString()
        .slice(0, 10)} to ${new Date(Number((todayNs + DAY_NS) / 1_000_000n))
        .toISOString()
        .slice(0, 10)} (TICKSTREAM_ARCHIVE_DAYS_BACK=30, TICKSTREAM_ARCHIVE_DAYS_AHEAD=1)`,
    );
    for (const r of reasons) expect(r).toMatch(/^day \d{4}-\d\d-\d\d is outside the archive window /);
    expect(await archiveDigest(ctx)).toEqual(expectedDigest(inside));
    // Partitions: the 31 days inside and those made ahead of the clock, never one per stray day.
    const { rows } = await ctx.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
        WHERE s.nspname = $1 AND c.relname LIKE 'trades_p%' AND c.relkind = 'r'`,
      [ctx.schema],
    );
    expect(Number(rows[0]!.n)).toBeLessThanOrEqual(31 + 2);
  });

  it('reports refused ticks by index after committing the rest (RejectedTicksError)', async () => {
    const ctx = setup();
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, pool: ctx.pool });
    await sink.start();
    const ticks = market(10, MARCH_1_2024, 1_000n);
    ticks[3] = { ...ticks[3]!, symbol: 'A\u0000' } as Tick;
    ticks[7] = { ...ticks[7]!, ts: 9_300_000_000_000_000_000n } as Tick;
    await sink.write(ticks);
    const err = await sink.flush().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RejectedTicksError);
    expect((err as RejectedTicksError).rejections.map((r) => r.index)).toEqual([3, 7]);
    expect(await total(ctx)).toBe(8);
  });
});

/**
 * A stand-in for timescale/timescaledb#7672 on plain PostgreSQL: in a multi-row INSERT (not COPY), once one
 * row conflicts with a stored one, every later row of that statement is silently skipped, and the statement
 * reports a smaller row count, exactly what ON CONFLICT DO NOTHING reports for duplicates.
 */
async function installSkipAfterConflict(ctx: Ctx): Promise<void> {
  const q = `"${ctx.schema}"`;
  await ctx.pool.query(`
    CREATE FUNCTION ${q}.standin_7672() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      stmt text := txid_current()::text || '@' || statement_timestamp()::text;
      stored boolean;
    BEGIN
      IF current_query() NOT ILIKE 'INSERT%' THEN RETURN NEW; END IF;
      IF current_setting('standin.conflicted', true) = stmt THEN RETURN NULL; END IF;
      EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I t WHERE t.ts = $1 AND t.ts_ns = $2 AND t.seq = $3
                                       AND t.source = $4 AND t.symbol = $5)', TG_TABLE_SCHEMA, TG_TABLE_NAME)
        INTO stored USING NEW.ts, NEW.ts_ns, NEW.seq, NEW.source, NEW.symbol;
      IF stored THEN
        PERFORM set_config('standin.conflicted', stmt, true);
        RETURN NULL;
      END IF;
      RETURN NEW;
    END $$`);
  for (const table of ['trades', 'quotes']) {
    await ctx.pool.query(
      `CREATE TRIGGER standin_7672 BEFORE INSERT ON ${q}.${table} FOR EACH ROW EXECUTE FUNCTION ${q}.standin_7672()`,
    );
  }
}

describe('archive staging path verification (stand-in for TimescaleDB 2.16.0–2.18.0 on plain PostgreSQL)', () => {
  /** Stored ticks with new ones interleaved, so that every new tick comes after a conflict in the INSERT. */
  function mixed(ticks: readonly Tick[]): { stored: Tick[]; batch: Tick[]; fresh: Tick[] } {
    const fresh = ticks.filter((_, i) => i % 10 === 9);
    const stored = ticks.filter((_, i) => i % 10 !== 9);
    return { stored, batch: [...ticks], fresh };
  }

  it('a shortfall after INSERT … ON CONFLICT DO NOTHING rolls the batch back and is an error, never duplicates', async () => {
    const ctx = setup();
    const { stored, batch } = mixed(market(1_000, MARCH_1_2024, 3_000_001n));
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, pool: ctx.pool });
    await sink.start();
    await sink.write(stored);
    await sink.flush();
    await installSkipAfterConflict(ctx);

    await sink.write(batch);
    const err = await sink.flush().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ArchiveShortfallError);
    expect(err).toMatchObject({ retriable: false });
    const missing = (err as ArchiveShortfallError).missing;
    expect(missing).toBeGreaterThan(0);
    expect(missing).toBeLessThanOrEqual(100);
    expect(sink.stats).toMatchObject({ inserted: stored.length, duplicates: 0, shortfalls: 1 });
    expect(await total(ctx)).toBe(stored.length); // rolled back: not even the part that went in was kept
  });

  it('through the worker: every new tick mixed among stored ones is stored once, nothing dead-lettered', async () => {
    const ctx = setup();
    // Small: each new tick behind a conflict is isolated by halving, a transaction per step.
    const ticks = market(300, MARCH_1_2024, 3_000_001n);
    const { stored } = mixed(ticks);
    const seed = new ArchiveSink({ settings: ctx.config.postgres, log, pool: ctx.pool });
    await seed.start();
    await seed.write(stored);
    await seed.flush();
    await installSkipAfterConflict(ctx);

    const sink = new ArchiveSink({ settings: ctx.config.postgres, log });
    const worker = await startWorker(ctx, sink);
    await publish(ctx, ticks);
    await waitUntil(
      async () => (await total(ctx)) === ticks.length && (await pending(ctx)) === 0,
      'every tick stored and acknowledged',
    );
    expect(await archiveDigest(ctx)).toEqual(expectedDigest(ticks));
    expect(worker.stats.deadLettered).toBe(0);
    expect(sink.stats.shortfalls).toBeGreaterThan(0); // the stand-in did bite, and was caught
    expect(sink.stats.inserted).toBe(ticks.length - stored.length);
  });

  it('the stand-in does lose ticks when verification is off (so the test above can fail)', async () => {
    const ctx = setup();
    const { stored, batch, fresh } = mixed(market(1_000, MARCH_1_2024, 3_000_001n));
    const sink = new ArchiveSink({ settings: ctx.config.postgres, log, pool: ctx.pool, verify: false });
    await sink.start();
    await sink.write(stored);
    await sink.flush();
    await installSkipAfterConflict(ctx);
    await sink.write(batch);
    await sink.flush();
    expect(await total(ctx)).toBeLessThan(stored.length + fresh.length);
    expect(sink.stats.duplicates).toBeGreaterThan(stored.length); // lost ticks counted as duplicates
  });
});

async function expectOneDeadLetter(ctx: Ctx, bad: Tick, reason: RegExp): Promise<void> {
  const letters = (await ctx.redis.xrange(deadLetterKey(ctx.config.streams), '-', '+')) as [
    string,
    string[],
  ][];
  expect(letters).toHaveLength(1);
  const fields = new Map<string, string>();
  const flat = letters[0]![1];
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!, flat[i + 1]!);
  expect(fields.get('kind')).toBe('tick');
  expect(fields.get('group')).toBe('archive');
  expect(fields.get('reason')).toMatch(reason);
  const tuple = JSON.parse(fields.get('tick')!) as unknown[];
  expect(tuple[3]).toBe(bad.ts.toString());
  expect(tuple[4]).toBe(bad.seq);
}

/** Commits its first batch, then never returns from flush(): a process that died between COMMIT and XACK. */
class DiesAfterCommit implements Sink {
  readonly name = 'archive-dies-after-commit';
  readonly committed: Promise<void>;
  private onCommitted!: () => void;
  private dead = false;
  private gate: () => void = () => undefined;

  constructor(private readonly inner: ArchiveSink) {
    this.committed = new Promise((r) => (this.onCommitted = r));
  }

  start(): Promise<void> {
    return this.inner.start();
  }

  async write(ticks: readonly Tick[]): Promise<void> {
    if (this.dead) throw new SinkError('dead consumer (test)', { retriable: true });
    await this.inner.write(ticks);
  }

  async flush(): Promise<void> {
    if (this.dead) throw new SinkError('dead consumer (test)', { retriable: true });
    await this.inner.flush();
    this.dead = true;
    this.onCommitted();
    await new Promise<void>((r) => (this.gate = r));
    throw new SinkError('dead consumer (test)', { retriable: true });
  }

  /** Let the stuck flush return (with an error) so the worker can be closed at the end of the test. */
  async release(): Promise<void> {
    this.gate();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A TCP proxy in front of PostgreSQL that the test can take down (refusing and cutting connections) and up. */
class TcpProxy {
  port = 0;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly host: string,
    private readonly targetPort: number,
  ) {}

  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.targetPort, this.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    if (address !== null && typeof address === 'object') this.port = address.port;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server !== undefined) await new Promise<void>((r) => server.close(() => r()));
  }
}
