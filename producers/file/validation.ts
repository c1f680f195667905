import {
  isPriceInRange,
  isPrintableName,
  isSizeInRange,
  MAX_PRICE,
  MAX_SIZE,
  MAX_TS_NS,
  MIN_PRICE,
  MIN_SIZE,
  TickSchema,
  type Tick,
} from '../../shared/model.ts';
import {
  F_ASK_PRICE,
  F_ASK_SIZE,
  F_BID_PRICE,
  F_BID_SIZE,
  F_PRICE,
  F_SEQ,
  F_SIDE,
  F_SIZE,
  F_SOURCE,
  F_SYMBOL,
  F_TS,
  F_VENUE,
  FIELDS,
  RowError,
} from './fields.ts';

/**
 * TickSchema's rules applied to one decoded row. By default a hand-written check applies them, because zod's
 * parse alone costs about as much as the whole 3.3 µs a row may take at the 300k rows/s target (measured by
 * bench/file.ts); `validation: 'zod'` runs TickSchema itself, and a unit test holds both to the same verdicts
 * on valid and broken rows.
 */
export type Validation = 'fast' | 'zod';

const FIELD_INDEX: ReadonlyMap<string, number> = new Map(FIELDS.map((f, i) => [f, i]));

export function validateZod(raw: Record<string, unknown>): Tick | RowError {
  const parsed = TickSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const key = issue.path[0];
  const field = typeof key === 'string' ? (FIELD_INDEX.get(key) ?? -1) : -1;
  return new RowError(field, issue.message, typeof key === 'string' ? raw[key] : undefined);
}

export const MAX_NAME = 64;

const NOT_PRINTABLE = 'must hold printable characters only (no control, format or bidi characters)';
const PRICE_RANGE = `out of range: must be from ${MIN_PRICE} to ${MAX_PRICE}`;
const SIZE_RANGE = `out of range: must be 0 or from ${MIN_SIZE} to ${MAX_SIZE}`;

/** TickSchema's rules, checked by hand (see the module comment for why). */
export function validateFast(raw: Record<string, unknown>): Tick | RowError {
  const source = raw.source as string;
  if (source.length < 1 || source.length > MAX_NAME)
    return new RowError(F_SOURCE, 'must be 1 to 64 characters', source);
  if (!isPrintableName(source)) return new RowError(F_SOURCE, NOT_PRINTABLE, source);
  const symbol = raw.symbol as string;
  if (symbol.length < 1 || symbol.length > MAX_NAME)
    return new RowError(F_SYMBOL, 'must be 1 to 64 characters', symbol);
  if (!isPrintableName(symbol)) return new RowError(F_SYMBOL, NOT_PRINTABLE, symbol);
  const ts = raw.ts as bigint;
  if (ts < 0n || ts > MAX_TS_NS) return new RowError(F_TS, 'out of range', ts);
  const seq = raw.seq as number;
  if (!Number.isSafeInteger(seq) || seq < 0) {
    return new RowError(F_SEQ, `must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}`, seq);
  }
  const venue = raw.venue as string;
  if (venue.length > MAX_NAME) return new RowError(F_VENUE, 'must be at most 64 characters', venue);
  if (!isPrintableName(venue)) return new RowError(F_VENUE, NOT_PRINTABLE, venue);
  if (raw.type === 'trade') {
    const p = price(F_PRICE, raw.price);
    if (p !== undefined) return p;
    const z = size(F_SIZE, raw.size);
    if (z !== undefined) return z;
    const side = raw.side;
    if (side !== 'buy' && side !== 'sell' && side !== '')
      return new RowError(F_SIDE, 'must be buy, sell or empty', side);
  } else {
    const wrong =
      price(F_BID_PRICE, raw.bidPrice) ??
      size(F_BID_SIZE, raw.bidSize) ??
      price(F_ASK_PRICE, raw.askPrice) ??
      size(F_ASK_SIZE, raw.askSize);
    if (wrong !== undefined) return wrong;
  }
  return raw as unknown as Tick;
}

function price(field: number, v: unknown): RowError | undefined {
  if (typeof v === 'number' && isPriceInRange(v)) return undefined;
  if (!(typeof v === 'number' && Number.isFinite(v) && v > 0))
    return new RowError(field, 'must be a positive number', v);
  return new RowError(field, PRICE_RANGE, v);
}

function size(field: number, v: unknown): RowError | undefined {
  if (typeof v === 'number' && isSizeInRange(v)) return undefined;
  if (!(typeof v === 'number' && Number.isFinite(v) && v >= 0))
    return new RowError(field, 'must be zero or positive', v);
  return new RowError(field, SIZE_RANGE, v);
}
