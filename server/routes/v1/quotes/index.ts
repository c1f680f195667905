import type { FastifyInstance } from 'fastify';
import { unavailable, unknownSymbol } from '../../../errors.ts';
import { parseSymbols } from '../../../params.ts';
import { SYMBOL_PATTERN } from '../../../schemas/common.ts';
import { getQuote, getQuotes } from '../../../schemas/quotes.ts';
import type { Outcome, QuoteView, TierName } from '../../../tiers/port.ts';

const SYMBOL = new RegExp(SYMBOL_PATTERN);

/** GET /v1/quotes/:symbol and GET /v1/quotes?symbols=A,B,C (one round trip per tier for all misses). */
export default async function quotes(app: FastifyInstance): Promise<void> {
  const { model, config } = app.ctx;

  app.get<{ Params: { symbol: string } }>('/:symbol', { schema: getQuote }, async (req) => {
    const { symbol } = req.params;
    const o = await model.quote(symbol);
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

/**
 * The answer for one quote. Field by field rather than `{ ...q, age_ms, stale, source }`: on Node 20 a spread
 * followed by more fields takes V8's slow path, 5-10 us per object in isolation against ~0.05 us for this
 * (a spread alone is fast), and it showed in the server's CPU profile under `npm run bench -- serve`.
 */
export function quoteBody(o: Extract<Outcome<QuoteView>, { status: 'ok' }>): QuoteView & {
  age_ms: number;
  stale: boolean;
  source: TierName;
} {
  const q = o.value;
  return {
    symbol: q.symbol,
    bid: q.bid,
    bid_size: q.bid_size,
    ask: q.ask,
    ask_size: q.ask_size,
    quote_ts: q.quote_ts,
    quote_venue: q.quote_venue,
    last: q.last,
    last_size: q.last_size,
    trade_ts: q.trade_ts,
    trade_venue: q.trade_venue,
    ts: q.ts,
    time: q.time,
    updated_at: q.updated_at,
    age_ms: Math.max(0, Date.now() - q.updated_at),
    stale: o.stale,
    source: o.source,
  };
}
