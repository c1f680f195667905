import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HttpError } from '../../../errors.ts';
import { clearCache } from '../../../schemas/cache.ts';
import { KINDS } from '../../../tiers/memory.ts';
import type { Kind } from '../../../tiers/port.ts';

/**
 * GET /v1/cache/stats: per kind hits, misses, coalesced waits, stale serves, evictions, size, hit ratio; per
 * store tier reads, errors and timeouts; push counters.
 * POST /v1/cache/clear {kind?, symbol?}: admin only (bearer TICKSTREAM_API_ADMIN_TOKEN); without a token
 * configured the admin routes are off and answer 404 admin_disabled.
 */
export default async function cache(app: FastifyInstance): Promise<void> {
  const { model, config, subscriber, hub } = app.ctx;
  const token = config.api.adminToken;

  app.get('/stats', async () => ({
    ...model.memory.stats(),
    push: { pubsub: subscriber?.stats ?? null, stream: { clients: hub.size, ...hub.stats } },
  }));

  app.post<{ Body: { kind?: Kind; symbol?: string } | null }>(
    '/clear',
    { schema: clearCache, preHandler: async (req) => authorize(req, token) },
    async (req) => {
      const kind = req.body?.kind;
      const symbol = req.body?.symbol;
      const kinds = kind === undefined ? KINDS : [kind];
      const match =
        symbol === undefined
          ? undefined
          : (key: string) => key === symbol || key.startsWith(`${symbol}:`) || key.startsWith(`["${symbol}"`);
      const cleared = model.memory.invalidate(kinds, match);
      app.ctx.log.info(
        { kind: kind ?? 'all', symbol: symbol ?? 'all', cleared },
        'L1 cleared by admin request',
      );
      return { cleared, kind: kind ?? 'all', symbol: symbol ?? null };
    },
  );
}

function authorize(req: FastifyRequest, token: string | undefined): void {
  if (token === undefined) {
    throw new HttpError(
      404,
      'admin_disabled',
      'admin routes are off: set TICKSTREAM_API_ADMIN_TOKEN to enable them',
    );
  }
  const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  if (a.length !== b.length || !timingSafeEqual(a, b)) {
    throw new HttpError(
      401,
      'unauthorized',
      'a valid bearer token is required (Authorization: Bearer <token>)',
      {
        'www-authenticate': 'Bearer',
      },
    );
  }
}
