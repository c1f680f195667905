import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { Redis } from 'ioredis';
import pg from 'pg';
import { closeRedis, pairs } from '../shared/redis.ts';
import { allStreamKeys, compareStreamIds, deadLetterKey } from '../shared/streams.ts';
import { mulberry32, symbolNames } from '../producers/synthetic.ts';
import { generate, scaled, truthOf, writeParts, type Truth } from './dataset.ts';
import { PostgresServer, RedisServer } from './servers.ts';

/**
 * The fault suite (docs/chaos.md). It starts its own redis-server (AOF everysec) and PostgreSQL cluster, runs
 * the real `tickstream` processes against them — consumers for the archive, bars and quotes sinks, and the
 * file producer — and goes through phases, each loading one part of a deterministic data set while one kind of
 * fault hits the pipeline. After each phase it waits for every group to drain and compares the stores with the
 * ground truth of everything loaded so far: row counts, duplicate identities, Σ price × size per symbol, the
 * 1-minute bars' volume and trade count, the newest quote per symbol, and the dead letters.
 */
export type Fault = 'consumer-kills' | 'postgres-restart' | 'redis-restart' | 'producer-kill' | 'poison';
export const ALL_FAULTS: readonly Fault[] = [
  'consumer-kills',
  'postgres-restart',
  'redis-restart',
  'producer-kill',
  'poison',
];

export interface ChaosOptions {
  ticks: number;
  symbols: number;
  seed: number;
  /** Phases in order; each loads one part of the data set. */
  faults: readonly Fault[];
  /** kill -9 of a consumer holding a batch, over the consumer-kills phase. */
  consumerKills: number;
  /** How long PostgreSQL stays down. */
  postgresDownMs: number;
  /** Consumer processes per sink. */
  perSink: number;
  drainTimeoutMs: number;
  /** Progress lines. */
  say: (line: string) => void;
}

export interface Row {
  fault: string;
  /** Ticks loaded so far (trades + quotes). */
  expected: number;
  /** Rows in the archive. */
  stored: number;
  duplicates: number;
  deadLetters: number;
  expectedDeadLetters: number;
  drainMs: number;
  /** consumer-kills: entries left pending on each killed consumer (its batch in hand when it died). */
  heldAtKill: number[];
  problems: string[];
}

const ROOT = join(import.meta.dirname, '..');
const SINKS = ['archive', 'bars', 'quotes'] as const;
const PREFIX = 'chaos';
const SHARDS = 4;
const SCHEMA = 'tickstream';
/**
 * The consumers killed in the consumer-kills phase, with the tables their flush writes: while the suite holds
 * those tables locked, a consumer that read a batch waits in its flush with the batch delivered and not
 * acknowledged, so the kill lands mid-batch for certain. (The quotes sink writes to Redis, which cannot be
 * held without holding the stream reads too; the redis-restart phase hits it instead.)
 */
const HELD: readonly { sink: (typeof SINKS)[number]; tables: readonly string[] }[] = [
  { sink: 'archive', tables: ['trades', 'quotes'] },
  { sink: 'bars', tables: ['bars'] },
];

interface Proc {
  name: string;
  sink: string;
  child: ChildProcess;
  stderr: string;
}

export async function runChaos(o: ChaosOptions): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'tickstream-chaos-'));
  const rand = mulberry32(o.seed ^ 0x5eed);
  let redisServer: RedisServer | undefined;
  let pgServer: PostgresServer | undefined;
  const procs = new Set<Proc>();
  let redis: Redis | undefined;
  let pool: pg.Pool | undefined;
  try {
    o.say(
      `generating ${o.ticks} ticks over ${o.symbols} symbols (seed ${o.seed}) in ${o.faults.length} parts`,
    );
    const ticks = generate(o.ticks, o.symbols, o.seed);
    const parts = await writeParts(dir, ticks, o.faults.length);
    const cli = await bundleCli(dir);
    redisServer = await RedisServer.start({ args: ['--appendonly', 'yes', '--appendfsync', 'everysec'] });
    pgServer = await PostgresServer.start();
    o.say(
      `redis-server on ${redisServer.port} (AOF everysec), PostgreSQL on ${pgServer.port}, files in ${dir}`,
    );
    redis = new Redis(redisServer.url, { maxRetriesPerRequest: null });
    redis.on('error', () => undefined);
    pool = new pg.Pool({ connectionString: pgServer.url, max: 2 });
    pool.on('error', () => undefined);

    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      REDIS_URL: redisServer.url,
      DATABASE_URL: pgServer.url,
      TICKSTREAM_STREAM_PREFIX: PREFIX,
      TICKSTREAM_SHARDS: String(SHARDS),
      TICKSTREAM_PG_SCHEMA: SCHEMA,
      TICKSTREAM_CLAIM_MIN_IDLE_MS: '2000',
      TICKSTREAM_CLAIM_INTERVAL_MS: '500',
      TICKSTREAM_RETRY_MAX_MS: '1000',
      TICKSTREAM_BARS_TIMEFRAMES: '1m',
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'warn',
    };
    let serial = 0;
    const startConsumer = (sink: string): Proc => {
      const name = `${sink}-${++serial}`;
      const child = spawn(process.execPath, [cli, 'consume', sink, '--consumer', name], {
        env,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const p: Proc = { name, sink, child, stderr: '' };
      child.stderr!.on('data', (d: Buffer) => (p.stderr = (p.stderr + d.toString()).slice(-4000)));
      procs.add(p);
      child.once('exit', () => procs.delete(p));
      return p;
    };
    const produce = (path: string): ChildProcess & { done: Promise<number | null> } => {
      const child = spawn(process.execPath, [cli, 'produce', 'file', path], { env, stdio: 'ignore' });
      const done = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      return Object.assign(child, { done });
    };
    const produceOk = async (path: string) => {
      const code = await produce(path).done;
      if (code !== 0) throw new Error(`produce file ${path} exited ${code}`);
    };

    // Groups exist before anything is produced, so the first entries are read by all of them.
    for (const sink of SINKS) for (let i = 0; i < o.perSink; i++) startConsumer(sink);
    await waitFor(
      async () => (await groupNames(redis!)).length === SINKS.length * SHARDS,
      'every consumer group on every shard',
      120_000,
    );

    const rows: Row[] = [];
    const loaded: (typeof ticks)[number][] = [];
    let poison = 0;
    for (const [i, fault] of o.faults.entries()) {
      const part = parts[i]!;
      o.say(`phase ${i + 1}: ${fault} (${part.ticks.length} ticks)`);
      let label: string = fault;
      const heldAtKill: number[] = [];
      if (fault === 'consumer-kills') {
        // The stores of the killed sinks are held locked for the whole round of kills: each victim is a
        // consumer with entries pending on it, stuck in its flush, so it dies with its batch in hand. Its
        // replacement claims those entries (or reads new ones) and is held the same way until it is killed.
        const tables = HELD.flatMap((h) => h.tables.map((t) => `${SCHEMA}.${t}`));
        // The consumers create them as they start (their groups may come first).
        await waitFor(
          async () =>
            (
              await pool!.query<{ n: string }>(
                'SELECT count(to_regclass(t)) AS n FROM unnest($1::text[]) t',
                [tables],
              )
            ).rows[0]!.n === String(tables.length),
          'the stores of the held sinks',
          120_000,
        );
        const holder = await pool.connect();
        let producing: Promise<void> | undefined;
        try {
          await holder.query('BEGIN');
          await holder.query(`LOCK TABLE ${tables.join(', ')} IN EXCLUSIVE MODE`);
          producing = produceOk(part.path);
          producing.catch(() => undefined); // awaited below; a failure of the kills must not leave it unhandled
          for (let k = 0; k < o.consumerKills; k++) {
            const { sink } = HELD[Math.floor(rand() * HELD.length)]!;
            const victim = await waitForValue(
              () => holdingBatch(redis!, procs, sink),
              `a ${sink} consumer holding a batch`,
              120_000,
            );
            const gone = new Promise((r) => victim.child.once('exit', r));
            victim.child.kill('SIGKILL');
            await gone;
            heldAtKill.push(await pendingOn(redis, sink, victim.name));
            startConsumer(sink);
          }
          await holder.query('COMMIT');
          holder.release();
        } catch (err) {
          holder.release(err instanceof Error ? err : true); // the connection goes, and its locks with it
          throw err;
        }
        await producing;
        label = `${o.consumerKills} × consumer kill -9 holding a batch`;
      } else if (fault === 'postgres-restart') {
        const producing = produceOk(part.path);
        await waitFor(
          async () => (await archived(pool!)) > loaded.length,
          'archive rows of this phase',
          60_000,
        );
        await pgServer.stopServer();
        await sleep(o.postgresDownMs);
        await pgServer.startServer();
        await producing;
        label = `PostgreSQL stop -m immediate ${Math.round(o.postgresDownMs / 1000)} s, start`;
      } else if (fault === 'redis-restart') {
        const before = await streamLength(redis);
        const first = produce(part.path);
        await waitFor(async () => (await streamLength(redis!)) > before, 'entries of this phase', 60_000);
        await redisServer.kill();
        await sleep(500);
        await redisServer.start();
        // Writes of the last second may be gone with the AOF's tail; the file is replayable, so load it again.
        await first.done;
        await produceOk(part.path);
        label = 'redis-server kill -9, restart (AOF), rerun the file';
      } else if (fault === 'producer-kill') {
        const before = await streamLength(redis);
        const first = produce(part.path);
        await waitFor(async () => (await streamLength(redis!)) > before + 5, 'entries of this phase', 60_000);
        first.kill('SIGKILL');
        await first.done;
        await produceOk(part.path);
        label = 'producer kill -9 mid-file, rerun';
      } else {
        poison = await injectPoison(redis);
        await produceOk(part.path);
        label = `${poison} poison entries + the file`;
      }
      loaded.push(...part.ticks);
      const truth = truthOf(loaded);
      const started = Date.now();
      await waitFor(() => drained(redis!), `every group to drain after "${label}"`, o.drainTimeoutMs).catch(
        (err: unknown) => o.say(`  ${String(err)}`),
      );
      const drainMs = Date.now() - started;
      const row = await verify(pool, redis, truth, o.symbols, poison * SINKS.length);
      rows.push({ fault: label, drainMs, ...row, heldAtKill });
      if (heldAtKill.length > 0) o.say(`  entries pending on each killed consumer: ${heldAtKill.join(', ')}`);
      o.say(
        `  expected ${loaded.length}, stored ${row.stored}, duplicates ${row.duplicates}, dead letters ${row.deadLetters}/${poison * SINKS.length}, drained in ${drainMs} ms${row.problems.length > 0 ? `; ${row.problems.length} problem(s)` : ''}`,
      );
    }
    return rows;
  } finally {
    const exits = [...procs].map((p) => new Promise((r) => p.child.once('exit', r)));
    for (const p of procs) p.child.kill('SIGKILL');
    await Promise.all(exits);
    if (redis !== undefined) await closeRedis(redis);
    await pool?.end().catch(() => undefined);
    await redisServer?.remove();
    await pgServer?.remove();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The CLI the processes run: the checked-out sources bundled once into `dir` (dependencies stay in
 * node_modules), beside a copy of package.json and a link to infra/ (migrations), which the processes find
 * from their own location. Never a dist/ left by an earlier build, and one compile per run instead of one per
 * process start: through tsx every start transpiled the sources again (about 2 s of CPU each, a dozen starts
 * in the short run), which is what made the run slow on a busy machine.
 */
async function bundleCli(dir: string): Promise<string> {
  const app = join(dir, 'app');
  const main = join(app, 'cli', 'main.js');
  await build({
    entryPoints: [join(ROOT, 'cli', 'main.ts')],
    outfile: main,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'warning',
  });
  copyFileSync(join(ROOT, 'package.json'), join(app, 'package.json'));
  // Links, not copies: removing the run's directory removes the links and leaves their targets alone.
  symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
  symlinkSync(join(ROOT, 'infra'), join(app, 'infra'));
  return main;
}

/** The report: one line per fault phase. */
export function formatRows(rs: readonly Row[]): string {
  const head = ['fault', 'expected', 'stored', 'duplicates', 'dead letters', 'time to drain', 'result'];
  const body = rs.map((r) => [
    r.fault,
    r.expected.toLocaleString('en-US'),
    r.stored.toLocaleString('en-US'),
    String(r.duplicates),
    `${r.deadLetters} (expected ${r.expectedDeadLetters})`,
    `${(r.drainMs / 1000).toFixed(1)} s`,
    r.problems.length === 0 ? 'ok' : `${r.problems.length} difference(s)`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`,
      );
    }
    await sleep(200);
  }
}

/** Poll until `check` returns a value, or fail after `timeoutMs`. */
async function waitForValue<T>(
  check: () => Promise<T | undefined>,
  what: string,
  timeoutMs: number,
): Promise<T> {
  let value: T | undefined;
  await waitFor(
    async () => {
      value = await check();
      return value !== undefined;
    },
    what,
    timeoutMs,
  );
  return value!;
}

/** Entries delivered to `consumer` of the sink's group and not acknowledged, over every shard. */
async function pendingOn(redis: Redis, sink: string, consumer: string): Promise<number> {
  let n = 0;
  for (const k of allStreamKeys({ prefix: PREFIX, shards: SHARDS })) {
    const [, , , consumers] = (await redis.call('XPENDING', k, sink)) as [
      number,
      unknown,
      unknown,
      [string, string][] | null,
    ];
    n += Number(consumers?.find(([name]) => name === consumer)?.[1] ?? 0);
  }
  return n;
}

/** A running consumer of `sink` with entries pending on it: it has a batch in hand. */
async function holdingBatch(redis: Redis, procs: ReadonlySet<Proc>, sink: string): Promise<Proc | undefined> {
  for (const p of procs) {
    if (p.sink === sink && p.child.exitCode === null && (await pendingOn(redis, sink, p.name)) > 0) return p;
  }
  return undefined;
}

async function groupNames(redis: Redis): Promise<string[]> {
  const out: string[] = [];
  for (const k of allStreamKeys({ prefix: PREFIX, shards: SHARDS })) {
    const groups = (await redis.call('XINFO', 'GROUPS', k).catch(() => [])) as unknown[][];
    for (const g of groups) out.push(`${k}/${String(pairs(g).get('name'))}`);
  }
  return out;
}

async function streamLength(redis: Redis): Promise<number> {
  let n = 0;
  for (const k of allStreamKeys({ prefix: PREFIX, shards: SHARDS })) n += await redis.xlen(k);
  return n;
}

/**
 * Every group has been delivered the newest entry of every shard and has nothing pending. Decided from the
 * ids, not from Redis' `lag`, which an AOF reload can leave stale (issue 10, item 3).
 */
async function drained(redis: Redis): Promise<boolean> {
  for (const k of allStreamKeys({ prefix: PREFIX, shards: SHARDS })) {
    const stream = pairs((await redis.call('XINFO', 'STREAM', k)) as unknown[]);
    const last = String(stream.get('last-generated-id'));
    const groups = (await redis.call('XINFO', 'GROUPS', k)) as unknown[][];
    if (groups.length < SINKS.length) return false;
    for (const g of groups) {
      const info = pairs(g);
      if (Number(info.get('pending')) > 0) return false;
      if (compareStreamIds(String(info.get('last-delivered-id')), last) < 0) return false;
    }
  }
  return true;
}

async function archived(pool: pg.Pool): Promise<number> {
  const r = await pool.query<{ n: string }>(
    `SELECT (SELECT count(*) FROM ${SCHEMA}.trades) + (SELECT count(*) FROM ${SCHEMA}.quotes) AS n`,
  );
  return Number(r.rows[0]!.n);
}

/** Entries no consumer can decode: not a frame at all, and a frame whose payload is not JSON. */
async function injectPoison(redis: Redis): Promise<number> {
  let n = 0;
  for (const k of allStreamKeys({ prefix: PREFIX, shards: SHARDS })) {
    await redis.xadd(k, '*', 'junk', 'not a frame');
    await redis.xadd(k, '*', 'v', '1', 'n', '2', 'd', '[["t","chaos",oops');
    n += 2;
  }
  return n;
}

async function verify(
  pool: pg.Pool,
  redis: Redis,
  truth: Truth,
  symbols: number,
  expectedDeadLetters: number,
): Promise<Omit<Row, 'fault' | 'drainMs' | 'heldAtKill'>> {
  const problems: string[] = [];
  const q = async <T extends pg.QueryResultRow>(sql: string) => (await pool.query<T>(sql)).rows;

  let stored = 0;
  let duplicates = 0;
  for (const [table, expected] of [
    ['trades', truth.trades],
    ['quotes', truth.quotes],
  ] as const) {
    const [c] = await q<{ n: string; d: string }>(
      `SELECT count(*) AS n, count(DISTINCT (source, symbol, ts_ns, seq)) AS d FROM ${SCHEMA}.${table}`,
    );
    const n = Number(c!.n);
    stored += n;
    duplicates += n - Number(c!.d);
    if (n !== expected) problems.push(`archive ${table}: ${n} rows, expected ${expected}`);
  }

  const notional = new Map(
    (
      await q<{ symbol: string; s: string }>(
        `SELECT symbol, sum(price * size)::text AS s FROM ${SCHEMA}.trades GROUP BY symbol`,
      )
    ).map((r) => [r.symbol, scaled(r.s, 16)]),
  );
  for (const [symbol, want] of truth.notional) {
    const got = notional.get(symbol);
    if (got !== want) problems.push(`Σ price×size of ${symbol}: ${got ?? 'none'}, expected ${want} (×1e-16)`);
  }

  const bars = await q<{ symbol: string; start_ns: string; volume: string; trades: string }>(
    `SELECT symbol, start_ns::text, volume::text, trades::text FROM ${SCHEMA}.bars WHERE tf = '1m'`,
  );
  const seenBars = new Set<string>();
  for (const b of bars) {
    const key = `${b.symbol}|${b.start_ns}`;
    seenBars.add(key);
    const wantTrades = truth.barTrades.get(key) ?? 0;
    if (Number(b.trades) > wantTrades) duplicates += Number(b.trades) - wantTrades;
    if (scaled(b.volume) !== (truth.barVolume.get(key) ?? 0n) || Number(b.trades) !== wantTrades) {
      problems.push(
        `1m bar ${key}: volume ${b.volume} over ${b.trades} trades, expected ${wantTrades} trades`,
      );
    }
  }
  for (const key of truth.barVolume.keys()) if (!seenBars.has(key)) problems.push(`1m bar ${key} missing`);

  for (const symbol of symbolNames(symbols)) {
    const want = truth.lastQuote.get(symbol);
    if (want === undefined) continue;
    const h = await redis.hgetall(`quote:${symbol}`);
    const ok =
      h.quote_ts === String(want.ts) &&
      Number(h.bid) === want.bidPrice &&
      Number(h.ask) === want.askPrice &&
      Number(h.bid_size) === want.bidSize &&
      Number(h.ask_size) === want.askSize;
    if (!ok) problems.push(`newest quote of ${symbol}: ${JSON.stringify(h)}, expected ts ${want.ts}`);
  }

  const letters = (await redis.xrange(deadLetterKey({ prefix: PREFIX, shards: SHARDS }), '-', '+')) as [
    string,
    string[],
  ][];
  const distinct = new Set(
    letters.map(([, f]) => {
      const get = (k: string) => f[f.indexOf(k) + 1];
      return `${get('group')}|${get('stream')}|${get('id')}`;
    }),
  );
  if (distinct.size !== expectedDeadLetters) {
    problems.push(`dead letters: ${distinct.size} distinct, expected ${expectedDeadLetters}`);
  }
  return {
    expected: truth.trades + truth.quotes,
    stored,
    duplicates,
    deadLetters: letters.length,
    expectedDeadLetters,
    problems: problems.slice(0, 20).concat(problems.length > 20 ? [`… ${problems.length - 20} more`] : []),
  };
}
