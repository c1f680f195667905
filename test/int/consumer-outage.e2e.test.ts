import { afterEach, describe, expect, it } from 'vitest';
import { archiveCounts } from '../../consumers/sinks/archive.ts';
import { silentLogger } from '../../shared/logger.ts';
import { closePgPool, createPgPool, type PgPool } from '../../shared/pg.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import type { Config } from '../../shared/config.ts';
import { finished, runCli, startCli, stopChildren } from '../helpers/cli.ts';
import {
  DATABASE_URL,
  REDIS_URL,
  cleanupPrefix,
  testConfig,
  testRedis,
  uniqueName,
  waitUntil,
} from '../helpers/index.ts';
import { pendingTotal, produceTicks } from '../helpers/streams.ts';
import { TcpProxy } from '../helpers/tcp-proxy.ts';

/**
 * `tickstream consume archive` as a process while its PostgreSQL is unreachable: PostgreSQL is reached
 * through a TCP proxy of the test's own, which is brought up and down (the shared server is never touched).
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await stopChildren();
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

interface Ctx {
  config: Config;
  schema: string;
  group: string;
  consumer: string;
  redis: RedisClient;
  pool: PgPool;
  proxy: TcpProxy;
  env: Record<string, string>;
}

async function setup(env: Record<string, string> = {}): Promise<Ctx> {
  const schema = uniqueName('archout');
  const config = testConfig({ postgres: { schema } });
  const redis = testRedis(config);
  const pool = createPgPool({ ...config.postgres, url: DATABASE_URL }, { log: silentLogger(), max: 1 });
  const target = new URL(DATABASE_URL);
  const proxy = await TcpProxy.onFreePort({ host: target.hostname, port: Number(target.port || 5432) });
  cleanups.push(async () => {
    await proxy.close();
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await closePgPool(pool);
    await cleanupPrefix(redis, config.streams.prefix);
    await closeRedis(redis);
  });
  const viaProxy = new URL(DATABASE_URL);
  viaProxy.host = `127.0.0.1:${proxy.port}`;
  const prefix = config.streams.prefix;
  const consumer = uniqueName('c');
  return {
    config,
    schema,
    group: uniqueName('archive'),
    consumer,
    redis,
    pool,
    proxy,
    env: {
      REDIS_URL,
      DATABASE_URL: viaProxy.toString(),
      TICKSTREAM_PG_SCHEMA: schema,
      TICKSTREAM_PG_TIMESCALE: 'off',
      TICKSTREAM_PG_PARTITIONS_AHEAD: '1',
      TICKSTREAM_PG_CONNECT_TIMEOUT_MS: '2000',
      TICKSTREAM_STREAM_PREFIX: prefix,
      TICKSTREAM_SHARDS: '2',
      TICKSTREAM_QUOTE_KEY_PREFIX: `${prefix}:quote:`,
      TICKSTREAM_QUOTE_CHANNEL_PREFIX: `${prefix}:quotes:`,
      TICKSTREAM_CONSUMER_NAME: consumer,
      TICKSTREAM_BLOCK_MS: '100',
      TICKSTREAM_RETRY_BASE_MS: '50',
      TICKSTREAM_RETRY_MAX_MS: '200',
      ...env,
    },
  };
}

function consume(ctx: Ctx) {
  return startCli(['consume', 'archive', '--group', ctx.group], ctx.env);
}

async function stored(ctx: Ctx): Promise<number> {
  const c = await archiveCounts(ctx.pool, ctx.schema).catch(() => ({ trades: 0, quotes: 0 }));
  return c.trades + c.quotes;
}

async function consumersOf(ctx: Ctx): Promise<string[]> {
  const names = new Set<string>();
  for (const s of allStreamKeys(ctx.config.streams)) {
    const rows = (await ctx.redis.call('XINFO', 'CONSUMERS', s, ctx.group)) as unknown[][];
    for (const r of rows) names.add(String(r[1]));
  }
  return [...names];
}

const count = (text: string, re: RegExp) => (text.match(re) ?? []).length;

// Each test starts one or two CLI processes, which take seconds each on a loaded machine.
describe(
  'consumers and an unreachable store (processes, real Redis and PostgreSQL)',
  { timeout: 180_000 },
  () => {
    it('a consumer started while its store is down waits, logging each attempt, and consumes once it answers', async () => {
      const ctx = await setup();
      const child = consume(ctx);
      await waitUntil(
        () => count(child.out.stderr, /sink archive: store not reachable yet, waiting/g) >= 3,
        'three logged attempts to reach the store',
      );
      expect(child.exitCode).toBeNull();
      const ticks = await produceTicks(ctx.config, ctx.redis, 500);
      await ctx.proxy.listen();
      await waitUntil(async () => (await stored(ctx)) === ticks.length, 'every tick archived', {
        timeoutMs: 30_000,
      });
      await waitUntil(async () => (await pendingTotal(ctx.redis, ctx.config, ctx.group)) === 0, 'all acked');
      expect(child.out.stderr).toMatch(/sink archive is ready/);
      child.kill('SIGTERM');
      const r = await finished(child);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/"msg":"worker stopped"/);
    });

    it('refused credentials at start fail at once (no waiting), naming the problem', async () => {
      const ctx = await setup();
      await ctx.proxy.listen();
      const url = new URL(ctx.env.DATABASE_URL!);
      url.username = uniqueName('nosuchrole');
      const r = await runCli(['consume', 'archive', '--group', ctx.group], {
        ...ctx.env,
        DATABASE_URL: url.toString(),
      });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/role .* does not exist|password authentication failed/);
      expect(r.stderr).not.toMatch(/store not reachable yet/);
    });

    it('SIGTERM while a batch is held by a store outage waits for the store, then acks it once', async () => {
      const ctx = await setup({ TICKSTREAM_SHUTDOWN_TIMEOUT_MS: '20000' });
      await ctx.proxy.listen();
      const child = consume(ctx);
      const first = await produceTicks(ctx.config, ctx.redis, 200, { seed: 1 });
      await waitUntil(async () => (await stored(ctx)) === first.length, 'first ticks archived', {
        timeoutMs: 30_000,
      });
      await ctx.proxy.close();
      const second = await produceTicks(ctx.config, ctx.redis, 300, { seed: 2 });
      await waitUntil(
        () => /sink write failed: retrying/.test(child.out.stderr),
        'the batch held by the outage',
      );
      expect(await pendingTotal(ctx.redis, ctx.config, ctx.group)).toBeGreaterThan(0);
      child.kill('SIGTERM');
      await waitUntil(
        () => /stopping: waiting for the store to take the batch/.test(child.out.stderr),
        'the stop waiting for the store',
      );
      await ctx.proxy.listen();
      const r = await finished(child);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/"msg":"worker stopped"/);
      // The batch held at the signal was written and acknowledged once; what was not read yet stays in the
      // stream for the next consumer (reading stops at the signal).
      const stats = JSON.parse(r.stderr.split('\n').find((l) => l.includes('"msg":"worker stopped"'))!) as {
        entries: number;
        ticks: number;
        acked: number;
      };
      expect(stats.ticks).toBeGreaterThan(first.length);
      expect(stats.acked).toBe(stats.entries);
      expect(await stored(ctx)).toBe(stats.ticks);
      expect(await pendingTotal(ctx.redis, ctx.config, ctx.group)).toBe(0);
      expect(await consumersOf(ctx)).not.toContain(ctx.consumer);
      // A second run takes the rest: everything once.
      const next = consume(ctx);
      await waitUntil(async () => (await stored(ctx)) === first.length + second.length, 'the rest archived', {
        timeoutMs: 30_000,
      });
      // Running before it is signalled: the held batch may have been all of the rest (the read linger makes
      // one large read of it), and a process signalled while it starts has no handler yet.
      await waitUntil(() => /"msg":"consuming"/.test(next.out.stderr), 'the second process consuming', {
        timeoutMs: 30_000,
      });
      next.kill('SIGTERM');
      expect((await finished(next)).code).toBe(0);
    });

    it('SIGTERM while the store stays down leaves the batch pending, stays registered and exits 1', async () => {
      const ctx = await setup({ TICKSTREAM_SHUTDOWN_TIMEOUT_MS: '2000' });
      await ctx.proxy.listen();
      const child = consume(ctx);
      await waitUntil(() => /"msg":"consuming"/.test(child.out.stderr), 'consuming', { timeoutMs: 30_000 });
      await ctx.proxy.close();
      await produceTicks(ctx.config, ctx.redis, 300);
      await waitUntil(
        () => /sink write failed: retrying/.test(child.out.stderr),
        'the batch held by the outage',
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}; consumer log: ${child.out.stderr}`);
      });
      child.kill('SIGTERM');
      const r = await finished(child);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/stopping while the store is still failing: leaving the batch pending/);
      expect(r.stderr).toMatch(/worker stopped with entries pending on this consumer/);
      expect(r.stderr).not.toMatch(/"msg":"worker stopped"/);
      expect(await pendingTotal(ctx.redis, ctx.config, ctx.group)).toBeGreaterThan(0);
      expect(await consumersOf(ctx)).toContain(ctx.consumer);
    });

    it('a second signal during the wait for the store forces exit 130', async () => {
      const ctx = await setup({ TICKSTREAM_SHUTDOWN_TIMEOUT_MS: '20000' });
      await ctx.proxy.listen();
      const child = consume(ctx);
      await waitUntil(() => /"msg":"consuming"/.test(child.out.stderr), 'consuming', { timeoutMs: 30_000 });
      await ctx.proxy.close();
      await produceTicks(ctx.config, ctx.redis, 300);
      await waitUntil(
        () => /sink write failed: retrying/.test(child.out.stderr),
        'the batch held by the outage',
      );
      child.kill('SIGTERM');
      await waitUntil(
        () => /stopping: waiting for the store to take the batch/.test(child.out.stderr),
        'the stop waiting for the store',
      );
      child.kill('SIGTERM');
      const r = await finished(child);
      expect(r.code, r.stderr).toBe(130);
      expect(r.stderr).toMatch(/second signal: forcing exit/);
      expect(await pendingTotal(ctx.redis, ctx.config, ctx.group)).toBeGreaterThan(0); // nothing lost
    });

    it('TICKSTREAM_SHUTDOWN_TIMEOUT_MS forces exit 130 when a write hangs (the store never answers)', async () => {
      const ctx = await setup({
        TICKSTREAM_SHUTDOWN_TIMEOUT_MS: '1500',
        TICKSTREAM_PG_CONNECT_TIMEOUT_MS: '120000',
      });
      await ctx.proxy.listen();
      const child = consume(ctx);
      await waitUntil(() => /"msg":"consuming"/.test(child.out.stderr), 'consuming', { timeoutMs: 30_000 });
      ctx.proxy.stall();
      await produceTicks(ctx.config, ctx.redis, 300);
      await waitUntil(
        async () => (await pendingTotal(ctx.redis, ctx.config, ctx.group)) > 0,
        'a batch in hand',
      );
      child.kill('SIGTERM');
      const r = await finished(child);
      expect(r.code, r.stderr).toBe(130);
      expect(r.stderr).toMatch(/graceful stop timed out: forcing exit/);
      expect(await pendingTotal(ctx.redis, ctx.config, ctx.group)).toBeGreaterThan(0);
    });

    it('the indicator worker started while PostgreSQL is down waits too, and stops cleanly on SIGTERM', async () => {
      const ctx = await setup();
      const prefix = ctx.config.streams.prefix;
      const child = startCli(['indicators', 'worker', '--no-schedule'], {
        ...ctx.env,
        TICKSTREAM_IND_BULL_PREFIX: `${prefix}:bull`,
        TICKSTREAM_IND_QUEUE: uniqueName('ind'),
        TICKSTREAM_IND_KEY_PREFIX: `${prefix}:ind:`,
      });
      await waitUntil(
        () => count(child.out.stderr, /the indicator worker: store not reachable yet, waiting/g) >= 3,
        'three logged attempts to reach the store',
        { timeoutMs: 60_000 },
      );
      expect(child.exitCode).toBeNull();
      await ctx.proxy.listen();
      await waitUntil(() => /indicator worker running/.test(child.out.stderr), 'the worker running', {
        timeoutMs: 30_000,
      });
      child.kill('SIGTERM');
      const r = await finished(child);
      expect(r.code, r.stderr).toBe(0);
    });
  },
);
