import { ConfigError } from '../../shared/errors.ts';

/** Tick fields in model order; a file column maps to each. */
export const FIELDS = [
  'type',
  'source',
  'symbol',
  'ts',
  'seq',
  'venue',
  'price',
  'size',
  'side',
  'bidPrice',
  'bidSize',
  'askPrice',
  'askSize',
] as const;
export type Field = (typeof FIELDS)[number];

/** The column (CSV header name, NDJSON key) each field is read from unless mapped otherwise. */
export const DEFAULT_COLUMNS: Readonly<Record<Field, string>> = {
  type: 'type',
  source: 'source',
  symbol: 'symbol',
  ts: 'ts',
  seq: 'seq',
  venue: 'venue',
  price: 'price',
  size: 'size',
  side: 'side',
  bidPrice: 'bid_price',
  bidSize: 'bid_size',
  askPrice: 'ask_price',
  askSize: 'ask_size',
};

export const F_TYPE = 0;
export const F_SOURCE = 1;
export const F_SYMBOL = 2;
export const F_TS = 3;
export const F_SEQ = 4;
export const F_VENUE = 5;
export const F_PRICE = 6;
export const F_SIZE = 7;
export const F_SIDE = 8;
export const F_BID_PRICE = 9;
export const F_BID_SIZE = 10;
export const F_ASK_PRICE = 11;
export const F_ASK_SIZE = 12;

export type ColumnMap = Partial<Record<Field, string>>;

/**
 * Parse `--map price=px,symbol=ticker`. A field may be named as in the model (bidPrice) or by its default
 * column (bid_price).
 */
export function parseColumnMap(spec: string): ColumnMap {
  const out: ColumnMap = {};
  for (const part of spec.split(',')) {
    const item = part.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0 || eq === item.length - 1) {
      throw new ConfigError(`--map: expected field=column, got "${item}"`);
    }
    const key = item.slice(0, eq).trim();
    const column = item.slice(eq + 1).trim();
    const field = FIELDS.find((f) => f === key || DEFAULT_COLUMNS[f] === key);
    if (field === undefined) {
      throw new ConfigError(
        `--map: unknown field "${key}"; fields are ${FIELDS.map((f) => DEFAULT_COLUMNS[f]).join(', ')}`,
      );
    }
    out[field] = column;
  }
  return out;
}

/** Why one field of one row is unusable. `field` is an index into FIELDS, or -1 for the row as a whole. */
export class RowError {
  constructor(
    readonly field: number,
    readonly message: string,
    readonly value?: unknown,
  ) {}
}
