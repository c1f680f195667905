import type { FastifyInstance } from 'fastify';
import { streamsStatus, type StreamsStatus } from '../../../../consumers/status.ts';
import { pairs } from '../../../../shared/redis.ts';
import { deadLetterKey } from '../../../../shared/streams.ts';
import { unavailable } from '../../../errors.ts';
import { withTimeout } from '../../../tiers/port.ts';

interface Status extends StreamsStatus {
  at: number;
  deadLetterNewest: { id: string; group: string; reason: string }[];
  stores: Record<string, { ok: boolean; ms?: number; error?: string; configured?: boolean }>;
  push: { connected: boolean; clients: number };
}

/**
 * GET /v1/status: what `tickstream status` shows (consumers/status.ts), as JSON, plus the newest dead-letter
 * reasons and each store's state. Computed at most once a second however many dashboards ask.
 */
export default async function status(app: FastifyInstance): Promise<void> {
  const { redis, config, postgresTier, redisTier, subscriber, hub } = app.ctx;
  const timeout = Math.max(config.api.tierTimeoutMs, 2000);
  let last: Status | undefined;
  let flight: Promise<Status> | undefined;

  async function probe(fn: () => Promise<unknown>) {
    const t0 = performance.now();
    try {
      await withTimeout(fn(), timeout, 'store');
      return { ok: true, ms: Math.round((performance.now() - t0) * 10) / 10 };
    } catch (err) {
      return { ok: false, error: err instanceof Error ? err.message : String(err) };
    }
  }

  async function collect(): Promise<Status> {
    const [streams, newest, redisState, pgState] = await Promise.all([
      withTimeout(streamsStatus(redis, config.streams), timeout, 'redis'),
      withTimeout(
        redis.call('XREVRANGE', deadLetterKey(config.streams), '+', '-', 'COUNT', '5'),
        timeout,
        'redis',
      ),
      probe(() => redisTier.ping()),
      probe(() => postgresTier.ping()),
    ]);
    return {
      ...streams,
      at: Date.now(),
      deadLetterNewest: (newest as [string, string[]][]).map(([id, fields]) => {
        const f = pairs(fields);
        return { id, group: String(f.get('group') ?? '?'), reason: String(f.get('reason') ?? '') };
      }),
      stores: {
        redis: redisState,
        postgres: pgState,
        questdb: { ok: true, configured: config.questdb.clientConf !== undefined },
      },
      push: { connected: subscriber?.connected ?? false, clients: hub.size },
    };
  }

  app.get('/', async () => {
    if (last !== undefined && Date.now() - last.at < 1000) return last;
    flight ??= collect().finally(() => (flight = undefined));
    try {
      last = await flight;
      return last;
    } catch (err) {
      throw unavailable(
        `status: ${err instanceof Error ? err.message : String(err)}`,
        config.api.retryAfterS,
      );
    }
  });
}
