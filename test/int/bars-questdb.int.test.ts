import { afterEach, describe, expect, it } from 'vitest';
import { BarStore, type BarRow } from '../../consumers/bars/store.ts';
import {
  barStoreSettings,
  barsOutboxStatus,
  createBarsSink,
  type BarsSink,
} from '../../consumers/sinks/bars.ts';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, withClient, type PgPool } from '../../shared/pg.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';
import { QuestDbStandin, type IlpRow } from '../helpers/questdb-standin.ts';

/**
 * Closed bars into QuestDB through the PostgreSQL outbox, against the QuestDB stand-in
 * (test/helpers/questdb-standin.ts) and the real PostgreSQL and Redis. The real QuestDB is exercised by
 * questdb-real.int.test.ts.
 */

const T0 = 1_699_999_980_000_000_000n; // a whole minute
const MS = 1_000_000n;
const log = silentLogger();
/**
 * Short client timeouts so that failures reach the outbox quickly: only for tests that inject failures. Under
 * load a healthy request can outlive them and be sent again (DEDUP keeps one row), so a test that counts
 * requests or rows keeps the client's own timeouts.
 */
const FAST = 'retry_timeout=200;request_timeout=1000;';

function trade(ms: number, price: number, size: number, seq: number, symbol = 'AAA'): Trade {
  return {
    type: 'trade',
    source: 'S',
    symbol,
    ts: T0 + BigInt(ms) * MS,
    seq,
    venue: '',
    price,
    size,
    side: '',
  };
}

/** The hand-computed sequence of bars.int.test.ts: 1s bars 0 and 1000 close, the trade at 950 is late. */
const SEQUENCE: Trade[] = [
  trade(100, 10.0, 100, 1),
  trade(900, 10.5, 200, 2),
  trade(300, 9.75, 50, 3),
  trade(1200, 10.25, 100, 4),
  trade(1600, 10.4, 300, 5),
  trade(950, 11.0, 10, 6),
  trade(2700, 10.1, 100, 7),
  trade(2700, 10.2, 100, 8),
];

interface Ctx {
  config: Config;
  redis: RedisClient;
  pool: PgPool;
  store: BarStore;
  standin: QuestDbStandin;
  table: string;
}

const contexts: Ctx[] = [];
const sinks: BarsSink[] = [];

afterEach(async () => {
  for (const s of sinks.splice(0)) await s.close().catch(() => undefined);
  for (const c of contexts.splice(0)) {
    await withClient(c.pool, (cl) => cl.query(`DROP SCHEMA IF EXISTS "${c.config.postgres.schema}" CASCADE`));
    await closePgPool(c.pool);
    await cleanupPrefix(c.redis, c.config.streams.prefix);
    await closeRedis(c.redis);
    await c.standin.stop();
  }
});

async function setup(
  options: {
    conf?: string | false;
    batch?: number;
    standin?: Parameters<typeof QuestDbStandin.start>[0];
  } = {},
): Promise<Ctx> {
  const standin = await QuestDbStandin.start(options.standin);
  const base = testConfig();
  const tablePrefix = `${uniqueName('b')}_`;
  const config = testConfig({
    streams: { prefix: base.streams.prefix, shards: 2 },
    postgres: { schema: uniqueName('barsq'), timescale: 'off', partitionsAhead: 0 },
    bars: {
      keyPrefix: `${base.streams.prefix}:bar:`,
      allowedLatenessMs: 500,
      timeframes: ['1s', '1m'],
      questdbIntervalMs: 100,
      ...(options.batch === undefined ? {} : { questdbBatch: options.batch }),
    },
    questdb:
      options.conf === false
        ? { tablePrefix }
        : { clientConf: standin.clientConf(options.conf ?? FAST), tablePrefix },
  });
  const c: Ctx = {
    config,
    redis: testRedis(config),
    pool: createPgPool(config.postgres, { log, max: 2 }),
    store: new BarStore(barStoreSettings(config)),
    standin,
    table: `${tablePrefix}bars`,
  };
  contexts.push(c);
  return c;
}

async function sinkFor(c: Ctx, config: Config = c.config): Promise<BarsSink> {
  const sink = await createBarsSink({ config, redis: c.redis, log });
  sinks.push(sink);
  await sink.start();
  return sink;
}

async function writeFlush(sink: BarsSink, trades: readonly Trade[]): Promise<void> {
  await sink.write(trades);
  await sink.flush();
}

async function closedBars(c: Ctx): Promise<(BarRow & { synced: string | null })[]> {
  const { rows } = await c.pool.query<{
    symbol: string;
    tf: string;
    start_ns: string;
    qdb_synced_rev: string | null;
  }>(
    `SELECT symbol, tf, start_ns::text, qdb_synced_rev::text FROM "${c.config.postgres.schema}".bars WHERE closed`,
  );
  const synced = new Map(rows.map((r) => [`${r.symbol}|${r.tf}|${r.start_ns}`, r.qdb_synced_rev]));
  const all = await withClient(c.pool, (cl) => c.store.barsInRange(cl, { from: 0n, to: 1n << 62n }));
  return all
    .filter((b) => b.closed)
    .map((b) => ({ ...b, synced: synced.get(`${b.symbol}|${b.tf}|${b.start}`) ?? null }));
}

async function backlog(c: Ctx): Promise<number> {
  return (await withClient(c.pool, (cl) => c.store.unsyncedBacklog(cl))).rows;
}

/** What QuestDB holds per bar after DEDUP: the revision and the trade count. */
function storedBars(c: Ctx): Map<string, { rev: bigint; trades: bigint }> {
  return new Map(
    c.standin
      .storedRows(c.table)
      .map((r: IlpRow) => [
        `${r.symbols.symbol}|${r.symbols.tf}|${r.ts}`,
        { rev: intField(r, 'rev'), trades: intField(r, 'trades') },
      ]),
  );
}

function intField(r: IlpRow, name: string): bigint {
  const f = r.fields[name];
  if (f?.type !== 'int') throw new Error(`${name} is not an integer field in ${r.text}`);
  return f.value;
}

describe('bars into QuestDB through the outbox, against the QuestDB stand-in', () => {
  it('sends closed bars as exact ILP lines (protocol 1, nanosecond precision) into a table deduplicated on (ts, symbol, tf)', async () => {
    const c = await setup({ conf: 'protocol_version=1;' });
    const sink = await sinkFor(c);
    await writeFlush(sink, SEQUENCE.slice(0, 3));
    await writeFlush(sink, SEQUENCE.slice(3, 6)); // closes the first second
    // The push of the first bar is done (sent and marked) before the next flush closes the second bar: a push
    // reads whatever the outbox holds when it runs, so a late one would send both bars in one request.
    await waitUntil(
      async () => (await backlog(c)) === 0 && c.standin.rows.length >= 1,
      'the first closed bar sent',
    );
    await writeFlush(sink, SEQUENCE.slice(6)); // closes the next second
    // At least: a row sent twice fails the exact checks below instead of timing out here.
    await waitUntil(
      async () => (await backlog(c)) === 0 && c.standin.rows.length >= 2,
      'the second closed bar sent',
    );

    const [b0, b1] = await closedBars(c);
    expect([b0!.start, b1!.start]).toEqual([T0, T0 + 1000n * MS]);
    // Open bars (1s at 2000, the minute) are not sent; the closed ones are marked at the rev QuestDB has.
    expect([b0!.synced, b1!.synced]).toEqual([b0!.rev.toString(), b1!.rev.toString()]);
    expect(c.standin.rows.map((r) => r.text)).toEqual([
      `${c.table},symbol=AAA,tf=1s open=10,high=11,low=9.75,close=11,volume=360,vwap=${b0!.vwap},trades=4i,late=1i,rev=${b0!.rev}i 1699999980000000000`,
      `${c.table},symbol=AAA,tf=1s open=10.25,high=10.4,low=10.25,close=10.4,volume=400,vwap=${b1!.vwap},trades=2i,late=0i,rev=${b1!.rev}i 1699999981000000000`,
    ]);
    expect(c.standin.writes.map((w) => w.query)).toEqual(['?precision=n', '?precision=n']);
    expect(c.standin.rows.map((r) => r.ts)).toEqual([T0, T0 + 1000n * MS]);

    const creates = c.standin.execs.filter((q) => q.startsWith('CREATE TABLE'));
    expect(creates).toEqual([
      `CREATE TABLE IF NOT EXISTS ${c.table} ( ts TIMESTAMP, symbol SYMBOL CAPACITY 16384 CACHE, tf SYMBOL CAPACITY 8 CACHE, ` +
        'open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, vwap DOUBLE, trades LONG, late LONG, ' +
        'rev LONG ) TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, symbol, tf)',
    ]);
    expect(c.standin.tableDef(c.table)?.upsertKeys).toEqual(['ts', 'symbol', 'tf']);
    expect(sink.questdb!.stats).toMatchObject({ sent: 2, marked: 2, requests: 2, failures: 0 });
  });

  it('an amended closed bar (late trade) is sent again with its new rev and replaces its row (protocol 2)', async () => {
    const c = await setup({ conf: '' }); // the client's own timeouts: this test counts rows
    const sink = await sinkFor(c);
    await writeFlush(sink, SEQUENCE.slice(0, 5)); // clock at 1600 ms: the first second closes
    await waitUntil(async () => (await backlog(c)) === 0 && c.standin.rows.length >= 1, 'the first bar sent');
    expect(c.standin.rows).toHaveLength(1);
    const first = (await closedBars(c))[0]!;
    expect(first.trades).toBe(3);

    await writeFlush(sink, [SEQUENCE[5]!]); // 950 ms: late for the closed second
    await waitUntil(async () => (await backlog(c)) === 0 && c.standin.rows.length >= 2, 'the amendment sent');
    expect(c.standin.rows).toHaveLength(2);
    const amended = (await closedBars(c))[0]!;
    expect(amended.rev).toBeGreaterThan(first.rev);
    expect([amended.trades, amended.late, amended.high]).toEqual([4, 1, 11]);
    expect(amended.synced).toBe(amended.rev.toString());

    const [a, b] = c.standin.rows;
    expect([a!.ts, b!.ts]).toEqual([T0, T0]);
    expect(b!.text.endsWith(` ${T0}n`)).toBe(true); // protocol 2: the designated timestamp says its unit
    expect([intField(a!, 'rev'), intField(b!, 'rev')]).toEqual([first.rev, amended.rev]);
    expect(b!.fields.high).toEqual({ type: 'float', value: 11, text: '11' });
    // DEDUP UPSERT KEYS(ts, symbol, tf): one row for the bar, at its newest revision.
    expect(storedBars(c)).toEqual(new Map([[`AAA|1s|${T0}`, { rev: amended.rev, trades: 4n }]]));
  });

  it('a crash between QuestDB confirming a push and markSynced: the restarted consumer sends those bars again and DEDUP keeps one row each', async () => {
    const c = await setup();
    // The crash point: QuestDB has confirmed the request, the marks are not committed. The push's transaction
    // dies with the process (here: rolls back), and the process is gone (its sink closed without the marks).
    const markSynced = BarStore.prototype.markSynced;
    let crashed = 0;
    BarStore.prototype.markSynced = async function () {
      crashed++;
      throw new Error('process killed after the QuestDB reply, before markSynced (injected)');
    };
    let sink: BarsSink;
    try {
      sink = await sinkFor(c);
      await writeFlush(sink, SEQUENCE);
      await waitUntil(() => crashed >= 1 && c.standin.rows.length >= 2, 'the push sent, then crashed');
      await sink.close();
    } finally {
      BarStore.prototype.markSynced = markSynced;
    }
    const sentBeforeCrash = c.standin.rows.length;
    expect(await backlog(c)).toBe(2); // still in the outbox: nothing was marked
    // Restart: the new consumer's start pushes what the dead one left.
    await sinkFor(c);
    await waitUntil(async () => (await backlog(c)) === 0, 'the outbox drained after the restart');
    const bars = await closedBars(c);
    expect(bars.map((b) => b.synced)).toEqual(bars.map((b) => b.rev.toString()));
    expect(c.standin.rows.length).toBeGreaterThanOrEqual(sentBeforeCrash + 2); // sent again
    // DEDUP UPSERT KEYS(ts, symbol, tf): one row per bar, at its stored revision.
    expect(storedBars(c)).toEqual(
      new Map(bars.map((b) => [`${b.symbol}|${b.tf}|${b.start}`, { rev: b.rev, trades: BigInt(b.trades) }])),
    );
  });

  it('while the stand-in answers 5xx or refuses connections, flushes succeed and bars wait in the outbox; after recovery they are sent and marked', async () => {
    const c = await setup();
    const sink = await sinkFor(c);
    c.standin.failWrites(500);
    await writeFlush(sink, SEQUENCE.slice(0, 6)); // resolves: PostgreSQL has the bars
    await waitUntil(() => sink.questdb!.stats.failures >= 2, 'failed pushes');
    expect(await backlog(c)).toBe(1);
    expect(c.standin.rows).toHaveLength(0);
    expect(sink.questdb!.stats.lastError).toMatch(/^QuestDB unavailable/);
    const status = await barsOutboxStatus(c.config, log);
    expect(status).toEqual([
      {
        schema: c.config.postgres.schema,
        questdb_table: c.table,
        unsynced: 1,
        oldest_change: expect.any(String),
      },
    ]);

    c.standin.recover();
    await waitUntil(async () => (await backlog(c)) === 0, 'the outbox to drain after recovery');
    expect(storedBars(c).size).toBe(1);

    // Not listening at all: the client never settles by itself; the flush guard gives up, the bars wait.
    await c.standin.pause();
    const failures = sink.questdb!.stats.failures;
    await writeFlush(sink, SEQUENCE.slice(6));
    await waitUntil(() => sink.questdb!.stats.failures > failures, 'a push to fail on a refused connection', {
      timeoutMs: 10_000,
    });
    expect(await backlog(c)).toBe(1);
    await c.standin.resume();
    await waitUntil(async () => (await backlog(c)) === 0, 'the outbox to drain after the restart', {
      timeoutMs: 10_000,
    });

    const bars = await closedBars(c);
    expect(bars.every((b) => b.synced === b.rev.toString())).toBe(true);
    expect(storedBars(c)).toEqual(
      new Map(bars.map((b) => [`AAA|1s|${b.start}`, { rev: b.rev, trades: BigInt(b.trades) }])),
    );
  }, 30_000);

  it('nothing is sent without QDB_CLIENT_CONF; configured later, a start sends the bars left in the outbox, oldest first, in bounded batches', async () => {
    const c = await setup({ conf: false, batch: 1 });
    const plain = await sinkFor(c);
    expect(plain.questdb).toBeUndefined();
    await writeFlush(plain, SEQUENCE);
    await plain.close();
    expect(c.standin.writeRequests).toBe(0);
    expect(c.standin.execs).toEqual([]);
    expect(await barsOutboxStatus(c.config, log)).toBeUndefined();
    expect(await backlog(c)).toBe(2);

    // The same schema, now with QuestDB: no new trade, start() alone drains what was waiting.
    const withQdb = { ...c.config, questdb: { ...c.config.questdb, clientConf: c.standin.clientConf(FAST) } };
    const sink = await sinkFor(c, withQdb);
    await waitUntil(async () => (await backlog(c)) === 0, 'the outbox to drain');
    const bars = await closedBars(c);
    expect(c.standin.writes.map((w) => w.rows)).toEqual([1, 1]); // TICKSTREAM_BARS_QDB_BATCH=1
    expect(c.standin.rows.map((r) => intField(r, 'rev'))).toEqual(
      bars.map((b) => b.rev).sort((x, y) => (x < y ? -1 : 1)),
    );
    expect(sink.questdb!.stats.sent).toBe(2);
  });

  it('two bars consumers on one schema push one at a time, and QuestDB ends with every closed bar at its stored rev', async () => {
    const c = await setup({ batch: 7 });
    c.standin.writeDelayMs = 30;
    const [a, b] = [await sinkFor(c), await sinkFor(c)];
    const batch = (symbol: string, from: number) =>
      Array.from({ length: 60 }, (_, i) => trade(from + i * 250, 10 + (i % 5) / 10, 10, from + i, symbol));
    await Promise.all([
      (async () => {
        for (let i = 0; i < 5; i++) await writeFlush(a, batch('XA', i * 15_000));
      })(),
      (async () => {
        for (let i = 0; i < 5; i++) await writeFlush(b, batch('XB', i * 15_000));
      })(),
    ]);
    // A late trade for a long-closed second of each symbol.
    await Promise.all([
      writeFlush(a, [trade(130, 99, 1, 9001, 'XA')]),
      writeFlush(b, [trade(130, 1, 1, 9002, 'XB')]),
    ]);
    await waitUntil(async () => (await backlog(c)) === 0, 'the outbox to drain', { timeoutMs: 30_000 });
    await Promise.all([a.questdb!.idle(), b.questdb!.idle()]);

    expect(c.standin.maxInFlightWrites).toBe(1);
    const bars = await closedBars(c);
    expect(bars.length).toBeGreaterThan(100);
    expect(storedBars(c)).toEqual(
      new Map(bars.map((r) => [`${r.symbol}|${r.tf}|${r.start}`, { rev: r.rev, trades: BigInt(r.trades) }])),
    );
    // The late trades amended the closed second and minute of each symbol, and QuestDB has the amendments.
    expect(bars.filter((r) => r.late > 0).map((r) => `${r.symbol} ${r.tf} ${r.high}`)).toEqual([
      'XA 1s 99',
      'XA 1m 99',
      'XB 1s 10.3',
      'XB 1m 10.4',
    ]);
  }, 60_000);
});

describe('bars outbox in PostgreSQL (BarStore)', () => {
  it('marks a bar synced only at the rev that was sent, and skips a bar a writer holds locked', async () => {
    const c = await setup({ conf: false });
    const sink = await sinkFor(c);
    await writeFlush(sink, SEQUENCE);
    const sent = await withClient(c.pool, (cl) => c.store.unsyncedBars(cl, 10));
    expect(sent.map((b) => b.start)).toEqual([T0, T0 + 1000n * MS]);
    expect(sent[0]!.rev).toBeLessThan(sent[1]!.rev); // oldest change first

    const schema = `"${c.config.postgres.schema}"`;
    // The second bar changes after it was read: its new rev stays in the outbox.
    await c.pool.query(
      `UPDATE ${schema}.bars SET rev = nextval('${schema}.bars_rev') WHERE start_ns = $1 AND tf = '1s'`,
      [(T0 + 1000n * MS).toString()],
    );
    // The first is held by a bars writer's open transaction: skipped, not waited for.
    const writer = await c.pool.connect();
    try {
      await writer.query('BEGIN');
      await writer.query(`SELECT 1 FROM ${schema}.bars WHERE start_ns = $1 AND tf = '1s' FOR UPDATE`, [
        T0.toString(),
      ]);
      expect(await withClient(c.pool, (cl) => c.store.markSynced(cl, sent))).toBe(0);
      await writer.query('ROLLBACK');
    } finally {
      writer.release();
    }
    expect(await withClient(c.pool, (cl) => c.store.markSynced(cl, sent))).toBe(1);
    const left = await withClient(c.pool, (cl) => c.store.unsyncedBars(cl, 10));
    expect(left.map((b) => b.start)).toEqual([T0 + 1000n * MS]);
    expect(left[0]!.rev).toBeGreaterThan(sent[1]!.rev);
  });
});
