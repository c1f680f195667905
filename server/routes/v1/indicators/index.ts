import type { FastifyInstance } from 'fastify';
import { unavailable, unknownSymbol } from '../../../errors.ts';
import { getIndicators } from '../../../schemas/bars.ts';
import type { IndicatorView, TierName } from '../../../tiers/port.ts';

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
      const v = o.value;
      // Field by field, not a spread plus fields: see quoteBody (routes/v1/quotes) for why.
      const body: IndicatorView & { stale: boolean; age_ms: number; source: TierName } = {
        symbol: v.symbol,
        tf: v.tf,
        start: v.start,
        time: v.time,
        status: v.status,
        values: v.values,
        stale: o.stale,
        age_ms: Math.round(o.ageMs),
        source: o.source,
      };
      return body;
    },
  );
}
