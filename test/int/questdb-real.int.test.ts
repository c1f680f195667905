import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { nsToIso } from '../../cli/commands/quote.ts';
import { BarStore } from '../../consumers/bars/store.ts';
import { barStoreSettings, createBarsSink } from '../../consumers/sinks/bars.ts';
import { QuestDbSink, YIELD_EVERY_ROWS } from '../../consumers/sinks/questdb.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { TickSchema, type Quote, type Tick, type Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, withClient, type PgPool } from '../../shared/pg.ts';
import { requireQuestDbHttp, walTables, type QuestDbHttp } from '../../shared/questdb.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import {
  QDB_CLIENT_CONF,
  cleanupPrefix,
  testConfig,
  testRedis,
  uniqueName,
  waitUntil,
} from '../helpers/index.ts';

/**
 * The hot writer against a real QuestDB: runs only when QDB_CLIENT_CONF names one (e.g. after
 * `docker compose up -d questdb`, QDB_CLIENT_CONF="http::addr=localhost:9000;"), and says so when skipped.
 * Tables get a unique prefix and are dropped afterwards.
 */
const TITLE = QDB_CLIENT_CONF
  ? 'QuestDB hot writer against a real server'
  : 'QuestDB hot writer against a real server (skipped: set QDB_CLIENT_CONF to run against a real server)';

const COUNT = 5000;
const SYMBOLS = ['AAA', 'BBB', 'CCC', 'DDD', 'EEE'];

/** A run of ticks of its own (unique source, wall-clock timestamps) for one test. */
function run(): Tick[] {
  return new SyntheticMarket({ symbols: SYMBOLS, seed: 3, source: uniqueName('src') }).next(COUNT);
}

function expected(ticks: readonly Tick[]): { trades: number; quotes: number } {
  const trades = ticks.filter((t) => t.type === 'trade').length;
  return { trades, quotes: ticks.length - trades };
}

describe.skipIf(!QDB_CLIENT_CONF)(TITLE, () => {
  /** Each test's own tables, streams and connections, released after it whatever its outcome. */
  const cleanups: (() => Promise<unknown>)[] = [];

  afterEach(async () => {
    const errors: unknown[] = [];
    for (const cleanup of cleanups.splice(0).reverse())
      await cleanup().catch((err: unknown) => errors.push(err));
    if (errors.length > 0) throw new AggregateError(errors, 'cleaning up after the test failed');
  });

  /** Tables under a prefix no other test uses: whatever a test counts there, it wrote itself. */
  function hot(): { config: Config; http: QuestDbHttp; sink: QuestDbSink } {
    const config = testConfig({
      questdb: { clientConf: QDB_CLIENT_CONF!, tablePrefix: `${uniqueName('it')}_` },
    });
    const http = requireQuestDbHttp(config.questdb);
    const sink = new QuestDbSink({ settings: config.questdb, log: silentLogger() });
    cleanups.push(async () => {
      for (const table of Object.values(sink.tables)) await http.exec(`drop table if exists ${table}`);
    });
    return { config, http, sink };
  }

  const count = async (http: QuestDbHttp, table: string) =>
    Number((await http.exec(`select count() from ${table}`)).dataset[0]?.[0]);

  /** Poll until QuestDB has applied exactly the run's rows to both tables. */
  async function holds(http: QuestDbHttp, sink: QuestDbSink, ticks: readonly Tick[]): Promise<void> {
    const want = expected(ticks);
    await waitUntil(
      async () =>
        (await count(http, sink.tables.trades)) === want.trades &&
        (await count(http, sink.tables.quotes)) === want.quotes,
      `QuestDB to apply ${want.trades} trades and ${want.quotes} quotes`,
      { timeoutMs: 60_000, intervalMs: 250 },
    );
  }

  /** Write a run through a sink of its own, one ILP request per 1000 ticks, and close it (flushes). */
  async function land(config: Config, ticks: readonly Tick[]): Promise<void> {
    const sink = new QuestDbSink({ settings: config.questdb, log: silentLogger() });
    try {
      await sink.start();
      for (let i = 0; i < ticks.length; i += 1000) {
        await sink.write(ticks.slice(i, i + 1000));
        await sink.flush();
      }
    } finally {
      await sink.close();
    }
  }

  /** WAL applied: every transaction the sequencer accepted is in the table. */
  async function applied(http: QuestDbHttp, sink: QuestDbSink): Promise<boolean> {
    const ours = new Set(Object.values(sink.tables));
    const states = (await walTables(http)).filter((t) => ours.has(t.name));
    return states.length === 2 && states.every((t) => !t.suspended && t.writerTxn === t.sequencerTxn);
  }

  it('creates both tables with the exchange time as designated timestamp and dedup on the tick identity', async () => {
    const { http, sink } = hot();
    await sink.start();
    cleanups.push(() => sink.close());
    for (const table of Object.values(sink.tables)) {
      const columns = await http.rows(`select * from table_columns('${table}')`);
      const byName = new Map(columns.map((c) => [String(c.column), c]));
      expect(byName.get('ts')?.designated).toBe(true);
      expect(['TIMESTAMP', 'TIMESTAMP_NS']).toContain(byName.get('ts')?.type);
      for (const s of ['source', 'symbol', 'venue']) expect(byName.get(s)?.type).toBe('SYMBOL');
      for (const k of ['ts', 'source', 'symbol', 'seq']) expect(byName.get(k)?.upsertKey).toBe(true);
    }
    const tables = await http.rows('select * from tables()');
    for (const table of Object.values(sink.tables)) {
      const t = tables.find((r) => r.table_name === table);
      expect(t?.walEnabled).toBe(true);
      expect(t?.partitionBy).toBe('DAY');
    }
  });

  it('lands a produced run through the worker with exact counts and exact timestamps', async () => {
    const { config, http, sink } = hot();
    const redis = testRedis(config);
    const blocking = testRedis(config, true);
    cleanups.push(async () => {
      await cleanupPrefix(redis, config.streams.prefix);
      await closeRedis(blocking);
      await closeRedis(redis);
    });
    const ticks = run();
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    await publisher.publish(ticks);
    await publisher.flush();
    const group = uniqueName('hot');
    const worker = new GroupWorker({
      redis,
      blocking,
      layout: config.streams,
      group,
      consumer: uniqueName('c'),
      sink,
      settings: config.consumer,
      log: silentLogger(),
    });
    cleanups.push(() => worker.close()); // closes the sink too
    await worker.start();
    await waitUntil(
      async () => {
        let pending = 0;
        for (const s of allStreamKeys(config.streams))
          pending += Number(((await redis.call('XPENDING', s, group)) as [number])[0]);
        return worker.stats.ticks >= COUNT && pending === 0;
      },
      'the worker to acknowledge the run',
      { timeoutMs: 60_000 },
    );
    await holds(http, sink, ticks);

    const trade = ticks.find((t): t is Trade => t.type === 'trade')!;
    const [row] = await http.rows(
      `select ts from ${sink.tables.trades} where source = '${trade.source}' and seq = ${trade.seq}`,
    );
    const got = String(row?.ts);
    const iso = nsToIso(trade.ts.toString());
    // Microsecond prefix always matches (never 1970); all nine digits whenever the column is TIMESTAMP_NS,
    // over every ILP protocol version (the designated timestamp travels in nanoseconds in each of them).
    expect(got.slice(0, 26)).toBe(iso.slice(0, 26));
    if (sink.timestampType === 'TIMESTAMP_NS') expect(got).toBe(iso);
  });

  it('a batch long enough for write() to yield several times lands in one request, every row once and exact', async () => {
    const { http, sink } = hot();
    const ticks = new SyntheticMarket({ symbols: SYMBOLS, seed: 5, source: uniqueName('src') }).next(
      3 * YIELD_EVERY_ROWS + 17,
    );
    await sink.start();
    cleanups.push(() => sink.close());
    await sink.write(ticks);
    await sink.flush();
    expect(sink.stats).toMatchObject({ rows: ticks.length, flushes: 1, failedFlushes: 0 });
    await holds(http, sink, ticks);
    const one = async (sql: string) => Number((await http.exec(sql)).dataset[0]?.[0]);
    for (const [table, type] of [
      [sink.tables.trades, 'trade'],
      [sink.tables.quotes, 'quote'],
    ] as const) {
      const want = ticks.filter((t) => t.type === type);
      expect(await one(`select count() from (select distinct ts, seq from ${table})`)).toBe(want.length);
      expect(await one(`select sum(seq) from ${table}`)).toBe(want.reduce((n, t) => n + t.seq, 0));
    }
  });

  it('every field lands exactly as the tick holds it: escapes, non-ASCII text, empty venue and side, awkward doubles', async () => {
    // The writer builds its ILP rows itself (shared/ilp.ts, ADR 0017): what QuestDB stores is the contract.
    const { http, sink } = hot();
    const source = uniqueName('src');
    const t0 = BigInt(Date.now()) * 1_000_000n + 123_457n;
    const awkward = 'A B,C=D\\E"F';
    const ticks: Tick[] = [
      {
        type: 'trade',
        source,
        symbol: awkward,
        ts: t0,
        seq: 1,
        venue: 'Börse Zürich',
        price: 0.1 + 0.2,
        size: 1e-9,
        side: 'buy',
      },
      {
        type: 'trade',
        source,
        symbol: '株式',
        ts: t0 + 1n,
        seq: 2,
        venue: '',
        price: 123_456_789.123,
        size: 2 ** 49 + 0.5,
        side: '',
      },
      {
        type: 'trade',
        source,
        symbol: '😀x',
        ts: t0 + 2n,
        seq: Number.MAX_SAFE_INTEGER,
        venue: 'a=b, c',
        price: 1e15,
        size: 0,
        side: 'sell',
      },
      {
        type: 'quote',
        source,
        symbol: awkward,
        ts: t0 + 3n,
        seq: 3,
        venue: '',
        bidPrice: 187.25,
        bidSize: 1 / 3,
        askPrice: 187.26,
        askSize: 1e-9,
      },
      {
        type: 'quote',
        source,
        symbol: 'Ünïcødé',
        ts: t0 + 4n,
        seq: 4,
        venue: 'X\\Y',
        bidPrice: 1e-9,
        bidSize: 1e15,
        askPrice: 0.7 * 3,
        askSize: 42,
      },
    ].map((t) => TickSchema.parse(t));
    await sink.start();
    cleanups.push(() => sink.close());
    await sink.write(ticks);
    await sink.flush();
    expect(sink.stats).toMatchObject({ rows: ticks.length, flushes: 1, failedFlushes: 0 });
    await holds(http, sink, ticks);
    const tsOf = (ns: bigint) => {
      const iso = nsToIso(ns.toString());
      return sink.timestampType === 'TIMESTAMP_NS' ? iso : `${iso.slice(0, 26)}Z`;
    };
    // The columns both tables have, as QuestDB returns them: an empty symbol is NULL.
    const identity = (t: Tick) => ({
      ts: tsOf(t.ts),
      source,
      symbol: t.symbol,
      venue: t.venue === '' ? null : t.venue,
      seq: t.seq,
    });
    const trades = await http.rows(
      `select ts, source, symbol, venue, seq, price, size, side from ${sink.tables.trades} where source = '${source}' order by seq`,
    );
    expect(trades).toEqual(
      ticks
        .filter((t): t is Trade => t.type === 'trade')
        .map((t) => ({
          ...identity(t),
          price: t.price,
          size: t.size,
          side: t.side === '' ? null : t.side,
        })),
    );
    const quotes = await http.rows(
      `select ts, source, symbol, venue, seq, bid_price, bid_size, ask_price, ask_size from ${sink.tables.quotes} where source = '${source}' order by seq`,
    );
    expect(quotes).toEqual(
      ticks
        .filter((t): t is Quote => t.type === 'quote')
        .map((t) => ({
          ...identity(t),
          bid_price: t.bidPrice,
          bid_size: t.bidSize,
          ask_price: t.askPrice,
          ask_size: t.askSize,
        })),
    );
  });

  it('replaying the same run adds no rows (DEDUP UPSERT KEYS)', async () => {
    const { config, http, sink } = hot();
    const ticks = run();
    await land(config, ticks);
    await holds(http, sink, ticks);

    await land(config, ticks);
    // Every request of the replay was answered, so its transactions are in the sequencer: once the table has
    // applied them all, a second copy of any row would be visible.
    await waitUntil(() => applied(http, sink), 'the replay to be applied', {
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    const want = expected(ticks);
    expect(await count(http, sink.tables.trades)).toBe(want.trades);
    expect(await count(http, sink.tables.quotes)).toBe(want.quotes);
  });

  it('SAMPLE BY 1m returns OHLCV bars that add up to the trades', async () => {
    const { config, http, sink } = hot();
    const ticks = run();
    await land(config, ticks);
    await holds(http, sink, ticks);
    const bars = await http.rows(
      `select ts, symbol, first(price) open, max(price) high, min(price) low, last(price) close, ` +
        `sum(size) volume, count() n from ${sink.tables.trades} sample by 1m`,
    );
    expect(bars.length).toBeGreaterThan(0);
    for (const b of bars) {
      const [open, high, low, close] = [b.open, b.high, b.low, b.close].map(Number) as [
        number,
        number,
        number,
        number,
      ];
      expect(low).toBeLessThanOrEqual(Math.min(open, close));
      expect(high).toBeGreaterThanOrEqual(Math.max(open, close));
    }
    expect(bars.reduce((n, b) => n + Number(b.n), 0)).toBe(expected(ticks).trades);
  });

  it('runs every documented example query (infra/questdb/queries.sql) on the tables', async () => {
    const { config, http, sink } = hot();
    const ticks = run();
    await land(config, ticks);
    await holds(http, sink, ticks);
    const text = readFileSync(new URL('../../infra/questdb/queries.sql', import.meta.url), 'utf8');
    const statements = text
      .split('\n')
      .filter((l) => !l.trimStart().startsWith('--'))
      .join('\n')
      .split(';')
      .map((s) => s.trim())
      .filter((s) => s.length > 0)
      .map((s) => s.replace(/\btrades\b/g, sink.tables.trades).replace(/\bquotes\b/g, sink.tables.quotes));
    expect(statements.length).toBeGreaterThanOrEqual(5);
    for (const sql of statements) await expect(http.exec(sql), sql).resolves.toBeDefined();
    const latest = await http.rows(statements[0]!);
    expect(latest.length).toBe(SYMBOLS.length); // one per symbol
  });
});

const BARS_TITLE = QDB_CLIENT_CONF
  ? 'bars into a real QuestDB through the outbox'
  : 'bars into a real QuestDB through the outbox (skipped: set QDB_CLIENT_CONF to run against a real server)';

describe.skipIf(!QDB_CLIENT_CONF)(BARS_TITLE, () => {
  const T0 = 1_699_999_980_000_000_000n; // 2023-11-14T22:13:00Z
  const MS = 1_000_000n;
  const trade = (ms: number, price: number, size: number, seq: number): Trade => ({
    type: 'trade',
    source: 'S',
    symbol: 'AAA',
    ts: T0 + BigInt(ms) * MS,
    seq,
    venue: '',
    price,
    size,
    side: '',
  });
  let config: Config;
  let http: QuestDbHttp;
  let redis: RedisClient;
  let pool: PgPool;
  let table: string;

  beforeAll(() => {
    const prefix = uniqueName('itb');
    config = testConfig({
      questdb: { clientConf: QDB_CLIENT_CONF!, tablePrefix: `${prefix}_` },
      postgres: { schema: uniqueName('qbars'), timescale: 'off', partitionsAhead: 0 },
      bars: {
        keyPrefix: `${prefix}:bar:`,
        allowedLatenessMs: 500,
        timeframes: ['1s', '1m'],
        questdbIntervalMs: 200,
      },
    });
    table = `${prefix}_bars`;
    http = requireQuestDbHttp(config.questdb);
    redis = testRedis(config);
    pool = createPgPool(config.postgres, { log: silentLogger(), max: 1 });
  });

  afterAll(async () => {
    await http.exec(`drop table if exists ${table}`).catch(() => undefined);
    await pool.query(`DROP SCHEMA IF EXISTS "${config.postgres.schema}" CASCADE`);
    await closePgPool(pool);
    await cleanupPrefix(redis, config.streams.prefix);
    await cleanupPrefix(redis, config.bars.keyPrefix);
    await closeRedis(redis);
  });

  it('closed bars land once each, at their newest rev (a late trade amends one), with the bar start as designated timestamp', async () => {
    const store = new BarStore(barStoreSettings(config));
    const sink = await createBarsSink({ config, redis, log: silentLogger() });
    try {
      await sink.start();
      const batches = [
        [trade(100, 10, 100, 1), trade(900, 10.5, 200, 2), trade(300, 9.75, 50, 3)],
        [trade(1200, 10.25, 100, 4), trade(1600, 10.4, 300, 5)],
        [trade(950, 11, 10, 6)], // late: amends the closed first second
        [trade(2700, 10.1, 100, 7), trade(2700, 10.2, 100, 8)],
      ];
      for (const b of batches) {
        await sink.write(b);
        await sink.flush();
      }
      await waitUntil(
        async () => (await withClient(pool, (c) => store.unsyncedBacklog(c))).rows === 0,
        'the outbox to drain',
        { timeoutMs: 60_000, intervalMs: 250 },
      );
    } finally {
      // Closed on failure too: the outbox's timer and its QuestDB client would outlive the test.
      await sink.close();
    }
    const closed = (await withClient(pool, (c) => store.barsInRange(c, { from: 0n, to: 1n << 62n }))).filter(
      (b) => b.closed,
    );
    expect(closed.map((b) => [b.tf, b.start, b.trades, b.late])).toEqual([
      ['1s', T0, 4, 1],
      ['1s', T0 + 1000n * MS, 2, 0],
    ]);

    const want = closed.map((b) => ({
      ts: new Date(Number(b.start / MS)).toISOString().slice(0, 19),
      symbol: b.symbol,
      tf: b.tf,
      rev: Number(b.rev),
      trades: b.trades,
      high: b.high,
    }));
    const got = async () =>
      (await http.rows(`select ts, symbol, tf, rev, trades, high from ${table} order by ts`)).map((r) => ({
        ...r,
        ts: String(r.ts).slice(0, 19),
      }));
    await waitUntil(
      async () => JSON.stringify(await got()) === JSON.stringify(want),
      'QuestDB to apply the bars',
      { timeoutMs: 60_000, intervalMs: 250 },
    );

    const columns = await http.rows(`select * from table_columns('${table}')`);
    const byName = new Map(columns.map((c) => [String(c.column), c]));
    expect(byName.get('ts')).toMatchObject({ designated: true, type: 'TIMESTAMP' });
    for (const k of ['ts', 'symbol', 'tf']) expect(byName.get(k)?.upsertKey).toBe(true);
    // The documented example (docs/questdb.md): latest closed bar per symbol and timeframe.
    const latest = await http.rows(
      `select ts, symbol, tf, open, high, low, close, volume, vwap from ${table} ` +
        `where symbol = 'AAA' latest on ts partition by symbol, tf`,
    );
    expect(latest).toHaveLength(1);
    expect(latest[0]).toMatchObject({ tf: '1s', open: 10.25, close: 10.4, volume: 400 });
  });
});
