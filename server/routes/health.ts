import type { FastifyInstance } from 'fastify';
import { register } from 'prom-client';
import { withTimeout } from '../tiers/port.ts';

/** GET /healthz (the process answers), GET /readyz (Redis and PostgreSQL answer), GET /metrics (Prometheus). */
export default async function health(app: FastifyInstance): Promise<void> {
  const { redisTier, postgresTier, config, model } = app.ctx;
  const timeout = Math.max(config.api.tierTimeoutMs, 1000);

  app.get('/healthz', async () => ({ ok: true }));

  app.get('/readyz', async (_req, reply) => {
    const check = async (fn: () => Promise<void>, name: string) => {
      try {
        await withTimeout(fn(), timeout, name);
        return { ok: true };
      } catch (err) {
        return { ok: false, error: err instanceof Error ? err.message : String(err) };
      }
    };
    const [redis, postgres] = await Promise.all([
      check(() => redisTier.ping(), 'redis'),
      check(() => postgresTier.ping(), 'postgres'),
    ]);
    const ok = redis.ok && postgres.ok;
    return reply.code(ok ? 200 : 503).send({ ok, redis, postgres });
  });

  app.get('/metrics', async (_req, reply) => {
    model.memory.exportGauges();
    return reply.type(register.contentType).send(await register.metrics());
  });
}
