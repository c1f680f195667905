import type { FastifyInstance } from 'fastify';
import { unavailable } from '../../../errors.ts';
import { withTimeout } from '../../../tiers/port.ts';

/**
 * GET /v1/symbols?limit=N: the most recently traded symbols (bars' symbol table), the bar timeframes served and
 * those with indicators.
 */
export default async function symbols(app: FastifyInstance): Promise<void> {
  const { postgresTier, config } = app.ctx;
  const timeframes = config.bars.timeframes;
  let cached: { at: number; limit: number; symbols: string[] } | undefined;
  app.get<{ Querystring: { limit: number } }>(
    '/',
    {
      schema: {
        querystring: {
          type: 'object',
          properties: { limit: { type: 'integer', minimum: 1, maximum: config.api.maxLimit, default: 50 } },
          additionalProperties: false,
        },
      },
    },
    async (req) => {
      const { limit } = req.query;
      if (cached === undefined || cached.limit !== limit || Date.now() - cached.at > 5000) {
        try {
          const list = await withTimeout(
            postgresTier.activeSymbols(limit),
            config.api.tierTimeoutMs,
            'postgres',
          );
          cached = { at: Date.now(), limit, symbols: [...list].sort() };
        } catch (err) {
          if (cached === undefined)
            throw unavailable(err instanceof Error ? err.message : String(err), config.api.retryAfterS);
        }
      }
      return { symbols: cached.symbols, timeframes, indicatorTimeframes: config.indicators.timeframes };
    },
  );
}
