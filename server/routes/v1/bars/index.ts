import type { FastifyInstance } from 'fastify';
import { TIMEFRAME_NS, type TimeframeName } from '../../../../consumers/bars/aggregate.ts';
import { badRequest, unavailable, unknownSymbol } from '../../../errors.ts';
import { parseTime } from '../../../params.ts';
import { getBars } from '../../../schemas/bars.ts';

interface Query {
  tf: TimeframeName;
  limit: number;
  from?: string;
  to?: string;
}

/**
 * GET /v1/bars/:symbol?tf=1m&limit=N: the newest N bars, oldest first, the open bar last and marked
 * (`closed: false`, `open_bar`). With from and/or to: the bars starting in [from, to) from PostgreSQL, or
 * QuestDB when configured (closed bars only); the range may span at most TICKSTREAM_API_MAX_RANGE_BARS bars.
 */
export default async function bars(app: FastifyInstance): Promise<void> {
  const { model, config } = app.ctx;
  const { maxLimit, maxRangeBars, retryAfterS } = config.api;

  app.get<{ Params: { symbol: string }; Querystring: Query }>(
    '/:symbol',
    { schema: getBars(config.bars.timeframes, maxLimit) },
    async (req) => {
      const { symbol } = req.params;
      const { tf, limit } = req.query;
      if (req.query.from === undefined && req.query.to === undefined) {
        const o = await model.bars(symbol, tf, limit);
        if (o.status === 'missing') throw unknownSymbol(symbol, `${tf} bars`);
        if (o.status === 'unavailable') throw unavailable(o.reason, retryAfterS);
        return {
          symbol,
          tf,
          bars: o.value.bars,
          open_bar: o.value.openBar,
          stale: o.stale,
          age_ms: Math.round(o.ageMs),
          source: o.source,
        };
      }
      const tfNs = TIMEFRAME_NS[tf];
      const to = req.query.to === undefined ? BigInt(Date.now()) * 1_000_000n : parseTime('to', req.query.to);
      const from =
        req.query.from === undefined ? to - BigInt(limit) * tfNs : parseTime('from', req.query.from);
      if (from >= to) throw badRequest('from: must be before to');
      const span = (to - from + tfNs - 1n) / tfNs;
      if (span > BigInt(maxRangeBars)) {
        throw badRequest(`from/to: the range spans ${span} ${tf} bars; at most ${maxRangeBars} per request`);
      }
      const o = await model.history(symbol, tf, from, to);
      if (o.status === 'unavailable') throw unavailable(o.reason, retryAfterS);
      const list = o.status === 'ok' ? o.value : [];
      if (list.length === 0) {
        const known = await model.bars(symbol, tf, 1);
        if (known.status === 'missing') throw unknownSymbol(symbol, `${tf} bars`);
      }
      return {
        symbol,
        tf,
        from: from.toString(),
        to: to.toString(),
        bars: list,
        stale: o.status === 'ok' && o.stale,
        age_ms: o.status === 'ok' ? Math.round(o.ageMs) : 0,
        source: o.status === 'ok' ? o.source : 'postgres',
      };
    },
  );
}
