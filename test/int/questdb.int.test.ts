import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { STATUS_SECTIONS } from '../../cli/commands/status.ts';
import { listDeadLetters } from '../../consumers/deadletters.ts';
import { QuestDbSink, YIELD_EVERY_ROWS } from '../../consumers/sinks/questdb.ts';
import { createIlpSender } from '../../shared/questdb.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey, type Tick } from '../../shared/model.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';
import { QuestDbStandin, type IlpRow } from '../helpers/questdb-standin.ts';
import { pendingTotal, produceTicks } from '../helpers/streams.ts';

/**
 * The hot writer against the QuestDB stand-in (test/helpers/questdb-standin.ts), and under the GroupWorker
 * with real Redis streams. The real server is exercised by questdb-real.int.test.ts.
 */

const standins: QuestDbStandin[] = [];
const sinks: QuestDbSink[] = [];
const workers: GroupWorker[] = [];
const open: RedisClient[] = [];
const prefixes: string[] = [];

afterEach(async () => {
  for (const w of workers.splice(0)) await w.close().catch(() => undefined);
  for (const s of sinks.splice(0)) await s.close().catch(() => undefined);
  for (const s of standins.splice(0)) await s.stop();
  const cleaner = open[0];
  if (cleaner !== undefined) for (const p of prefixes.splice(0)) await cleanupPrefix(cleaner, p);
  for (const r of open.splice(0)) await closeRedis(r);
});

async function standin(options: Parameters<typeof QuestDbStandin.start>[0] = {}): Promise<QuestDbStandin> {
  const s = await QuestDbStandin.start(options);
  standins.push(s);
  return s;
}

/** Short client timeouts so that failures reach the worker quickly. */
const FAST = 'retry_timeout=200;request_timeout=1000;';

function setup(s: QuestDbStandin, extraConf = FAST): { config: Config; sink: QuestDbSink } {
  const config = testConfig({
    questdb: {
      clientConf: s.clientConf(extraConf),
      tablePrefix: `${uniqueName('q')}_`,
      startTimeoutMs: 2000,
    },
  });
  prefixes.push(config.streams.prefix);
  const sink = new QuestDbSink({ settings: config.questdb, log: silentLogger() });
  sinks.push(sink);
  return { config, sink };
}

const T0 = 1_763_712_000_123_456_789n; // 2025-11-21T08:00:00.123456789Z

const BATCH: Tick[] = [
  {
    type: 'trade',
    source: 'syn',
    symbol: 'AAPL',
    ts: T0,
    seq: 1,
    venue: 'XNAS',
    price: 187.25,
    size: 100,
    side: 'buy',
  },
  {
    type: 'quote',
    source: 'syn',
    symbol: 'MSFT',
    ts: T0 + 1n,
    seq: 2,
    venue: '',
    bidPrice: 410.1,
    bidSize: 5,
    askPrice: 410.12,
    askSize: 7,
  },
  {
    type: 'trade',
    source: 'syn',
    symbol: 'BRK A',
    ts: T0 + 1_000n,
    seq: 3,
    venue: '',
    price: 0.1,
    size: 0,
    side: '',
  },
];

function redisFor(config: Config, blocking = false): RedisClient {
  const r = testRedis(config, blocking);
  open.push(r);
  return r;
}

function startWorker(config: Config, sink: QuestDbSink, group = uniqueName('hot')): GroupWorker {
  const worker = new GroupWorker({
    redis: redisFor(config),
    blocking: redisFor(config, true),
    layout: config.streams,
    group,
    consumer: uniqueName('c'),
    sink,
    settings: { ...config.consumer, batchSize: 4 },
    log: silentLogger(),
  });
  workers.push(worker);
  return worker;
}

function rowKey(r: IlpRow): string {
  return `${r.symbols.source}|${r.symbols.symbol}|${r.ts}|${r.fields.seq?.text.replace(/i$/, '')}`;
}

/** Identities of the rows the stand-in holds after DEDUP, both tables, duplicates included, sorted. */
function storedKeys(s: QuestDbStandin, sink: QuestDbSink): string[] {
  return [...s.storedRows(sink.tables.trades), ...s.storedRows(sink.tables.quotes)].map(rowKey).sort();
}

describe('QuestDB hot writer against the stand-in', () => {
  it('sends the exact ILP lines for a known batch in one request (protocol 1, nanosecond precision)', async () => {
    const s = await standin();
    const { sink } = setup(s, `protocol_version=1;${FAST}`);
    await sink.start();
    await sink.write(BATCH);
    await sink.flush();

    const t = sink.tables;
    expect(s.writes).toEqual([{ query: '?precision=n', bytes: expect.any(Number), status: 204, rows: 3 }]);
    expect(s.rows.map((r) => r.text)).toEqual([
      `${t.trades},source=syn,symbol=AAPL,venue=XNAS,side=buy seq=1i,price=187.25,size=100 1763712000123456789`,
      `${t.quotes},source=syn,symbol=MSFT seq=2i,bid_price=410.1,bid_size=5,ask_price=410.12,ask_size=7 1763712000123456790`,
      `${t.trades},source=syn,symbol=BRK\\ A seq=3i,price=0.1,size=0 1763712000123457789`,
    ]);
    // Unsuffixed designated timestamps are read in the request's precision: nanoseconds, to the digit.
    expect(s.rows.map((r) => r.ts)).toEqual([T0, T0 + 1n, T0 + 1_000n]);
    expect(s.rows[2]!.symbols.symbol).toBe('BRK A');
  });

  it('protocol 2: doubles arrive bit-exact, integers as i, the designated timestamp with the n (ns) suffix', async () => {
    const s = await standin({ protocolVersions: [1, 2] });
    const { sink } = setup(s);
    await sink.start();
    await sink.write(BATCH);
    await sink.flush();

    const [trade, quote] = s.rows;
    expect(trade!.symbols).toEqual({ source: 'syn', symbol: 'AAPL', venue: 'XNAS', side: 'buy' });
    expect(trade!.fields).toEqual({
      seq: { type: 'int', value: 1n, text: '1i' },
      price: { type: 'float', value: 187.25, text: '187.25' },
      size: { type: 'float', value: 100, text: '100' },
    });
    expect(trade!.text.endsWith(' 1763712000123456789n')).toBe(true);
    expect(trade!.ts).toBe(T0);
    expect(quote!.fields.bid_price).toEqual({ type: 'float', value: 410.1, text: '410.1' });
    expect(quote!.fields.ask_price).toEqual({ type: 'float', value: 410.12, text: '410.12' });
    expect(quote!.symbols.venue).toBeUndefined(); // '' is NULL, not an empty symbol
    expect(s.rows[2]!.ts).toBe(T0 + 1_000n);
  });

  it('creates both tables up front: SYMBOL columns, TIMESTAMP_NS designated ts, DAY partitions, WAL, DEDUP keys', async () => {
    const s = await standin({ version: '9.1.0' });
    const { config, sink } = setup(s);
    await sink.start();
    // A second writer (or a restart) runs the same statements: IF NOT EXISTS makes them harmless.
    const again = new QuestDbSink({ settings: config.questdb, log: silentLogger() });
    sinks.push(again);
    await again.start();

    const creates = s.execs.filter((q) => q.startsWith('CREATE TABLE'));
    expect(creates).toHaveLength(4);
    for (const q of creates) {
      expect(q).toMatch(/^CREATE TABLE IF NOT EXISTS \w+ \( ts TIMESTAMP_NS, source SYMBOL/);
      expect(q).toContain('symbol SYMBOL');
      expect(q).toContain('venue SYMBOL');
      expect(q).toMatch(/TIMESTAMP\(ts\) PARTITION BY DAY WAL DEDUP UPSERT KEYS\(ts, source, symbol, seq\)$/);
    }
    expect(s.tableDef(sink.tables.trades)?.upsertKeys).toEqual(['ts', 'source', 'symbol', 'seq']);
    expect(s.tableDef(sink.tables.trades)?.columns.find((c) => c.name === 'side')?.type).toBe('SYMBOL');
    expect(sink.timestampType).toBe('TIMESTAMP_NS');
  });

  it('falls back to microsecond TIMESTAMP on servers older than 9.1, and when the version is unknown', async () => {
    const old = await standin({ version: '8.2.3' });
    const a = setup(old);
    await a.sink.start();
    expect(a.sink.timestampType).toBe('TIMESTAMP');
    expect(old.execs.some((q) => q.includes('TIMESTAMP_NS'))).toBe(false);

    const unknown = await standin({ version: '8.2.3' });
    unknown.onExec = (sql) =>
      sql === 'select build()'
        ? { status: 400, body: { error: 'unknown function build', position: 7 } }
        : undefined;
    const b = setup(unknown);
    await b.sink.start();
    expect(b.sink.timestampType).toBe('TIMESTAMP');
    // It tried nanoseconds first, was refused, then created the tables in microseconds.
    expect(
      unknown.execs.filter((q) => q.startsWith('CREATE TABLE')).map((q) => /ts (\w+),/.exec(q)?.[1]),
    ).toEqual(['TIMESTAMP_NS', 'TIMESTAMP', 'TIMESTAMP']);
    // Whatever the column unit, the client always sends nanoseconds: no 1970.
    await b.sink.write(BATCH);
    await b.sink.flush();
    expect(unknown.rows[0]!.ts).toBe(T0);
  });

  it('refuses to start on an existing table without the dedup keys, naming the fix', async () => {
    const s = await standin();
    const { config, sink } = setup(s);
    const name = `${config.questdb.tablePrefix}trades`;
    const res = await fetch(
      `${s.url}/exec?query=${encodeURIComponent(`CREATE TABLE ${name} (ts TIMESTAMP, source SYMBOL, symbol SYMBOL, seq LONG) TIMESTAMP(ts) PARTITION BY DAY WAL`)}`,
    );
    expect(res.status).toBe(200);
    await expect(sink.start()).rejects.toThrow(
      `ALTER TABLE ${name} DEDUP ENABLE UPSERT KEYS(ts, source, symbol, seq)`,
    );
  });

  it('close() flushes what is staged before closing the client', async () => {
    const s = await standin();
    const { sink } = setup(s);
    await sink.start();
    await sink.write(BATCH);
    expect(s.rows).toHaveLength(0);
    await sink.close();
    expect(s.rows).toHaveLength(3);
    expect(sink.stats).toMatchObject({ rows: 3, flushes: 1 });
  });

  it('a large batch lets the event loop turn while it is encoded (timers, /healthz), and every row is sent', async () => {
    const s = await standin();
    // A megabyte for the stand-in to parse: more than FAST's 200 ms, which the client applies to the whole request.
    const { sink } = setup(s, 'retry_timeout=20000;request_timeout=20000;');
    await sink.start();
    const n = 3 * YIELD_EVERY_ROWS;
    const ticks: Tick[] = Array.from({ length: n }, (_, i) => ({
      ...(BATCH[0] as Extract<Tick, { type: 'trade' }>),
      ts: T0 + BigInt(i),
      seq: i + 1,
    }));
    // Scheduled before the write: it can only run if write() gives the loop a turn before it resolves.
    let fired = false;
    const timer = setTimeout(() => (fired = true), 0);
    let turnsDuringWrite = false;
    await sink.write(ticks).then(() => (turnsDuringWrite = fired));
    clearTimeout(timer);
    expect(turnsDuringWrite).toBe(true);
    await sink.flush();
    expect(s.rows).toHaveLength(n);
    expect(new Set(s.rows.map((r) => r.ts)).size).toBe(n);
  });

  it('serialises flushes: a second batch waits for the first request to be answered', async () => {
    const s = await standin();
    s.writeDelayMs = 100;
    const { sink } = setup(s);
    await sink.start();
    // Called without awaiting, as a careless caller would: they still run one after the other.
    const calls = [sink.write(BATCH.slice(0, 1)), sink.flush(), sink.write(BATCH.slice(1)), sink.flush()];
    await Promise.all(calls);
    expect(s.maxInFlightWrites).toBe(1);
    expect(s.writes.map((w) => w.rows)).toEqual([1, 2]);
  });

  it('after a failed flush the buffer is reset: the retry sends exactly the batch again', async () => {
    const s = await standin();
    const { sink } = setup(s);
    await sink.start();

    s.failWrites(400, 1);
    await sink.write(BATCH);
    await expect(sink.flush()).rejects.toMatchObject({ name: 'SinkError', retriable: false });
    s.dropConnections(1);
    await sink.write(BATCH);
    await expect(sink.flush()).rejects.toMatchObject({ name: 'SinkError', retriable: true });

    await sink.write(BATCH);
    await sink.flush();
    expect(s.writes.at(-1)).toMatchObject({ status: 204, rows: 3 });
    expect(s.rows).toHaveLength(3);
  });

  it("a table missing under the writer is not the ticks' fault: retriable, and the DDL runs again first", async () => {
    const s = await standin();
    const { sink } = setup(s);
    await sink.start();
    const creates = () => s.execs.filter((q) => q.startsWith('CREATE TABLE')).length;
    expect(creates()).toBe(2);
    s.failWrites(400, 1, `\nerror in line 1: table: ${sink.tables.trades}; table does not exist`);
    await sink.write(BATCH);
    await expect(sink.flush()).rejects.toMatchObject({ retriable: true });
    await sink.write(BATCH);
    await sink.flush();
    expect(creates()).toBe(4);
    expect(s.rows).toHaveLength(3);
  });

  it('classifies 5xx and refused connections as retriable and gives up a stuck request', async () => {
    const s = await standin();
    const { sink } = setup(s);
    await sink.start();
    s.failWrites(503);
    await sink.write(BATCH);
    await expect(sink.flush()).rejects.toMatchObject({ retriable: true });
    s.recover();
    await s.pause();
    await sink.write(BATCH);
    await expect(sink.flush()).rejects.toMatchObject({ retriable: true });
    await s.resume();
    await sink.write(BATCH);
    await sink.flush();
    expect(s.rows).toHaveLength(3);
  });

  it('flush timeout: the client gets TICKSTREAM_QDB_FLUSH_TIMEOUT_MS as its request and retry budget, unless the string sets them', async () => {
    const s = await standin();
    const mine = await createIlpSender(s.clientConf(), silentLogger(), { flushTimeoutMs: 1234 });
    expect(mine.options).toMatchObject({ request_timeout: 1234, retry_timeout: 1234, auto_flush: false });
    const theirs = await createIlpSender(
      s.clientConf('request_timeout=7000;retry_timeout=300;'),
      silentLogger(),
      {
        flushTimeoutMs: 1234,
      },
    );
    expect(theirs.options).toMatchObject({ request_timeout: 7000, retry_timeout: 300 });
    await mine.sender.close();
    await theirs.sender.close();
  });

  it('after an outage, /ping is probed before the batch is sent again; the error does not repeat its cause', async () => {
    const s = await standin();
    const { sink } = setup(s, ''); // the defaults from TICKSTREAM_QDB_FLUSH_TIMEOUT_MS
    await sink.start();
    await s.pause();
    await sink.write(BATCH);
    const down = (await sink.flush().catch((e: unknown) => e)) as Error;
    expect(down).toMatchObject({ name: 'SinkError', retriable: true });
    expect(down.cause).toBeInstanceOf(Error);
    expect(down.message).not.toContain((down.cause as Error).message);

    // Still down: the probe answers for the batch, which is not sent at all.
    const before = s.writeRequests;
    await sink.write(BATCH);
    await expect(sink.flush()).rejects.toThrow(/ping does not answer/);
    expect(sink.stats.probesFailed).toBe(1);
    await s.resume();
    expect(s.writeRequests).toBe(before);
    // Back: the worker's next retries get the batch through (the client may need one more attempt).
    await waitUntil(async () => {
      await sink.write(BATCH);
      return sink.flush().then(
        () => true,
        () => false,
      );
    }, 'a flush to go through once QuestDB is back');
    expect(storedKeys(s, sink)).toEqual(BATCH.map(tickKey).sort());
  });

  it('under GroupWorker: nothing is acked while the stand-in answers 5xx; everything arrives once after it recovers', async () => {
    const s = await standin();
    const { config, sink } = setup(s);
    const ticks = await produceTicks(config, redisFor(config), 400, {
      symbols: ['AAA', 'BBB', 'CCC', 'DDD'],
      seed: 7,
      frameSize: 25,
    });
    s.failWrites(500);
    const group = uniqueName('hot');
    const worker = startWorker(config, sink, group);
    await worker.start();

    await waitUntil(() => worker.stats.retries >= 3, 'the writer to retry against 5xx');
    expect(worker.stats.acked).toBe(0);
    expect(s.rows).toHaveLength(0);
    expect(await pendingTotal(open[0]!, config, group)).toBeGreaterThan(0);

    s.recover();
    await waitUntil(
      async () =>
        (await pendingTotal(open[0]!, config, group)) === 0 && storedKeys(s, sink).length >= ticks.length,
      'all ticks to arrive',
    );
    expect(storedKeys(s, sink)).toEqual(ticks.map(tickKey).sort()); // once each
    expect(worker.stats.deadLettered).toBe(0);
  });

  it('under GroupWorker: requests stored but whose reply was lost (a 500, a dropped connection) are resent and stored once', async () => {
    const s = await standin({ walLagMs: 50 });
    const { config, sink } = setup(s);
    const ticks = await produceTicks(config, redisFor(config), 400, {
      symbols: ['AAA', 'BBB', 'CCC', 'DDD'],
      seed: 9,
      frameSize: 25,
    });
    s.loseReplies(2, 500);
    const group = uniqueName('hot');
    const worker = startWorker(config, sink, group);
    await worker.start();
    // The client itself resends a request answered 500 (within retry_timeout), the worker one that failed.
    await waitUntil(() => s.writes.filter((w) => w.status === 500).length === 2, 'two replies lost');
    s.loseReplies(1, 'drop');
    await waitUntil(
      async () =>
        (await pendingTotal(open[0]!, config, group)) === 0 && storedKeys(s, sink).length === ticks.length,
      'all ticks stored and acknowledged',
    );
    // The stand-in committed the lost requests' rows: the writer's resends met them, and only the table's
    // DEDUP keys over the identity the writer sends (exact ts, source, symbol, seq) kept them single.
    expect(s.rows.length).toBeGreaterThan(ticks.length);
    expect(storedKeys(s, sink)).toEqual(ticks.map(tickKey).sort());
    expect(worker.stats.deadLettered).toBe(0);
  });

  it('401, 429 and 503 keep the batch for a retry; a 413 (request too large) is split until it fits, nothing lost', async () => {
    const s = await standin();
    const { sink } = setup(s);
    await sink.start();
    for (const status of [401, 429, 503]) {
      s.failWrites(status);
      await sink.write(BATCH);
      await expect(sink.flush(), String(status)).rejects.toMatchObject({ retriable: true });
      s.recover();
    }
    await sink.write(BATCH);
    await sink.flush();
    expect(storedKeys(s, sink)).toEqual(BATCH.map(tickKey).sort());

    const small = await standin({ maxRequestBytes: 1500 });
    const { config, sink: split } = setup(small);
    const ticks = await produceTicks(config, redisFor(config), 300, {
      symbols: ['AAA', 'BBB'],
      seed: 5,
      frameSize: 25,
    });
    const group = uniqueName('hot');
    const worker = startWorker(config, split, group);
    await worker.start();
    await waitUntil(
      async () =>
        (await pendingTotal(open[0]!, config, group)) === 0 &&
        storedKeys(small, split).length === ticks.length,
      'every tick stored in requests that fit',
    );
    expect(small.writes.some((w) => w.status === 413)).toBe(true);
    expect(storedKeys(small, split)).toEqual(ticks.map(tickKey).sort());
    expect(worker.stats.deadLettered).toBe(0);
  });

  it('under GroupWorker: QuestDB unreachable leaves entries pending, and they land once it is back', async () => {
    const s = await standin();
    const { config, sink } = setup(s);
    const group = uniqueName('hot');
    const worker = startWorker(config, sink, group);
    await worker.start();
    await s.pause();
    const ticks = await produceTicks(config, redisFor(config), 200, {
      symbols: ['AAA', 'BBB', 'CCC', 'DDD'],
      seed: 7,
      frameSize: 25,
    });

    await waitUntil(() => worker.stats.retries >= 1, 'a failed flush', { timeoutMs: 10_000 });
    expect(worker.stats.acked).toBe(0);
    expect(await pendingTotal(open[0]!, config, group)).toBeGreaterThan(0);

    await s.resume();
    await waitUntil(
      async () => (await pendingTotal(open[0]!, config, group)) === 0 && s.rows.length >= ticks.length,
      'all ticks to arrive',
    );
    expect(new Set(s.rows.map(rowKey))).toEqual(new Set(ticks.map(tickKey)));
    expect(s.rows).toHaveLength(ticks.length);
  });

  it('under GroupWorker: a 400 for one row dead-letters only that tick', async () => {
    const s = await standin();
    const { config, sink } = setup(s);
    const ticks = await produceTicks(config, redisFor(config), 300, {
      symbols: ['AAA', 'BBB', 'CCC', 'DDD'],
      seed: 7,
      frameSize: 25,
    });
    const bad = ticks[137]!;
    s.rejectRows((r) =>
      r.symbols.source === bad.source && r.fields.seq?.text === `${bad.seq}i`
        ? 'cast error from protocol type: FLOAT to column type: LONG'
        : undefined,
    );
    const group = uniqueName('hot');
    const worker = startWorker(config, sink, group);
    await worker.start();

    await waitUntil(
      // Every tick but the refused one is written (the worker counts dead-lettered ticks apart).
      async () =>
        (await pendingTotal(open[0]!, config, group)) === 0 && worker.stats.ticks >= ticks.length - 1,
      'the run to settle',
    );
    // QuestDB commits per table: the request with the bad row stored the other table's rows anyway, and the
    // resends of the split batch met them; DEDUP kept every tick once.
    expect(s.writes.some((w) => w.status === 400 && w.rows > 0)).toBe(true);
    expect(storedKeys(s, sink)).toEqual(
      ticks
        .filter((t) => t !== bad)
        .map(tickKey)
        .sort(),
    );
    const letters = await listDeadLetters(open[0]!, config.streams, { group });
    expect(letters).toHaveLength(1);
    expect(letters[0]!.kind).toBe('tick');
    expect(letters[0]!.reason).toContain('cast error from protocol type: FLOAT to column type: LONG');
    expect(JSON.parse(letters[0]!.tick!)[4]).toBe(bad.seq);
  });
});

/** Run the CLI without blocking this process's event loop (the stand-in lives in it). */
async function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)('node', ['bin/tickstream.js', ...args], {
      env: { ...process.env, LOG_LEVEL: 'silent', QDB_CLIENT_CONF: '', QDB_HTTP_URL: '', ...env },
      encoding: 'utf8',
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('tickstream sql and status against the QuestDB stand-in', () => {
  it('tickstream sql prints a table, or JSON with --json', async () => {
    const s = await standin();
    const { sink } = setup(s);
    await sink.start();
    const env = { QDB_CLIENT_CONF: s.clientConf() };

    const table = await cli(['sql', 'select * from wal_tables()'], env);
    expect(table.code).toBe(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^name\s+suspended\s+writerTxn\s+sequencerTxn/);
    expect(lines.slice(2).map((l) => l.split(/\s+/)[0])).toEqual([sink.tables.trades, sink.tables.quotes]);
    expect(table.stderr).toContain('2 rows');

    const json = await cli(['sql', '--json', 'select * from wal_tables()'], env);
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ name: sink.tables.trades, suspended: false }),
      expect.objectContaining({ name: sink.tables.quotes, suspended: false }),
    ]);
    expect(s.execs.at(-1)).toBe('select * from wal_tables()');
  });

  it('tickstream sql fails clearly when QuestDB is not configured, unreachable, or rejects the query', async () => {
    const none = await cli(['sql', 'select 1'], {});
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('QuestDB is not configured: set QDB_CLIENT_CONF');

    const s = await standin();
    const bad = await cli(['sql', 'select nonsense'], { QDB_CLIENT_CONF: s.clientConf() });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('QuestDB rejected the query');

    const url = s.url;
    await s.stop();
    const down = await cli(['sql', 'select 1'], { QDB_HTTP_URL: url });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`cannot reach QuestDB at ${url}: ECONNREFUSED`);
  });

  it('status reports a suspended WAL table with the RESUME WAL hint, and leaves the section out without QuestDB', async () => {
    const section = STATUS_SECTIONS.find((x) => x.title.startsWith('QuestDB'))!;
    const s = await standin();
    const { config, sink } = setup(s);
    await sink.start();
    s.suspend(sink.tables.quotes);
    // Accepted by a suspended table (two sequencer transactions), never applied until it is resumed.
    for (let i = 0; i < 2; i++) {
      await sink.write(BATCH);
      await sink.flush();
    }
    expect(s.storedRows(sink.tables.quotes)).toHaveLength(0);
    const deps = { config, redis: redisFor(config), log: silentLogger() };
    const rows = await section.collect(deps);
    expect(rows).toEqual([
      expect.objectContaining({ table: sink.tables.trades, wal: 'ok', hint: '' }),
      expect.objectContaining({
        table: sink.tables.quotes,
        wal: 'SUSPENDED',
        txns_to_apply: 2,
        hint: `ALTER TABLE ${sink.tables.quotes} RESUME WAL (after fixing: disk full (stand-in))`,
      }),
    ]);

    const unconfigured = testConfig();
    expect(await section.collect({ ...deps, config: unconfigured })).toBeUndefined();
  });
});
