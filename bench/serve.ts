import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';
import { WebSocket } from 'ws';
import { ArchiveSink } from '../consumers/sinks/archive.ts';
import { QuotesSink } from '../consumers/sinks/quotes.ts';
import { SyntheticMarket, symbolNames } from '../producers/synthetic.ts';
import { loadConfig, type Config, type ConfigInput } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import { closePgPool, createPgPool } from '../shared/pg.ts';
import { closeRedis, createRedis, deleteByPrefix, Script } from '../shared/redis.ts';
import { measurement, median, percentile, type BenchReport } from './lib.ts';

/**
 * `tickstream serve` read path, all in one run, the server in a child process (bench/serve-server.ts):
 * - GET /v1/quotes/:symbol from L1 vs the naive cache-aside (one Redis read per request) vs straight from
 *   PostgreSQL, routes of the same app, autocannon: requests/s, p50, p99 (medians of REPS runs), and the data
 *   paths alone in the server process (CPU per lookup, no HTTP). The same route answering a fixed quote with no
 *   lookup at all gives the ceiling of this route: what it serves with a free data path.
 * - Coalescing: 1,000 concurrent requests for a cold key → how many reads reached Redis.
 * - Push: 1,000 WebSocket clients (one symbol each, 1,000 symbols) while 20,000 quote updates/s are published
 *   on pub/sub → p99 publish-to-client latency, and each process's CPU per update; the generator, the clients,
 *   Redis and the server share the 2 cores.
 */
type LoadResult = Awaited<ReturnType<typeof autocannon>>;

const SYMBOLS = 100;
const REPS = Number(process.env.BENCH_RUNS ?? 3);
const LOAD_S = Number(process.env.BENCH_SERVE_LOAD_S ?? 4);
const CONNECTIONS = 50;
const WS_CLIENTS = 1000;
const PUSH_RATE = 20_000;
const PUSH_S = Number(process.env.BENCH_SERVE_PUSH_S ?? 5);
/** The bid of every published update, so that a client tells them from the seeded snapshot. */
const PUSHED_BID = 99_999.5;
/** Which parts run (all by default): http (L1 and the baselines), coalescing, push. */
const PARTS = new Set((process.env.BENCH_SERVE_PARTS ?? 'http,coalescing,push').split(','));
/** A folder: the server child writes a V8 CPU profile there (node --cpu-prof) when it exits. */
const PROF_DIR = process.env.BENCH_SERVE_PROF_DIR;
/** 1: run the server from the TypeScript sources through tsx (as `npm run serve` does) instead of compiled. */
const FROM_SOURCES = process.env.BENCH_SERVE_TSX === '1';

export default async function serveBench(): Promise<BenchReport> {
  const id = randomBytes(4).toString('hex');
  const prefix = `bench_serve_${id}`;
  const overrides: ConfigInput = {
    streams: { prefix },
    quotes: { keyPrefix: `${prefix}:quote:`, channelPrefix: `${prefix}:quotes:` },
    bars: { keyPrefix: `${prefix}:bar:`, channelPrefix: `${prefix}:bars:` },
    indicators: { keyPrefix: `${prefix}:ind:`, channelPrefix: `${prefix}:indicators:` },
    postgres: { schema: prefix, partitionsAhead: 0 },
    api: { port: 0, warmSymbols: 0, tierTimeoutMs: 2000 },
    log: { level: 'silent' },
  };
  const config = loadConfig({ overrides });
  const log = silentLogger();
  const redis = createRedis(config, { log });
  const pool = createPgPool(config.postgres, { log, max: 1 });
  let child: ChildProcess | undefined;
  try {
    const symbols = symbolNames(SYMBOLS);
    const ticks = new SyntheticMarket({
      symbols: [...symbols, 'COLD0', 'COLD1', 'COLD2'],
      seed: 5,
      source: 'bench',
    }).next(20_000);
    const quotes = new QuotesSink({ redis, settings: config.quotes, log });
    const archive = new ArchiveSink({ settings: config.postgres, log });
    await archive.start();
    for (const sink of [quotes, archive]) {
      await sink.write(ticks);
      await sink.flush();
    }
    await archive.close();
    // The symbols the push clients subscribe to exist, so each subscription starts with its snapshot (and
    // the snapshot reads are over before the updates flow).
    await quotes.write(
      new SyntheticMarket({ symbols: pushSymbols(), seed: 6, source: 'bench' }).next(WS_CLIENTS * 20),
    );
    await quotes.flush();

    child = spawn(
      process.execPath,
      [
        ...(PROF_DIR === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${PROF_DIR}`]),
        ...(FROM_SOURCES
          ? ['--import', 'tsx', join(import.meta.dirname, 'serve-server.ts')]
          : [compileServer()]),
        JSON.stringify(overrides),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    const { url } = JSON.parse(line) as { url: string };
    await fetch(`${url}/v1/quotes?symbols=${symbols.join(',')}`); // L1 holds every symbol

    const cpu = async () =>
      (await (await fetch(`${url}/bench/cpu`)).json()) as { user: number; system: number };
    const cpuPerRequest = {
      l1: [] as number[],
      naive: [] as number[],
      pg: [] as number[],
      ceiling: [] as number[],
    };
    const paths = {
      l1: (s: string) => `/v1/quotes/${s}`,
      naive: (s: string) => `/bench/naive/${s}`,
      pg: (s: string) => `/bench/pg/${s}`,
      ceiling: (s: string) => `/bench/ceiling/${s}`,
    };
    const shuffled = [...symbols];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    const cannon = (path: (s: string) => string, duration: number) =>
      autocannon({
        url,
        connections: CONNECTIONS,
        duration,
        // A fixed request per symbol, in a shuffled order each connection cycles through: autocannon builds
        // each once. With a setupRequest picking a random symbol it rebuilt (and deep-cloned) every request,
        // a quarter of the load generator's CPU (profile), taken from the server on the same 2 cores.
        requests: shuffled.map((s) => ({ method: 'GET', path: path(s) })),
      });
    const load = async (path: (s: string) => string, cpuRuns: number[]) => {
      // Let requests queued by the previous run (the PostgreSQL pool) finish first.
      await new Promise((r) => setTimeout(r, 2000));
      const before = await cpu();
      const r = await cannon(path, LOAD_S);
      if (r.non2xx > 0 || r.errors > 0)
        throw new Error(`${path('X')}: ${r.non2xx} non-2xx, ${r.errors} errors`);
      const after = await cpu();
      cpuRuns.push((after.user - before.user + after.system - before.system) / Math.max(1, r.requests.total));
      return r;
    };
    const runs = {
      l1: [] as LoadResult[],
      naive: [] as LoadResult[],
      pg: [] as LoadResult[],
      ceiling: [] as LoadResult[],
    };
    if (PARTS.has('http')) {
      // Untimed: the JIT compiles every path before the first timed run, which would otherwise favour the later ones.
      for (const path of Object.values(paths)) await cannon(path, 1);
    }
    for (let rep = 0; rep < (PARTS.has('http') ? REPS : 0); rep++) {
      runs.l1.push(await load(paths.l1, cpuPerRequest.l1));
      runs.naive.push(await load(paths.naive, cpuPerRequest.naive));
      runs.pg.push(await load(paths.pg, cpuPerRequest.pg));
      runs.ceiling.push(await load(paths.ceiling, cpuPerRequest.ceiling));
    }

    const datapath = { l1: [] as number[], naive: [] as number[] };
    for (let rep = 0; rep < (PARTS.has('http') ? REPS : 0); rep++) {
      const d = (await (await fetch(`${url}/bench/datapath?symbols=${symbols.join(',')}`)).json()) as {
        l1Us: number;
        naiveUs: number;
      };
      datapath.l1.push(d.l1Us);
      datapath.naive.push(d.naiveUs);
    }

    // Coalescing: 1,000 concurrent requests for a key L1 has never held.
    const reads: number[] = [];
    const coalesced: number[] = [];
    for (let rep = 0; rep < (PARTS.has('coalescing') ? 3 : 0); rep++) {
      const before = await stats(url);
      const answers = await Promise.all(
        Array.from({ length: 1000 }, () => fetch(`${url}/v1/quotes/COLD${rep}`).then((r) => r.status)),
      );
      if (answers.some((s) => s !== 200)) throw new Error('coalescing: a request failed');
      const after = await stats(url);
      reads.push(after.reads - before.reads);
      coalesced.push(after.coalesced - before.coalesced);
    }

    const push = PARTS.has('push') ? await pushRun(url, config) : undefined;

    const rps = (r: LoadResult[]) => r.map((x) => x.requests.average);
    const p50 = (r: LoadResult[]) => r.map((x) => x.latency.p50);
    const p99 = (r: LoadResult[]) => r.map((x) => x.latency.p99);
    const l1 = median(rps(runs.l1));
    return {
      name: 'serve',
      measurements: [
        measurement('quote from L1: requests/s', 'req/s', rps(runs.l1)),
        measurement('quote from L1: p50', 'ms', p50(runs.l1)),
        measurement('quote from L1: p99', 'ms', p99(runs.l1)),
        measurement('naive cache-aside (Redis per request): requests/s', 'req/s', rps(runs.naive)),
        measurement('naive cache-aside: p50', 'ms', p50(runs.naive)),
        measurement('naive cache-aside: p99', 'ms', p99(runs.naive)),
        measurement('straight PostgreSQL: requests/s', 'req/s', rps(runs.pg)),
        measurement('straight PostgreSQL: p50', 'ms', p50(runs.pg)),
        measurement('straight PostgreSQL: p99', 'ms', p99(runs.pg)),
        measurement(
          'HTTP ceiling (same app, no lookup: a fixed quote): requests/s',
          'req/s',
          rps(runs.ceiling),
        ),
        measurement('HTTP ceiling: p99', 'ms', p99(runs.ceiling)),
        measurement('server CPU per request: L1', 'us', cpuPerRequest.l1),
        measurement('server CPU per request: HTTP ceiling (no lookup)', 'us', cpuPerRequest.ceiling),
        measurement(
          'server CPU per request: naive cache-aside (+ Redis server CPU, not counted)',
          'us',
          cpuPerRequest.naive,
        ),
        measurement(
          'server CPU per request: straight PostgreSQL (+ PostgreSQL CPU, not counted)',
          'us',
          cpuPerRequest.pg,
        ),
        measurement('data path alone (no HTTP), server CPU per lookup: L1 hit', 'us', datapath.l1),
        measurement(
          'data path alone (no HTTP), server CPU per lookup: one Redis read (+ Redis CPU, not counted)',
          'us',
          datapath.naive,
        ),
        measurement('1,000 concurrent cold requests: Redis reads', 'reads', reads),
        measurement('1,000 concurrent cold requests: coalesced waits', 'waits', coalesced),
        measurement(
          `push p50 (${WS_CLIENTS} clients, ${PUSH_RATE}/s)`,
          'ms',
          push === undefined ? [] : [push.p50],
        ),
        measurement(
          `push p99 (${WS_CLIENTS} clients, ${PUSH_RATE}/s)`,
          'ms',
          push === undefined ? [] : [push.p99],
        ),
        measurement(
          'push: updates published per second (achieved)',
          'msg/s',
          push === undefined ? [] : [push.publishedRate],
        ),
        measurement(
          'push: updates delivered / published',
          'ratio',
          push === undefined ? [] : [push.delivered],
        ),
        measurement(
          'push: server CPU per delivered update',
          'us',
          push === undefined ? [] : [push.serverCpuPerUpdate],
        ),
        measurement(
          'push: benchmark process CPU (publisher + 1,000 clients) per update',
          'us',
          push === undefined ? [] : [push.benchCpuPerUpdate],
        ),
        measurement('push: Redis CPU per update', 'us', push === undefined ? [] : [push.redisCpuPerUpdate]),
      ].filter((m) => m.runs.length > 0),
      summary: {
        'L1 vs naive cache-aside': `${(l1 / median(rps(runs.naive))).toFixed(1)}x (target >= 3x)`,
        'L1 vs the HTTP ceiling (no lookup)': `${Math.round((l1 / median(rps(runs.ceiling))) * 100)}%`,
        '3x naive would need': `${Math.round(3 * median(rps(runs.naive)))} req/s; the HTTP ceiling is ${Math.round(median(rps(runs.ceiling)))}`,
        'L1 vs straight PostgreSQL': `${(l1 / median(rps(runs.pg))).toFixed(1)}x`,
        'server CPU per request, naive / L1': `${(median(cpuPerRequest.naive) / median(cpuPerRequest.l1)).toFixed(2)}x`,
        'data path alone, naive / L1 (server CPU per lookup)': `${(median(datapath.naive) / median(datapath.l1)).toFixed(0)}x`,
        'L1 target': '>= 20,000 req/s, p99 <= 5 ms',
        'push target': 'p99 <= 50 ms',
      },
      notes: [
        `autocannon ${CONNECTIONS} connections, ${LOAD_S} s per run, ${REPS} runs per variant, cycling through ${SYMBOLS} symbols in a shuffled order`,
        'load generator, server (child process), Redis and PostgreSQL share 2 cores with other engineers: figures are noisy',
        'push: publisher, 1,000 ws clients and the server all on this machine; delivered < 1 means conflation dropped superseded updates',
        'the baselines are routes of the same serve app (same plugins, hooks, validation and serialization), so the ratios compare data paths',
        `the server runs compiled by tsc, as deployed${FROM_SOURCES ? ' (not this run: BENCH_SERVE_TSX=1, sources through tsx)' : ''}`,
        'HTTP and the socket write cost every variant the same tens of microseconds per request (see the data path lines for the lookups alone), so the end-to-end ratio stays far below the data path ratio',
        'push: updates are published in batches, one script call per batch doing one PUBLISH per update, so the generator leaves the cores to the server and clients',
      ],
    };
  } finally {
    if (child !== undefined && child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
    await pool.query(`DROP SCHEMA IF EXISTS "${prefix}" CASCADE`).catch(() => undefined);
    await closePgPool(pool);
    await deleteByPrefix(redis, prefix);
    await closeRedis(redis);
  }
}

/**
 * Compile the server child with tsc, as `npm run build` does for production (bin/tickstream.js and the image
 * run dist/), into dist/bench-serve/ (ignored by git, eslint and prettier like the rest of dist/). Through tsx
 * the server measured would differ from the one deployed: tsx keeps function names by wrapping every closure
 * created at run time (esbuild's keepNames) and maps stack traces through source maps. No type check here;
 * `npm run typecheck` does that.
 */
function compileServer(): string {
  const out = join(import.meta.dirname, '..', 'dist', 'bench-serve');
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'tsconfig.json'),
    JSON.stringify({
      extends: '../../tsconfig.json',
      compilerOptions: { outDir: '.', rootDir: '../..', noCheck: true, incremental: false },
      files: ['../../bench/serve-server.ts'],
      include: [],
    }),
  );
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(out, 'tsconfig.json')], { stdio: 'inherit' });
  return join(out, 'bench', 'serve-server.js');
}

async function stats(url: string): Promise<{ reads: number; coalesced: number }> {
  const s = (await (await fetch(`${url}/v1/cache/stats`)).json()) as {
    memory: { quote: { coalesced: number } };
    tiers: Record<string, { reads: number }>;
  };
  return { reads: s.tiers['redis:quote']?.reads ?? 0, coalesced: s.memory.quote.coalesced };
}

function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

/**
 * Publishes a batch of updates in one call, one PUBLISH each inside Redis: the generator shares the 2 cores
 * with the server, and an ioredis command object per update (a pipeline of PUBLISH) cost it most of a core at
 * 20,000/s, CPU then missing from the server and the clients whose latency is measured. Redis still does one
 * PUBLISH per update, as it does for the projector's script (consumers/sinks/quotes.ts).
 */
function pushSymbols(): string[] {
  return Array.from({ length: WS_CLIENTS }, (_, i) => `P${i}`);
}

const PUBLISH_MANY = new Script(
  "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return #ARGV / 2",
);

async function pushRun(url: string, config: Config) {
  const channelPrefix = config.quotes.channelPrefix;
  const wsUrl = `${url.replace(/^http/, 'ws')}/v1/stream`;
  const latencies: number[] = [];
  const clients: WebSocket[] = [];
  let subscribed = 0;
  let snapshots = 0;
  for (let i = 0; i < WS_CLIENTS; i++) {
    const ws = new WebSocket(wsUrl);
    clients.push(ws);
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString()) as { type: string; data?: { ts: string; bid: number } };
      if (m.type === 'quote' && m.data !== undefined) {
        // The snapshot a subscription starts with is the seeded quote, not a published update.
        if (m.data.bid === PUSHED_BID) latencies.push(Number(nowNs() - BigInt(m.data.ts)) / 1e6);
        else snapshots++;
      } else if (m.type === 'subscribed') subscribed++;
    });
    ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', channel: 'quotes', symbols: [`P${i}`] })));
    ws.on('error', () => undefined);
  }
  const deadline = Date.now() + 60_000;
  while ((subscribed < WS_CLIENTS || snapshots < WS_CLIENTS) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  const pub = createRedis(config, { log: silentLogger() });
  const cpu = async () =>
    (await (await fetch(`${url}/bench/cpu`)).json()) as { user: number; system: number };
  const redisCpu = async () => {
    const info = await pub.info('cpu');
    const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? NaN);
    return (field('used_cpu_user') + field('used_cpu_sys')) * 1e6;
  };
  const cpuBefore = await cpu();
  const benchBefore = process.cpuUsage();
  const redisBefore = await redisCpu();
  let published = 0;
  const started = performance.now();
  while (performance.now() - started < PUSH_S * 1000) {
    const due = Math.floor(((performance.now() - started) / 1000) * PUSH_RATE) - published;
    if (due > 0) {
      const args: string[] = [];
      for (let k = 0; k < due; k++) {
        const s = `P${(published + k) % WS_CLIENTS}`;
        const ts = nowNs().toString();
        args.push(
          `${channelPrefix}${s}`,
          JSON.stringify({
            symbol: s,
            ts,
            bid: String(PUSHED_BID),
            ask: '10.1',
            updated_at: String(Date.now()),
          }),
        );
      }
      await PUBLISH_MANY.runKeys(pub, [], args);
      published += due;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const elapsed = (performance.now() - started) / 1000;
  await new Promise((r) => setTimeout(r, 1000));
  const cpuAfter = await cpu();
  const bench = process.cpuUsage(benchBefore);
  const redisUs = (await redisCpu()) - redisBefore;
  for (const ws of clients) ws.terminate();
  await closeRedis(pub);
  return {
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    publishedRate: published / elapsed,
    delivered: latencies.length / Math.max(1, published),
    serverCpuPerUpdate:
      (cpuAfter.user - cpuBefore.user + cpuAfter.system - cpuBefore.system) / Math.max(1, latencies.length),
    benchCpuPerUpdate: (bench.user + bench.system) / Math.max(1, published),
    redisCpuPerUpdate: redisUs / Math.max(1, published),
  };
}
