import { symbolParams, timeParam } from './common.ts';

export function getBars(timeframes: readonly string[], maxLimit: number) {
  return {
    params: symbolParams,
    querystring: {
      type: 'object',
      properties: {
        tf: {
          type: 'string',
          enum: [...timeframes],
          default: timeframes.includes('1m') ? '1m' : timeframes[0],
        },
        limit: { type: 'integer', minimum: 1, maximum: maxLimit, default: Math.min(100, maxLimit) },
        from: timeParam,
        to: timeParam,
      },
      additionalProperties: false,
    },
  } as const;
}

export function getIndicators(timeframes: readonly string[]) {
  return {
    params: symbolParams,
    querystring: {
      type: 'object',
      properties: {
        tf: {
          type: 'string',
          enum: [...timeframes],
          default: timeframes.includes('1m') ? '1m' : timeframes[0],
        },
      },
      additionalProperties: false,
    },
  } as const;
}

export function getTrades(maxLimit: number) {
  return {
    params: symbolParams,
    querystring: {
      type: 'object',
      properties: {
        from: timeParam,
        to: timeParam,
        limit: { type: 'integer', minimum: 1, maximum: maxLimit, default: Math.min(100, maxLimit) },
        cursor: { type: 'string', minLength: 1, maxLength: 400 },
      },
      additionalProperties: false,
    },
  } as const;
}
