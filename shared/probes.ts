import { createServer, type Server } from 'node:http';
import { errorMessage } from './errors.ts';
import type { Logger } from './logger.ts';
import { metricsText, startProcessMetrics } from './metrics.ts';
import type { PgPool } from './pg.ts';
import type { QuestDbHttp } from './questdb.ts';
import { batch, pairs, type RedisClient } from './redis.ts';
import { allStreamKeys, type StreamLayout } from './streams.ts';

/**
 * The observability endpoint of a long-running process, Kubernetes-style (docs/operations.md):
 *
 *   GET /metrics  Prometheus exposition of the process's registry (shared/metrics.ts)
 *   GET /healthz  liveness: 200 while the event loop answers; a failure means "restart me"
 *   GET /readyz   readiness: 200 when every check passes, 503 with the failing checks otherwise; a failure
 *                 means "do not count on me now" (a store is down, the group is missing, the worker has been
 *                 retrying without progress longer than the threshold). It never means "restart me".
 *
 * Bound to 127.0.0.1 unless told otherwise (TICKSTREAM_METRICS_HOST): the page names streams and groups.
 */
export interface ReadinessCheck {
  readonly name: string;
  /** Resolves when ready; throws (or rejects) with the reason otherwise. */
  check(): Promise<void>;
}

export interface ProbeServerOptions {
  host: string;
  port: number;
  checks?: readonly ReadinessCheck[];
  /** A check that has not answered within this long fails (default 2 s). */
  checkTimeoutMs?: number;
  log?: Logger;
}

export interface ProbeServer {
  readonly server: Server;
  /** The port actually bound (useful with port 0). */
  readonly port: number;
  /** Replace the readiness checks (a process adds them once its connections exist). */
  setChecks(checks: readonly ReadinessCheck[]): void;
  close(): Promise<void>;
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, string>;
}

/** Run every check at once, each bounded by the timeout. */
export async function readiness(checks: readonly ReadinessCheck[], timeoutMs = 2000): Promise<Readiness> {
  const results = await Promise.all(
    checks.map(async (c) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          c.check(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
        return [c.name, 'ok'] as const;
      } catch (err) {
        return [c.name, errorMessage(err)] as const;
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return { ready: results.every(([, r]) => r === 'ok'), checks: Object.fromEntries(results) };
}

/** Start the default process metrics and serve /metrics, /healthz and /readyz. Resolves once listening. */
export async function serveProbes(options: ProbeServerOptions): Promise<ProbeServer> {
  startProcessMetrics();
  let checks = options.checks ?? [];
  const timeoutMs = options.checkTimeoutMs ?? 2000;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const reply = (status: number, type: string, body: string) =>
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
    switch (path) {
      case '/metrics':
        metricsText().then(
          (m) => reply(200, m.contentType, m.body),
          (err: unknown) => {
            options.log?.warn({ err }, 'collecting metrics failed');
            reply(500, 'text/plain', 'collecting metrics failed\n');
          },
        );
        return;
      case '/healthz':
        reply(200, 'text/plain', 'ok\n');
        return;
      case '/readyz':
        void readiness(checks, timeoutMs).then((r) => {
          if (!r.ready) options.log?.debug({ checks: r.checks }, 'not ready');
          reply(r.ready ? 200 : 503, 'application/json', `${JSON.stringify(r)}\n`);
        });
        return;
      default:
        reply(404, 'text/plain', 'not found: try /metrics, /healthz or /readyz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Keep-alive connections from a scraper must not hold a graceful stop open.
  server.unref();
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : options.port;
  options.log?.info({ host: options.host, port }, 'serving /metrics, /healthz and /readyz');
  return {
    server,
    port,
    setChecks: (next) => {
      checks = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Whether a component is stuck retrying: `failing()` on each failed attempt, `ok()` on each success. Not
 * ready once it has been failing without a success for longer than the threshold.
 */
export class RetryState {
  private since: number | undefined;
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  failing(): void {
    this.since ??= this.now();
  }

  ok(): void {
    this.since = undefined;
  }

  /** Milliseconds since the first failure without a success after it; 0 when not failing. */
  failingForMs(): number {
    return this.since === undefined ? 0 : this.now() - this.since;
  }

  check(name: string, thresholdMs: number): ReadinessCheck {
    return {
      name,
      check: async () => {
        const ms = this.failingForMs();
        if (ms > thresholdMs) {
          throw new Error(
            `retrying without success for ${Math.round(ms / 1000)} s (limit ${thresholdMs} ms)`,
          );
        }
      },
    };
  }
}

/** Redis answers PING. */
export function redisReady(redis: RedisClient, name = 'redis'): ReadinessCheck {
  return {
    name,
    check: async () => {
      await redis.ping();
    },
  };
}

/** The consumer group exists on every shard (it is recreated by the worker after a Redis restart). */
export function groupReady(redis: RedisClient, layout: StreamLayout, group: string): ReadinessCheck {
  return {
    name: `group ${group}`,
    check: async () => {
      const streams = allStreamKeys(layout);
      const replies = await batch(
        redis,
        streams.map((s) => ['XINFO', 'GROUPS', s] as const),
      );
      const missing = streams.filter((_, i) => {
        const [err, groups] = replies[i]!;
        if (err !== null) return true;
        return !(groups as unknown[][]).some((g) => pairs(g).get('name') === group);
      });
      if (missing.length > 0) throw new Error(`group "${group}" missing on ${missing.join(', ')}`);
    },
  };
}

/** PostgreSQL answers `SELECT 1`. */
export function postgresReady(pool: PgPool, name = 'postgres'): ReadinessCheck {
  return {
    name,
    check: async () => {
      await pool.query('SELECT 1');
    },
  };
}

/** QuestDB's HTTP endpoint answers `SELECT 1`. */
export function questdbReady(http: QuestDbHttp, name = 'questdb'): ReadinessCheck {
  return {
    name,
    check: async () => {
      await http.exec('SELECT 1');
    },
  };
}
