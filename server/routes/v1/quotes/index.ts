import type { FastifyInstance } from 'fastify';
import { unavailable, unknownSymbol } from '../../../errors.ts';
import { parseSymbols } from '../../../params.ts';
import { SYMBOL_PATTERN } from '../../../schemas/common.ts';
import { getQuote, getQuotes } from '../../../schemas/quotes.ts';
import type { Outcome, QuoteView } from '../../../tiers/port.ts';

const SYMBOL = new RegExp(SYMBOL_PATTERN);

/** GET /v1/quotes/:symbol and GET /v1/quotes?symbols=A,B,C (one round trip per tier for all misses). */
export default async function quotes(app: FastifyInstance): Promise<void> {
  const { model, config } = app.ctx;

  app.get<{ Params: { symbol: string } }>('/:symbol', { schema: getQuote }, async (req) => {
    const { symbol } = req.params;
    const o = (await model.quotes([symbol])).get(symbol)!;
    if (o.status === 'missing') throw unknownSymbol(symbol, 'quote');
    if (o.status === 'unavailable') throw unavailable(o.reason, config.api.retryAfterS);
    return quoteBody(o);
  });

  app.get<{ Querystring: { symbols: string } }>('/', { schema: getQuotes }, async (req) => {
    const symbols = parseSymbols('symbols', req.query.symbols, SYMBOL, config.api.maxBatch);
    const outcomes = await model.quotes(symbols);
    const body = { quotes: [] as object[], missing: [] as string[], unavailable: [] as string[] };
    let reason = '';
    for (const s of symbols) {
      const o = outcomes.get(s)!;
      if (o.status === 'ok') body.quotes.push(quoteBody(o));
      else if (o.status === 'missing') body.missing.push(s);
      else {
        body.unavailable.push(s);
        reason = o.reason;
      }
    }
    if (body.quotes.length === 0 && body.unavailable.length > 0)
      throw unavailable(reason, config.api.retryAfterS);
    return body;
  });
}

function quoteBody(o: Extract<Outcome<QuoteView>, { status: 'ok' }>) {
  const q = o.value;
  return {
    ...q,
    age_ms: Math.max(0, Date.now() - q.updated_at),
    stale: o.stale,
    source: o.source,
  };
}
