import type { Config } from '../shared/config.ts';
import type { Logger } from '../shared/logger.ts';
import { createPgPool, closePgPool, type PgPool } from '../shared/pg.ts';
import {
  postgresReady,
  questdbReady,
  serveProbes,
  type ProbeServer,
  type ReadinessCheck,
} from '../shared/probes.ts';
import { createQuestDbHttp } from '../shared/questdb.ts';

/**
 * The edge's side of shared/probes.ts: a long-running command serves /metrics, /healthz and /readyz when
 * TICKSTREAM_METRICS_PORT is set, on TICKSTREAM_METRICS_HOST, and checks the stores it writes to.
 */
export interface Probes {
  setChecks(checks: readonly ReadinessCheck[]): void;
  close(): Promise<void>;
}

/** Start the probe server, or nothing when the port is 0. The process's readiness starts with no checks. */
export async function startProbes(config: Config, log: Logger): Promise<Probes> {
  if (config.metrics.port === 0) return { setChecks: () => undefined, close: async () => undefined };
  const server: ProbeServer = await serveProbes({
    host: config.metrics.host,
    port: config.metrics.port,
    log: log.child({ component: 'probes' }),
  });
  return { setChecks: (c) => server.setChecks(c), close: () => server.close() };
}

/**
 * Readiness checks of stores other than Redis, each on its own small connection so that a probe never waits
 * behind the pipeline's writes. `close` releases them.
 */
export function storeChecks(
  config: Config,
  stores: readonly ('postgres' | 'questdb')[],
  log: Logger,
): { checks: ReadinessCheck[]; close: () => Promise<void> } {
  const checks: ReadinessCheck[] = [];
  let pool: PgPool | undefined;
  if (stores.includes('postgres')) {
    pool = createPgPool(config.postgres, { log, max: 1, applicationName: 'tickstream:readyz' });
    checks.push(postgresReady(pool));
  }
  if (stores.includes('questdb')) {
    const http = createQuestDbHttp(config.questdb);
    if (http !== undefined) checks.push(questdbReady(http));
  }
  return {
    checks,
    close: async () => {
      if (pool !== undefined) await closePgPool(pool);
    },
  };
}
