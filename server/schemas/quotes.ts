import { errorBody, symbolParams } from './common.ts';

const nullableNumber = { type: ['number', 'null'] } as const;
const nullableString = { type: ['string', 'null'] } as const;

/** One quote as answered; `stale` and `age_ms` say how current it is. */
export const quote = {
  type: 'object',
  properties: {
    symbol: { type: 'string' },
    bid: nullableNumber,
    bid_size: nullableNumber,
    ask: nullableNumber,
    ask_size: nullableNumber,
    last: nullableNumber,
    last_size: nullableNumber,
    quote_ts: nullableString,
    quote_venue: nullableString,
    trade_ts: nullableString,
    trade_venue: nullableString,
    ts: { type: 'string', description: 'exchange time of the newer of quote and trade, ns since the epoch' },
    time: { type: 'string' },
    updated_at: { type: 'number' },
    age_ms: { type: 'number' },
    stale: { type: 'boolean' },
    source: { type: 'string' },
  },
} as const;

export const getQuote = {
  params: symbolParams,
  response: { 200: quote, '4xx': errorBody, '5xx': errorBody },
} as const;

export const getQuotes = {
  querystring: {
    type: 'object',
    required: ['symbols'],
    properties: { symbols: { type: 'string', minLength: 1, maxLength: 10_000 } },
    additionalProperties: false,
  },
  response: {
    200: {
      type: 'object',
      properties: {
        quotes: { type: 'array', items: quote },
        missing: { type: 'array', items: { type: 'string' } },
        unavailable: { type: 'array', items: { type: 'string' } },
      },
    },
    '4xx': errorBody,
    '5xx': errorBody,
  },
} as const;
