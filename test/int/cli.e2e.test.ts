import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logger.ts';
import { closePgPool, createPgPool } from '../../shared/pg.ts';
import { closeRedis } from '../../shared/redis.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { pendingTotal } from '../helpers/streams.ts';
import {
  cleanupPrefix,
  DATABASE_URL,
  REDIS_URL,
  testConfig,
  testRedis,
  uniqueName,
  waitUntil,
} from '../helpers/index.ts';
import { finished, runCli, startCli, stopChildren } from '../helpers/cli.ts';
import { freePort } from '../helpers/cluster.ts';

const config = testConfig();
const redis = testRedis(config);
const prefix = config.streams.prefix;
const env = {
  REDIS_URL,
  TICKSTREAM_STREAM_PREFIX: prefix,
  TICKSTREAM_SHARDS: '2',
  TICKSTREAM_QUOTE_KEY_PREFIX: `${prefix}:quote:`,
  // Never the global quotes:* channels: other tests and a running dashboard listen there.
  TICKSTREAM_QUOTE_CHANNEL_PREFIX: `${prefix}:quotes:`,
  TICKSTREAM_BLOCK_MS: '100',
};

// Children still running when a test ends (it failed or timed out) are killed and waited for.
afterEach(stopChildren);

afterAll(async () => {
  await cleanupPrefix(redis, prefix);
  await closeRedis(redis);
});

describe('tickstream CLI (processes, real Redis)', () => {
  it('a bad environment variable gives a clear error naming it and exit code 2', async () => {
    const r = await runCli(['status'], { ...env, TICKSTREAM_SHARDS: 'lots' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/invalid configuration:\n\s+TICKSTREAM_SHARDS: .*\(got "lots"\)/);
  });

  it('a bad flag is refused with the flag named', async () => {
    const r = await runCli(['produce', 'synthetic', '--rate', 'fast'], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--rate must be a positive number \(got "fast"\)/);
  });

  it('produce → consume quotes → quote; SIGTERM stops the consumer cleanly with nothing pending', async () => {
    const metricsPort = await freePort();
    const consumer = startCli(['consume', 'quotes', '--group', uniqueName('quotes')], {
      ...env,
      TICKSTREAM_METRICS_PORT: String(metricsPort),
    });
    const group = await waitUntil(async () => {
      const groups = (await redis
        .call('XINFO', 'GROUPS', allStreamKeys(config.streams)[0]!)
        .catch(() => [])) as unknown[][];
      return groups.length > 0 ? String(groups[0]![1]) : undefined;
    }, 'consumer group created');

    const produced = await runCli(
      ['produce', 'synthetic', '--symbols', 'AAA,BBB', '--count', '5000', '--seed', '7'],
      env,
    );
    expect(produced.code, produced.stderr).toBe(0);
    expect(produced.stderr).toMatch(/"ticks":5000/);

    await waitUntil(async () => {
      let pendingOrLag = 0;
      for (const s of allStreamKeys(config.streams)) {
        for (const g of (await redis.call('XINFO', 'GROUPS', s)) as unknown[][]) {
          const info = new Map<string, unknown>();
          for (let i = 0; i < g.length; i += 2) info.set(String(g[i]), g[i + 1]);
          pendingOrLag += Number(info.get('pending')) + Number(info.get('lag') ?? 1);
        }
      }
      return pendingOrLag === 0;
    }, `group ${group} caught up`);

    const quote = await runCli(['quote', 'AAA', 'BBB'], env);
    expect(quote.code).toBe(0);
    expect(quote.stdout).toMatch(/^symbol\s+bid\s+bid_size\s+ask/m);
    expect(quote.stdout).toMatch(/^AAA\s+\d+(\.\d+)?\s+\d+/m);
    expect(quote.stdout).toMatch(/^BBB\s+\d/m);

    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(
      new RegExp(`tickstream_worker_ticks_total\\{group="${group}",sink="quotes"\\} 5000`),
    );
    // Histograms observed by the run: batch sizes adding up to every tick, ack ages from both clocks.
    expect(metrics).toMatch(
      new RegExp(`tickstream_sink_batch_ticks_sum\\{group="${group}",sink="quotes"\\} 5000`),
    );
    for (const name of ['tickstream_sink_write_seconds_count', 'tickstream_sink_flush_seconds_count']) {
      expect(metrics).toMatch(new RegExp(`${name}\\{group="${group}",sink="quotes"\\} [1-9]`));
    }
    for (const from of ['exchange', 'stream']) {
      expect(metrics).toMatch(
        new RegExp(
          `tickstream_sink_ack_age_seconds_count\\{group="${group}",sink="quotes",from="${from}"\\} [1-9]`,
        ),
      );
    }
    expect(metrics).toMatch(/^nodejs_eventloop_lag_seconds /m);
    expect(metrics).toMatch(new RegExp(`tickstream_group_pending\\{group="${group}",stream="[^"]+"\\} 0`));
    const ready = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({
      ready: true,
      checks: { redis: 'ok', [`group ${group}`]: 'ok' },
    });

    consumer.kill('SIGTERM');
    const r = await finished(consumer);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/stopping gracefully/);
    expect(r.stderr).toMatch(/worker stopped/);
    for (const s of allStreamKeys(config.streams)) {
      const summary = (await redis.call('XPENDING', s, group)) as [number];
      expect(Number(summary[0]), `pending on ${s} after SIGTERM; consumer log: ${r.stderr}`).toBe(0);
    }

    const status = await runCli(['status', '--json'], env);
    expect(status.code).toBe(0);
    const parsed = JSON.parse(status.stdout) as {
      shards: { length: number; groups: { group: string; pending: number }[] }[];
    };
    expect(parsed.shards).toHaveLength(2);
    expect(parsed.shards.reduce((n, s) => n + s.length, 0)).toBeGreaterThan(0);
    expect(parsed.shards[0]!.groups[0]).toMatchObject({ group, pending: 0, lag: 0 });
  }, 240_000); // five CLI processes: each takes many seconds to start on a loaded machine

  it('consume archive: SIGTERM while the flush waits on a locked table finishes it once released; acked once, nothing pending', async () => {
    const schema = uniqueName('clilock');
    const pool = createPgPool({ ...config.postgres, schema }, { log: silentLogger(), max: 2 });
    const lock = await pool.connect();
    // Streams of its own: the archive group reads from the start, and the other tests' ticks are not for it.
    const own = testConfig();
    const archiveEnv = {
      ...env,
      TICKSTREAM_STREAM_PREFIX: own.streams.prefix,
      DATABASE_URL,
      TICKSTREAM_PG_SCHEMA: schema,
      TICKSTREAM_PG_TIMESCALE: 'off',
    };
    const group = uniqueName('archive');
    const rows = async () =>
      Number(
        (
          await pool.query<{ n: string }>(
            `SELECT ((SELECT count(*) FROM "${schema}".trades) + (SELECT count(*) FROM "${schema}".quotes))::text AS n`,
          )
        ).rows[0]!.n,
      );
    /** The "worker stopped" line's count of entries this process acknowledged. */
    const acked = (stderr: string) => Number(/"acked":(\d+)[^\n]*"msg":"worker stopped"/.exec(stderr)?.[1]);
    const produce = async (seed: string) => {
      const r = await runCli(
        ['produce', 'synthetic', '--symbols', 'LA,LB', '--count', '1000', '--seed', seed],
        archiveEnv,
      );
      expect(r.code, r.stderr).toBe(0);
    };
    try {
      const first = startCli(['consume', 'archive', '--group', group], archiveEnv);
      await produce('21');
      await waitUntil(
        async () => (await rows().catch(() => 0)) === 1000 && (await pendingTotal(redis, own, group)) === 0,
        'the first thousand ticks archived and acknowledged',
        { timeoutMs: 60_000, intervalMs: 100 },
      );

      // Hold the archive's tables: the next flush waits on the lock, its entries pending on the consumer.
      await lock.query('BEGIN');
      await lock.query(`LOCK TABLE "${schema}".trades, "${schema}".quotes IN ACCESS EXCLUSIVE MODE`);
      await produce('22');
      await waitUntil(
        async () =>
          (
            await pool.query(
              `SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE NOT l.granted AND n.nspname = $1`,
              [schema],
            )
          ).rowCount! > 0,
        'a flush waiting on the locked table',
        { timeoutMs: 30_000 },
      );
      const held = await pendingTotal(redis, own, group);
      expect(held).toBeGreaterThan(0);
      first.kill('SIGTERM');
      await waitUntil(() => /stopping gracefully/.test(first.out.stderr), 'the consumer to take the signal');
      expect(first.exitCode).toBeNull(); // still waiting on the store
      await lock.query('COMMIT');
      const r = await finished(first);
      expect(r.code, r.stderr).toBe(0);
      expect(await pendingTotal(redis, own, group)).toBe(0);
      expect(await rows()).toBeGreaterThan(1000);

      // The rest (if the stop left any unread) goes to a new process; no entry is acknowledged twice.
      const second = startCli(['consume', 'archive', '--group', group], archiveEnv);
      // Running before it is signalled: with the read linger the first process may have taken all of the second
      // thousand in its held flush, and a process signalled while it starts has no handler yet.
      await waitUntil(() => /"msg":"consuming"/.test(second.out.stderr), 'the second process consuming', {
        timeoutMs: 30_000,
      });
      await waitUntil(
        async () => (await rows()) === 2000 && (await pendingTotal(redis, own, group)) === 0,
        'both thousands archived and acknowledged',
        { timeoutMs: 60_000, intervalMs: 100 },
      );
      second.kill('SIGTERM');
      const r2 = await finished(second);
      expect(r2.code, r2.stderr).toBe(0);
      let entries = 0;
      for (const s of allStreamKeys(own.streams)) entries += await redis.xlen(s);
      expect(acked(r.stderr) + acked(r2.stderr)).toBe(entries);
      expect(await pendingTotal(redis, own, group)).toBe(0);
    } finally {
      await stopChildren();
      await lock.query('ROLLBACK').catch(() => undefined);
      lock.release();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await closePgPool(pool);
      await cleanupPrefix(redis, own.streams.prefix);
    }
  }, 240_000);

  it('quote for an unknown symbol says so and exits 1', async () => {
    const r = await runCli(['quote', 'NOPE'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no quote yet for: NOPE/);
  });
});
