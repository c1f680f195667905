import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ArchiveSink } from '../../consumers/sinks/archive.ts';
import { createBarsSink, readCurrentBar } from '../../consumers/sinks/bars.ts';
import { QuotesSink, readQuotes } from '../../consumers/sinks/quotes.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { startServer, type RunningServer } from '../../server/server.ts';
import type { Config, ConfigInput } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Tick } from '../../shared/model.ts';
import { closePgPool, createPgPool } from '../../shared/pg.ts';
import { closeRedis } from '../../shared/redis.ts';
import { clusterBinariesAvailable } from '../helpers/cluster.ts';
import { killChild } from '../helpers/cli.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

/**
 * `tickstream serve` against the real Redis and PostgreSQL: the projector, bars and archive sinks write what
 * synthetic ticks make, and the API must answer exactly what the stores hold.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function serveConfig(overrides: ConfigInput = {}): Config {
  const schema = uniqueName('serve');
  return testConfig({
    postgres: { schema },
    bars: { keyPrefix: `${schema}:bar:`, channelPrefix: `${schema}:bars:`, timeframes: ['1s', '1m'] },
    indicators: { keyPrefix: `${schema}:ind:`, channelPrefix: `${schema}:indicators:` },
    api: { port: 0, warmSymbols: 5, ...(overrides.api ?? {}) },
    ...Object.fromEntries(Object.entries(overrides).filter(([k]) => k !== 'api')),
  });
}

async function start(config: Config): Promise<RunningServer> {
  const server = await startServer(config, silentLogger());
  cleanups.push(() => server.close());
  return server;
}

async function get<T>(
  server: RunningServer,
  path: string,
): Promise<{ status: number; body: T; headers: Headers }> {
  const r = await fetch(`${server.url}${path}`);
  return { status: r.status, body: (await r.json()) as T, headers: r.headers };
}

function market(symbols: string[], count: number): Tick[] {
  let ts = BigInt(Date.now() - 60_000) * 1_000_000n;
  return new SyntheticMarket({
    symbols,
    seed: 7,
    source: uniqueName('src'),
    // 10 ms of exchange time per tick: a few dozen 1s bars, the older ones closed.
    clock: () => (ts += 10_000_000n),
  }).next(count);
}

describe('tickstream serve (real Redis and PostgreSQL)', () => {
  it('answers what the stores hold: quotes, bars with the open bar, history, trades paged by cursor', async () => {
    const config = serveConfig();
    const redis = testRedis(config);
    const log = silentLogger();
    const pool = createPgPool(config.postgres, { log, max: 1 });
    cleanups.push(async () => {
      await pool.query(`DROP SCHEMA IF EXISTS "${config.postgres.schema}" CASCADE`);
      await closePgPool(pool);
      await cleanupPrefix(redis, config.postgres.schema);
      await cleanupPrefix(redis, config.streams.prefix);
      await closeRedis(redis);
    });
    const quotes = new QuotesSink({ redis, settings: config.quotes, log });
    const bars = await createBarsSink({ config, redis, log });
    const archive = new ArchiveSink({ settings: config.postgres, log });
    await bars.start();
    await archive.start();
    cleanups.push(async () => {
      await bars.close();
      await archive.close();
    });
    const symbols = ['AAA', 'BBB', 'CCC'];
    const ticks = market(symbols, 3000);
    for (const sink of [quotes, bars, archive]) {
      await sink.write(ticks);
      await sink.flush();
    }

    const server = await start(config);
    // Warm-up loaded the active symbols' quotes before the first request.
    expect(server.ctx.model.memory.stats().memory.quote.size).toBe(3);

    const stored = await readQuotes(redis, config.quotes, symbols);
    const one = await get<Record<string, unknown>>(server, '/v1/quotes/AAA');
    expect(one.status).toBe(200);
    const h = stored.get('AAA')!;
    expect(one.body).toMatchObject({
      symbol: 'AAA',
      bid: Number(h.bid),
      ask: Number(h.ask),
      bid_size: Number(h.bid_size),
      last: Number(h.last),
      ts: h.ts,
      quote_ts: h.quote_ts,
      trade_ts: h.trade_ts,
      updated_at: Number(h.updated_at),
      stale: false,
      source: 'memory',
    });
    const batch = await get<{ quotes: { symbol: string; ts: string }[]; missing: string[] }>(
      server,
      '/v1/quotes?symbols=AAA,BBB,CCC,ZZZ',
    );
    expect(batch.body.quotes.map((q) => [q.symbol, q.ts])).toEqual(
      symbols.map((s) => [s, stored.get(s)!.ts]),
    );
    expect(batch.body.missing).toEqual(['ZZZ']);
    expect((await get(server, '/v1/quotes/ZZZ')).status).toBe(404);

    // Recent bars: what PostgreSQL holds, the open bar last and marked, and equal to the Redis hash.
    const { rows } = await pool.query<{ start_ns: string; close: number; volume: string; closed: boolean }>(
      `SELECT start_ns::text, close, volume::text, closed FROM "${config.postgres.schema}".bars
        WHERE symbol = 'BBB' AND tf = '1s' ORDER BY start_ns DESC LIMIT 10`,
    );
    const recent = await get<{
      bars: { start: string; close: number; volume: number; closed: boolean }[];
      open_bar: string | null;
    }>(server, '/v1/bars/BBB?tf=1s&limit=10');
    expect(recent.status).toBe(200);
    expect(recent.body.bars.map((b) => [b.start, b.close, b.volume, b.closed])).toEqual(
      rows.reverse().map((r) => [r.start_ns, r.close, Number(r.volume), r.closed]),
    );
    const open = await readCurrentBar(redis, config.bars.keyPrefix, 'BBB', '1s');
    expect(open?.closed).toBe('0');
    expect(recent.body.open_bar).toBe(open!.start);
    expect(recent.body.bars.filter((b) => !b.closed)).toHaveLength(1);

    // History in [from, to): exactly the stored rows.
    const first = rows[0]!.start_ns;
    const from = BigInt(first);
    const to = from + 5_000_000_000n;
    const fromIso = new Date(Number(from / 1_000_000n)).toISOString();
    const toIso = new Date(Number(to / 1_000_000n)).toISOString();
    const hist = await get<{ bars: { start: string }[] }>(
      server,
      `/v1/bars/BBB?tf=1s&from=${fromIso}&to=${toIso}`,
    );
    const { rows: inRange } = await pool.query<{ start_ns: string }>(
      `SELECT start_ns::text FROM "${config.postgres.schema}".bars
        WHERE symbol = 'BBB' AND tf = '1s' AND start_ns >= $1 AND start_ns < $2 ORDER BY start_ns`,
      [from.toString(), to.toString()],
    );
    expect(hist.body.bars.map((b) => b.start)).toEqual(inRange.map((r) => r.start_ns));
    expect(inRange.length).toBeGreaterThan(0);

    // Trades: every archived trade of CCC exactly once, through pages of 37.
    const t0 = new Date(Date.now() - 3_600_000).toISOString();
    const t1 = new Date(Date.now() + 60_000).toISOString();
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: {
        body: { trades: { ts: string; seq: number; source: string }[]; next_cursor: string | null };
      } = await get(
        server,
        `/v1/trades/CCC?from=${t0}&to=${t1}&limit=37${cursor === null ? '' : `&cursor=${cursor}`}`,
      );
      seen.push(...page.body.trades.map((t) => `${t.ts}:${t.seq}:${t.source}`));
      cursor = page.body.next_cursor;
      pages++;
    } while (cursor !== null && pages < 1000);
    const expected = ticks
      .filter((t) => t.type === 'trade' && t.symbol === 'CCC')
      .map((t) => `${t.ts}:${t.seq}:${t.source}`);
    expect(seen).toEqual(expected);
    expect(new Set(seen).size).toBe(seen.length);
    expect(pages).toBe(Math.ceil(expected.length / 37) + (expected.length % 37 === 0 ? 1 : 0));

    // Status as JSON and readiness.
    expect((await get<{ ok: boolean }>(server, '/readyz')).body.ok).toBe(true);
    const status = await get<{ shards: unknown[]; stores: { postgres: { ok: boolean } } }>(
      server,
      '/v1/status',
    );
    expect(status.body.shards).toHaveLength(config.streams.shards);
    expect(status.body.stores.postgres.ok).toBe(true);
    const metrics = await fetch(`${server.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/tickstream_api_cache_requests_total\{kind="quote",result="hit"\} \d+/);
    expect(metrics).toContain('process_cpu_user_seconds_total');
  });

  it('a quote update reaches L1 through pub/sub, long before the TTL', async () => {
    const config = serveConfig({ api: { quoteTtlMs: 600_000, warmSymbols: 0 } });
    const redis = testRedis(config);
    cleanups.push(async () => {
      await cleanupPrefix(redis, config.streams.prefix);
      await closeRedis(redis);
    });
    const quotes = new QuotesSink({ redis, settings: config.quotes, log: silentLogger() });
    const [a, b] = market(['QQQ'], 400)
      .filter((t) => t.type === 'quote')
      .slice(-2);
    await quotes.write([a!]);
    await quotes.flush();
    const server = await start(config);
    const before = await get<{ ts: string; source: string }>(server, '/v1/quotes/QQQ');
    expect(before.body).toMatchObject({ ts: a!.ts.toString(), source: 'redis' });
    await quotes.write([b!]);
    await quotes.flush();
    await waitUntil(
      async () => (await get<{ ts: string }>(server, '/v1/quotes/QQQ')).body.ts === b!.ts.toString(),
      'the pushed quote in L1',
      { timeoutMs: 5000 },
    );
    const after = await get<{ ts: string; source: string; bid: number }>(server, '/v1/quotes/QQQ');
    expect(after.body).toMatchObject({ source: 'memory', ts: b!.ts.toString() });
    // Served from memory: Redis was read once, at the first request.
    expect(server.ctx.model.memory.stats().tiers['redis:quote']?.reads).toBe(1);
    expect(server.ctx.subscriber?.stats.quotes).toBe(1);
  });

  it.skipIf(!clusterBinariesAvailable())(
    'serves stale values while its Redis is stopped, 503 for what it never cached, and recovers',
    async () => {
      const port = await freePort();
      let redisProc = startRedis(port);
      cleanups.push(() => killChild(redisProc));
      const config = serveConfig({
        redis: { url: `redis://127.0.0.1:${port}` },
        api: { quoteTtlMs: 200, tierTimeoutMs: 200, warmSymbols: 0 },
      });
      const redis = testRedis(config);
      cleanups.push(() => closeRedis(redis));
      await waitUntil(async () => (await redis.ping()) === 'PONG', 'private redis-server');
      const quotes = new QuotesSink({ redis, settings: config.quotes, log: silentLogger() });
      const [q1, q2] = market(['RRR'], 200)
        .filter((t) => t.type === 'quote')
        .slice(-2);
      await quotes.write([q1!]);
      await quotes.flush();
      const server = await start(config);
      expect((await get<{ stale: boolean }>(server, '/v1/quotes/RRR')).body.stale).toBe(false);

      redisProc.kill('SIGTERM');
      await waitUntil(
        () => redisProc.exitCode !== null || redisProc.signalCode !== null,
        'redis-server to stop',
      );
      await waitUntil(
        async () => (await get<{ stale?: boolean }>(server, '/v1/quotes/RRR')).body.stale === true,
        'a stale quote',
      );
      const stale = await get<{ stale: boolean; ts: string; age_ms: number }>(server, '/v1/quotes/RRR');
      expect(stale.status).toBe(200);
      expect(stale.body).toMatchObject({ stale: true, ts: q1!.ts.toString() });
      expect(stale.body.age_ms).toBeGreaterThanOrEqual(0);
      const never = await get<{ error: { code: string } }>(server, '/v1/quotes/NEVER');
      expect(never.status).toBe(503);
      expect(never.headers.get('retry-after')).toBe(String(config.api.retryAfterS));
      expect((await get<{ ok: boolean }>(server, '/readyz')).status).toBe(503);

      // Back (empty: no persistence); the projector writes again and the server recovers by itself.
      redisProc = startRedis(port);
      await waitUntil(async () => (await redis.ping()) === 'PONG', 'redis-server back');
      await quotes.write([q2!]);
      await quotes.flush();
      await waitUntil(async () => {
        const r = await get<{ stale: boolean; ts: string }>(server, '/v1/quotes/RRR');
        return r.status === 200 && !r.body.stale && r.body.ts === q2!.ts.toString();
      }, 'a fresh quote after recovery');
      expect((await get<{ ok: boolean }>(server, '/readyz')).body.ok).toBe(true);
      expect(server.ctx.model.memory.stats().memory.quote.stale).toBeGreaterThan(0);
    },
  );
});

function startRedis(port: number): ChildProcess {
  return spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {
      stdio: 'ignore',
    },
  );
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
}
