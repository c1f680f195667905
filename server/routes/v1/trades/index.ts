import type { FastifyInstance } from 'fastify';
import { badRequest, unavailable, unknownSymbol } from '../../../errors.ts';
import { parseTime } from '../../../params.ts';
import { getTrades } from '../../../schemas/bars.ts';
import { decodeCursor } from '../../../tiers/postgres.ts';

/** Longest from/to range of one trades request. */
export const MAX_TRADE_RANGE_NS = 24n * 3_600_000_000_000n;

interface Query {
  from?: string;
  to?: string;
  limit: number;
  cursor?: string;
}

/**
 * GET /v1/trades/:symbol?from=&to=&limit=&cursor=: archived trades in [from, to) (default: the last hour), in
 * exchange-time order, `limit` per page; `next_cursor` fetches the next page (same from/to), null at the end.
 */
export default async function trades(app: FastifyInstance): Promise<void> {
  const { model, config } = app.ctx;
  app.get<{ Params: { symbol: string }; Querystring: Query }>(
    '/:symbol',
    { schema: getTrades(config.api.maxLimit) },
    async (req) => {
      const { symbol } = req.params;
      const to = req.query.to === undefined ? BigInt(Date.now()) * 1_000_000n : parseTime('to', req.query.to);
      const from = req.query.from === undefined ? to - 3_600_000_000_000n : parseTime('from', req.query.from);
      if (from >= to) throw badRequest('from: must be before to');
      if (to - from > MAX_TRADE_RANGE_NS) throw badRequest('from/to: at most 24 hours per request');
      const after = req.query.cursor === undefined ? undefined : decodeCursor(req.query.cursor);
      if (req.query.cursor !== undefined && after === undefined)
        throw badRequest('cursor: not a cursor this API returned');
      const o = await model.trades({ symbol, fromNs: from, toNs: to, limit: req.query.limit, after });
      if (o.status === 'unavailable') throw unavailable(o.reason, config.api.retryAfterS);
      const page = o.status === 'ok' ? o.value : { trades: [], next_cursor: null };
      if (page.trades.length === 0 && after === undefined) {
        const known = await model.quotes([symbol]);
        if (known.get(symbol)?.status === 'missing') throw unknownSymbol(symbol, 'trades');
      }
      return { symbol, from: from.toString(), to: to.toString(), ...page };
    },
  );
}
