import type { FastifyInstance } from 'fastify';
import { unavailable, unknownSymbol } from '../../../errors.ts';
import { getIndicators } from '../../../schemas/bars.ts';

/** GET /v1/indicators/:symbol?tf=1m: the latest values (of the newest closed bar computed). */
export default async function indicators(app: FastifyInstance): Promise<void> {
  const { model, config } = app.ctx;
  app.get<{ Params: { symbol: string }; Querystring: { tf: string } }>(
    '/:symbol',
    { schema: getIndicators(config.indicators.timeframes) },
    async (req) => {
      const { symbol } = req.params;
      const o = await model.indicators(symbol, req.query.tf);
      if (o.status === 'missing') throw unknownSymbol(symbol, `${req.query.tf} indicators`);
      if (o.status === 'unavailable') throw unavailable(o.reason, config.api.retryAfterS);
      return { ...o.value, stale: o.stale, age_ms: Math.round(o.ageMs), source: o.source };
    },
  );
}
