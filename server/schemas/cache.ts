import { SYMBOL_PATTERN } from './common.ts';

export const clearCache = {
  body: {
    type: ['object', 'null'],
    properties: {
      kind: { type: 'string', enum: ['quote', 'bar', 'bars', 'indicators', 'history', 'trades'] },
      symbol: { type: 'string', pattern: SYMBOL_PATTERN },
    },
    additionalProperties: false,
  },
} as const;
