/** JSON schemas shared by the routes (Fastify validates params and query strings against them). */
export const SYMBOL_PATTERN = '^[A-Za-z0-9._:/^=-]{1,64}$';

export const symbolParams = {
  type: 'object',
  required: ['symbol'],
  properties: { symbol: { type: 'string', pattern: SYMBOL_PATTERN } },
  additionalProperties: false,
} as const;

/** A time: ISO 8601 (up to nanoseconds, kept exact) or integer milliseconds since the epoch. */
export const timeParam = { type: 'string', minLength: 1, maxLength: 40 } as const;

export const errorBody = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { code: { type: 'string' }, message: { type: 'string' } },
      required: ['code', 'message'],
    },
  },
} as const;
