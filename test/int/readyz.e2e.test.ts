import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { finished, startCli, stopChildren } from '../helpers/cli.ts';
import { uniqueName, waitUntil } from '../helpers/index.ts';
import {
  freePort,
  privatePostgres,
  privateRedis,
  privateServersAvailable,
  type PrivateServer,
} from '../helpers/private-servers.ts';

/**
 * /readyz of a real `tickstream consume archive` process turns unready when its Redis or its PostgreSQL is
 * stopped, and ready again once they are back, while /healthz stays up. Both servers are private to the test
 * (never the shared ones): it kills them.
 */
const available = privateServersAvailable();
if (!available.ok) console.warn(`skipping the /readyz test: ${available.reason}`);

interface Ready {
  ready: boolean;
  checks: Record<string, string>;
}

describe.skipIf(!available.ok)('/readyz of a consumer (private Redis and PostgreSQL)', () => {
  let redis: PrivateServer;
  let pg: PrivateServer;
  beforeAll(async () => {
    [redis, pg] = await Promise.all([privateRedis(), privatePostgres()]);
  }, 120_000);
  afterAll(async () => {
    await Promise.all([redis?.destroy(), pg?.destroy()]);
  });
  afterEach(stopChildren);

  it('is unready while Redis or PostgreSQL is stopped, ready again after; alive throughout', async () => {
    const port = await freePort();
    const group = uniqueName('archive');
    const consumer = startCli(['consume', 'archive', '--group', group], {
      REDIS_URL: redis.url,
      DATABASE_URL: pg.url,
      TICKSTREAM_STREAM_PREFIX: uniqueName('ts'),
      TICKSTREAM_SHARDS: '2',
      TICKSTREAM_METRICS_PORT: String(port),
      TICKSTREAM_RETRY_MAX_MS: '500',
      TICKSTREAM_BLOCK_MS: '200',
      LOG_LEVEL: 'warn',
    });
    const base = `http://127.0.0.1:${port}`;
    const readyz = async (): Promise<{ status: number; body: Ready }> => {
      const res = await fetch(`${base}/readyz`);
      return { status: res.status, body: (await res.json()) as Ready };
    };
    const until = (want: (r: { status: number; body: Ready }) => boolean, what: string) =>
      waitUntil(
        async () => {
          const r = await readyz();
          return want(r) ? r : undefined;
        },
        `${what} (consumer log: ${consumer.out.stderr.slice(-2000)})`,
        { timeoutMs: 60_000, intervalMs: 200 },
      );
    try {
      const first = await until((r) => r.status === 200, 'ready at start');
      expect(first.body.checks).toEqual({
        redis: 'ok',
        [`group ${group}`]: 'ok',
        postgres: 'ok',
        worker: 'ok',
      });

      await redis.stop();
      const down = await until((r) => r.status === 503, 'unready with Redis stopped');
      expect(down.body.ready).toBe(false);
      expect(down.body.checks.redis).not.toBe('ok');
      expect(down.body.checks.postgres).toBe('ok');
      expect((await fetch(`${base}/healthz`)).status).toBe(200);

      // Redis comes back empty (no persistence): ready again once the worker has recreated its group.
      await redis.start();
      const back = await until((r) => r.status === 200, 'ready after Redis restarted');
      expect(back.body.checks[`group ${group}`]).toBe('ok');

      await pg.stop();
      const pgDown = await until((r) => r.status === 503, 'unready with PostgreSQL stopped');
      expect(pgDown.body.checks.postgres).not.toBe('ok');
      expect(pgDown.body.checks.redis).toBe('ok');
      expect((await fetch(`${base}/healthz`)).status).toBe(200);

      await pg.start();
      const pgBack = await until((r) => r.status === 200, 'ready after PostgreSQL restarted');
      expect(pgBack.body.checks.postgres).toBe('ok');
    } finally {
      consumer.kill('SIGTERM');
      const r = await finished(consumer, 60_000);
      expect(r.code, r.stderr).toBe(0);
    }
  }, 300_000);
});
