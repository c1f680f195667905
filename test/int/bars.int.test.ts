import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Tick, Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, withClient, type PgPool } from '../../shared/pg.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { buildBars, formatScaled, timeframes } from '../../consumers/bars/aggregate.ts';
import { alignRange, batchesOf, rebuildBars } from '../../consumers/bars/rebuild.ts';
import { BarStore, type BarRow } from '../../consumers/bars/store.ts';
import type { BarsSink } from '../../consumers/sinks/bars.ts';
import { barKeyOf, barStoreSettings, createBarsSink, readCurrentBar } from '../../consumers/sinks/bars.ts';
import { RejectedTicksError, type Sink } from '../../consumers/sink.ts';
import { SinkError } from '../../shared/errors.ts';
import { ArchiveSink, readArchive } from '../../consumers/sinks/archive.ts';
import { Publisher } from '../../producers/publisher.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import { mulberry32 } from '../../producers/synthetic.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

const T0 = 1_699_999_980_000_000_000n; // a whole minute
const MS = 1_000_000n;
const log = silentLogger();

function trade(ms: number, price: number, size: number, seq: number, symbol = 'AAA', source = 'S'): Trade {
  return { type: 'trade', source, symbol, ts: T0 + BigInt(ms) * MS, seq, venue: '', price, size, side: '' };
}

const SEQUENCE: Trade[] = [
  trade(100, 10.0, 100, 1),
  trade(900, 10.5, 200, 2),
  trade(300, 9.75, 50, 3),
  trade(1200, 10.25, 100, 4),
  trade(1600, 10.4, 300, 5),
  trade(950, 11.0, 10, 6), // late for second 0
  trade(2700, 10.1, 100, 7),
  trade(2700, 10.2, 100, 8),
];

interface Ctx {
  config: Config;
  redis: RedisClient;
  pool: PgPool;
  schema: string;
}

async function setup(overrides: Parameters<typeof testConfig>[0] = {}): Promise<Ctx> {
  const schema = uniqueName('bars');
  const base = testConfig();
  const config = testConfig({
    ...overrides,
    streams: { prefix: base.streams.prefix, shards: 2 },
    postgres: { schema, timescale: 'off', partitionsAhead: 0 },
    bars: {
      keyPrefix: `${base.streams.prefix}:bar:`,
      allowedLatenessMs: 500,
      timeframes: ['1s', '1m'],
      ...overrides.bars,
    },
  });
  return { config, redis: testRedis(config), pool: createPgPool(config.postgres, { log, max: 4 }), schema };
}

async function teardown(c: Ctx): Promise<void> {
  await withClient(c.pool, (cl) => cl.query(`DROP SCHEMA IF EXISTS "${c.schema}" CASCADE`));
  await closePgPool(c.pool);
  await cleanupPrefix(c.redis, c.config.streams.prefix);
  await closeRedis(c.redis);
}

async function allBars(c: Ctx): Promise<BarRow[]> {
  const store = new BarStore(barStoreSettings(c.config));
  return withClient(c.pool, (cl) => store.barsInRange(cl, { from: 0n, to: 1n << 62n }));
}

/** The parts of a bar that the trades determine (not the delivery statistics or revision). */
function values(r: BarRow) {
  return {
    symbol: r.symbol,
    tf: r.tf,
    start: r.start,
    open: r.open,
    high: r.high,
    low: r.low,
    close: r.close,
    volume: r.volume,
    notional: r.notional,
    vwap: r.vwap,
    trades: r.trades,
    closed: r.closed,
  };
}

async function writeFlush(sink: BarsSink, ticks: readonly Tick[]): Promise<void> {
  await sink.write(ticks);
  await sink.flush();
}

describe('bars sink (PostgreSQL + Redis)', () => {
  // Each test its own schema and keys: no test depends on what another left behind.
  let c: Ctx;
  beforeEach(async () => {
    c = await setup();
  });
  afterEach(async () => teardown(c));

  it('stores the hand-computed bars, with the late trade amending its closed bar, and projects the current bar', async () => {
    const sink = await createBarsSink({ config: c.config, redis: c.redis, log });
    await sink.start();
    // Pub/sub of the current bar: one message per (symbol, tf) per flush that changed the hash.
    const subscriber = testRedis(c.config);
    const messages: Record<string, unknown>[] = [];
    subscriber.on('message', (_channel: string, m: string) =>
      messages.push(JSON.parse(m) as Record<string, unknown>),
    );
    await subscriber.subscribe(barKeyOf(c.config.bars.channelPrefix, 'AAA', '1s'));
    await writeFlush(sink, SEQUENCE.slice(0, 3));
    await writeFlush(sink, SEQUENCE.slice(3, 6));
    await writeFlush(sink, SEQUENCE.slice(6));
    expect(sink.stats).toMatchObject({ applied: 8, duplicates: 0, late: 1 });
    await waitUntil(() => messages.length === 3, 'one 1s message per flush');
    expect(messages.map((m) => [m.start, m.closed, m.trades])).toEqual([
      [T0.toString(), false, '3'],
      [(T0 + 1000n * MS).toString(), false, '2'],
      [(T0 + 2000n * MS).toString(), false, '2'],
    ]);
    expect(messages[2]).toMatchObject({
      symbol: 'AAA',
      tf: '1s',
      open: '10.1',
      close: '10.2',
      volume: '200',
    });
    await subscriber.quit();
    const rows = await allBars(c);
    expect(
      rows.map((r) => [
        r.tf,
        Number((r.start - T0) / MS),
        r.open,
        r.high,
        r.low,
        r.close,
        r.volume,
        r.trades,
        r.late,
        r.closed,
      ]),
    ).toEqual([
      ['1s', 0, 10.0, 11.0, 9.75, 11.0, '360.000000000', 4, 1, true],
      ['1s', 1000, 10.25, 10.4, 10.25, 10.4, '400.000000000', 2, 0, true],
      ['1s', 2000, 10.1, 10.2, 10.1, 10.2, '200.000000000', 2, 0, false],
      ['1m', 0, 10.0, 11.0, 9.75, 10.2, '960.000000000', 8, 0, false],
    ]);
    expect(rows[0]!.vwap).toBeCloseTo(3697.5 / 360, 12);
    expect(rows[3]!.vwap).toBeCloseTo(9872.5 / 960, 12);

    const current = await readCurrentBar(c.redis, c.config.bars.keyPrefix, 'AAA', '1s');
    expect(current).toMatchObject({
      symbol: 'AAA',
      tf: '1s',
      start: (T0 + 2000n * MS).toString(),
      open: '10.1',
      close: '10.2',
      volume: '200',
      trades: '2',
      closed: '0',
    });
    const minute = await readCurrentBar(c.redis, c.config.bars.keyPrefix, 'AAA', '1m');
    expect(minute).toMatchObject({ high: '11', low: '9.75', volume: '960', trades: '8' });

    // A redelivered batch, and the whole sequence replayed, change nothing: not even the revisions.
    await writeFlush(sink, SEQUENCE.slice(3, 6));
    await writeFlush(sink, SEQUENCE);
    expect(await allBars(c)).toEqual(rows);
    expect(sink.stats).toMatchObject({ applied: 8, duplicates: 11 });
    await sink.close();
  });

  it('two consumers flushing the same batch at once merge it exactly once', async () => {
    const a = await createBarsSink({ config: c.config, redis: c.redis, log });
    const b = await createBarsSink({ config: c.config, redis: c.redis, log });
    await Promise.all([a.start(), b.start()]);
    const batch = Array.from({ length: 400 }, (_, i) =>
      trade(60_000 + i * 10, 20 + (i % 7) / 100, 100, 1000 + i, 'CCC'),
    );
    await Promise.all([writeFlush(a, batch), writeFlush(b, batch), writeFlush(a, batch.slice(100, 300))]);
    expect(a.stats.applied + b.stats.applied).toBe(400);
    const minute = (await allBars(c)).find((r) => r.symbol === 'CCC' && r.tf === '1m')!;
    expect(minute.trades).toBe(400);
    expect(minute.volume).toBe('40000.000000000');
    await Promise.all([a.close(), b.close()]);
  });

  it('refuses (dead-letters) a trade beyond the ledger horizon with a reason, and stores the rest', async () => {
    const sink = await createBarsSink({ config: c.config, redis: c.redis, log });
    await sink.start();
    const horizon = c.config.bars.ledgerHorizonMs;
    await writeFlush(sink, [trade(10 * horizon, 30, 1, 1, 'DDD')]);
    await sink.write([
      {
        type: 'quote',
        source: 'S',
        symbol: 'DDD',
        ts: T0,
        seq: 5,
        venue: '',
        bidPrice: 1,
        bidSize: 1,
        askPrice: 2,
        askSize: 1,
      },
      trade(10 * horizon - 2 * horizon, 31, 1, 2, 'DDD'),
      trade(10 * horizon + 1, 32, 1, 3, 'DDD'),
    ]);
    const err = await sink.flush().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RejectedTicksError);
    const rejections = (err as RejectedTicksError).rejections;
    expect(rejections.map((r) => r.index)).toEqual([1]);
    expect(rejections[0]!.reason).toMatch(/beyond the ledger horizon/);
    const ddd = (await allBars(c)).filter((r) => r.symbol === 'DDD' && r.tf === '1m');
    expect(ddd.reduce((n, r) => n + r.trades, 0)).toBe(2);
    await sink.close();
  });

  it('updates open bars in place (HOT): no index of bars covers a column a merge changes (migration 0006)', async () => {
    const sink = await createBarsSink({ config: c.config, redis: c.redis, log });
    await sink.start();
    // Columns of the bars' indexes, their predicates included: PostgreSQL updates a row in place only when
    // none of them changes. An open bar's update changes these (the merge's SET list), never its key.
    const { rows } = await c.pool.query<{ index: string; columns: string[] }>(
      `SELECT (SELECT relname FROM pg_class WHERE oid = i.indexrelid) AS index,
              array(SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = i.indrelid AND a.attnum > 0 AND (
                       a.attnum = ANY(i.indkey)
                       OR pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M'))) AS columns
         FROM pg_index i WHERE i.indrelid = '"${c.schema}".bars'::regclass`,
    );
    const merged = ['open', 'high', 'low', 'close', 'open_ts', 'open_seq', 'open_source', 'close_ts'].concat([
      'close_seq',
      'close_source',
      'volume',
      'notional',
      'vwap',
      'trades',
      'late',
      'rev',
      'updated_at',
    ]);
    expect(rows.map((r) => r.index).sort()).toContain('bars_qdb_outbox');
    for (const r of rows)
      expect({ index: r.index, merged: r.columns.filter((x) => merged.includes(x)) }).toEqual({
        index: r.index,
        merged: [],
      });
    const { rows: opts } = await c.pool.query<{ reloptions: string[] | null }>(
      `SELECT reloptions FROM pg_class WHERE oid = '"${c.schema}".bars'::regclass`,
    );
    expect(opts[0]!.reloptions).toContain('fillfactor=70');

    // And PostgreSQL agrees: the same open bars updated by flush after flush are heap-only updates.
    for (let i = 0; i < 5; i++) await writeFlush(sink, [trade(10 + i, 10 + i, 1, 100 + i)]);
    await sink.close(); // its connections end, which reports their statistics
    await waitUntil(async () => {
      const { rows: st } = await c.pool.query<{ upd: string; hot: string }>(
        `SELECT n_tup_upd::text AS upd, n_tup_hot_upd::text AS hot FROM pg_stat_user_tables
          WHERE schemaname = $1 AND relname = 'bars'`,
        [c.schema],
      );
      // Four updates per timeframe (the first flush inserts); all of them in place.
      return Number(st[0]?.upd) === 8 && Number(st[0]?.hot) === 8;
    }, 'eight updates of open bars, all of them heap-only');
  });
});

describe('bars: rebuild from a tick source equals the live bars', () => {
  let c: Ctx;
  beforeAll(async () => {
    c = await setup({ bars: { timeframes: ['1s', '1m', '5m', '1h'], allowedLatenessMs: 200 } });
  });
  afterAll(async () => teardown(c));

  it('live (arrival order, late trades, redeliveries) == rebuild (archive order) == pure builder', async () => {
    // Three symbols over ~20 minutes; 10% of trades arrive up to 3 s late (beyond the 200 ms lateness).
    const rand = mulberry32(11);
    const trades: Trade[] = [];
    let seq = 0;
    for (let i = 0; i < 6000; i++) {
      const symbol = ['X1', 'X2', 'X3'][Math.floor(rand() * 3)]!;
      trades.push(
        trade(
          i * 200 + Math.floor(rand() * 200),
          Math.round((100 + rand() * 5) * 100) / 100,
          1 + Math.floor(rand() * 900),
          ++seq,
          symbol,
          rand() < 0.5 ? 'A' : 'B',
        ),
      );
    }
    const arrival = trades.map((t, i) => ({
      t,
      at: i * 200 + (rand() < 0.1 ? Math.floor(rand() * 3000) : 0),
    }));
    arrival.sort((a, b) => a.at - b.at);
    const live = arrival.map((a) => a.t);

    const sink = await createBarsSink({ config: c.config, redis: c.redis, log });
    await sink.start();
    for (let i = 0; i < live.length; i += 250) {
      const batch = live.slice(i, i + 250);
      await writeFlush(sink, batch);
      if (i % 1000 === 0) await writeFlush(sink, batch); // redelivery
    }
    await sink.close();
    expect(sink.stats.applied).toBe(6000);
    expect(sink.stats.late).toBeGreaterThan(50);
    const liveRows = await allBars(c);
    expect(liveRows.some((r) => r.late > 0)).toBe(true);

    // The archive reader yields (ts, seq) order; rebuild the whole span in place.
    const archiveOrder = [...trades].sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : a.seq - b.seq));
    const store = new BarStore(barStoreSettings(c.config));
    const range = { from: T0, to: T0 + 1_200_001n * MS };
    const result = await rebuildBars(c.pool, store, batchesOf(archiveOrder, 700), range);
    const aligned = alignRange(range, store.settings.timeframes);
    expect(result).toMatchObject({ trades: 6000, duplicates: 0, from: aligned.from, to: aligned.to });
    const rebuilt = await allBars(c);
    expect(rebuilt.map(values)).toEqual(liveRows.map(values));
    expect(rebuilt.every((r) => r.late === 0)).toBe(true);

    // And both equal the pure builder's bars: exact volumes and notionals, prices equal.
    const pure = buildBars(trades, {
      timeframes: timeframes(['1s', '1m', '5m', '1h']),
      allowedLatenessNs: 0n,
    });
    expect(pure.length).toBe(rebuilt.length);
    pure.forEach((p, i) => {
      const r = rebuilt[i]!;
      expect([r.symbol, r.tf, r.start, r.open, r.high, r.low, r.close, r.trades]).toEqual([
        p.symbol,
        p.tf.name,
        p.start,
        p.open,
        p.high,
        p.low,
        p.close,
        p.trades,
      ]);
      expect(r.volume).toBe(formatScaled(p.volume, 9));
      expect(Number(r.notional)).toBeCloseTo(Number(p.notional) / 1e18, 6);
    });

    // A rebuild of the same range again, with a source holding duplicates, is idempotent.
    const again = await rebuildBars(
      c.pool,
      store,
      batchesOf([...archiveOrder, ...archiveOrder.slice(0, 500)], 900),
      range,
    );
    expect(again.duplicates).toBe(500);
    expect((await allBars(c)).map(values)).toEqual(liveRows.map(values));
  });
});

describe('bars: rebuild from the PostgreSQL archive (readArchive) equals the live bars', () => {
  let c: Ctx;
  beforeAll(async () => {
    c = await setup({ bars: { timeframes: ['1s', '1m', '5m', '1h'], allowedLatenessMs: 100 } });
  });
  afterAll(async () => teardown(c));

  it('archived trades read back in (ts, seq) order rebuild exactly the bars the live sink built', async () => {
    const rand = mulberry32(23);
    const trades: Trade[] = [];
    for (let i = 0; i < 2000; i++) {
      trades.push(
        trade(
          i * 300 + Math.floor(rand() * 300),
          Math.round((40 + rand()) * 100) / 100,
          1 + Math.floor(rand() * 50),
          i + 1,
          rand() < 0.5 ? 'R1' : 'R2',
        ),
      );
    }
    // Live: arrival order with some trades 1-2 s late.
    const live = trades
      .map((t, i) => ({ t, at: i * 300 + (rand() < 0.15 ? 1000 + Math.floor(rand() * 1000) : 0) }))
      .sort((a, b) => a.at - b.at)
      .map((a) => a.t);
    const bars = await createBarsSink({ config: c.config, redis: c.redis, log });
    const archive = new ArchiveSink({ settings: c.config.postgres, log, pool: c.pool });
    await bars.start();
    await archive.start();
    for (let i = 0; i < live.length; i += 400) {
      await writeFlush(bars, live.slice(i, i + 400));
      await archive.write(live.slice(i, i + 400));
      await archive.flush();
    }
    await bars.close();
    await archive.close();
    expect(bars.stats.late).toBeGreaterThan(0);
    const liveRows = await allBars(c);

    const store = new BarStore(barStoreSettings(c.config));
    const range = alignRange({ from: T0, to: T0 + 600_001n * MS }, store.settings.timeframes);
    const source = readArchive(c.pool, c.config.postgres.schema, {
      ...range,
      types: ['trade'],
      batchSize: 333,
    });
    const result = await rebuildBars(c.pool, store, source, { from: T0, to: T0 + 600_001n * MS });
    expect(result.trades).toBe(2000);
    const rebuilt = await allBars(c);
    expect(rebuilt.map(values)).toEqual(liveRows.map(values));
  });
});

describe('bars sink behind the group worker', () => {
  let c: Ctx;
  beforeEach(async () => {
    c = await setup();
  });
  afterEach(async () => teardown(c));

  it('a consumer that dies after its flush committed and before XACK: another claims the batch, nothing is counted twice', async () => {
    const publisher = new Publisher({
      redis: c.redis,
      layout: c.config.streams,
      settings: c.config.producer,
      log,
    });
    await publisher.publish(SEQUENCE);
    await publisher.flush();

    // The dying consumer: its sink commits the bars, then the process is gone (its Redis connections drop, so
    // no XACK and no heartbeat keeping its claim fresh); its flush never returns.
    const deadRedis = testRedis(c.config);
    const deadBlocking = testRedis(c.config, true);
    const inner = await createBarsSink({ config: c.config, redis: c.redis, log });
    let committed = false;
    let release: (err: Error) => void = () => undefined;
    const dying: Sink = {
      name: 'bars',
      start: () => inner.start(),
      write: (ticks) => inner.write(ticks),
      flush: async () => {
        // Whatever the dead worker still tries after the crash fails like a store it can no longer reach.
        if (committed) throw new SinkError('this consumer is dead', { retriable: true });
        await inner.flush();
        committed = true;
        deadRedis.disconnect();
        deadBlocking.disconnect();
        await new Promise<void>((_, reject) => (release = reject));
      },
      close: () => inner.close(),
    };
    const dead = new GroupWorker({
      redis: deadRedis,
      blocking: deadBlocking,
      layout: c.config.streams,
      group: 'bars',
      consumer: 'dies',
      sink: dying,
      settings: c.config.consumer,
      log,
    });
    await dead.start();
    await waitUntil(() => committed, 'the dying consumer committed its batch');
    expect(inner.stats.applied).toBe(8);
    const before = await allBars(c);

    const blocking = testRedis(c.config, true);
    const sink = await createBarsSink({ config: c.config, redis: c.redis, log });
    const rescuer = new GroupWorker({
      redis: c.redis,
      blocking,
      layout: c.config.streams,
      group: 'bars',
      consumer: 'rescuer',
      sink,
      settings: c.config.consumer,
      log,
    });
    try {
      await rescuer.start();
      // The entries stay pending on the dead consumer until idle for claimMinIdleMs; then they are claimed,
      // redelivered, found in the ledger, and acknowledged.
      await waitUntil(async () => {
        const pending = await Promise.all(
          allStreamKeys(c.config.streams).map(
            (s) => c.redis.xpending(s, 'bars') as Promise<[number, ...unknown[]]>,
          ),
        );
        return sink.stats.duplicates === 8 && pending.every((p) => p[0] === 0);
      }, "the dead consumer's batch claimed, redelivered and acknowledged");
      expect(sink.stats.applied).toBe(0);
      expect(await allBars(c)).toEqual(before);
      const minute = before.find((r) => r.tf === '1m')!;
      expect([minute.trades, minute.volume]).toEqual([8, '960.000000000']);
    } finally {
      await rescuer.close();
      await closeRedis(blocking);
      release(new SinkError('the dead consumer is gone', { retriable: true }));
      await Promise.race([dead.close().catch(() => undefined), new Promise((r) => setTimeout(r, 5000))]);
      await closeRedis(deadRedis).catch(() => undefined);
      await closeRedis(deadBlocking).catch(() => undefined);
    }
  });
});
