import type { Tick } from '../../shared/model.ts';
import { parseTimestamp, type TsUnit } from '../../shared/time.ts';
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
  F_TYPE,
  F_VENUE,
  RowError,
} from './fields.ts';
import { validateFast, validateZod, type Validation } from './validation.ts';

// Row → Tick (the one place)

export interface DecodeContext {
  /** Source name for rows without a source column value. */
  source: string;
  tsUnit: TsUnit;
  validation: Validation;
}

type Cell = unknown;

function at(cells: readonly Cell[], idx: Int32Array, field: number): Cell {
  const i = idx[field]!;
  return i < 0 ? undefined : cells[i];
}

function isEmpty(v: Cell): boolean {
  return v === undefined || v === null || v === '';
}

function text(v: Cell, field: number): string | RowError {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return new RowError(field, 'must be text', v);
}

function num(v: Cell, field: number): number | RowError {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return new RowError(field, isEmpty(v) ? 'missing' : 'must be a number', v);
  if (v === '') return new RowError(field, 'missing');
  const x = decimal(v);
  if (Number.isNaN(x)) return new RowError(field, 'not a number', v);
  if (x === 0 && v.trim() === '') return new RowError(field, 'missing');
  return x;
}

const POW10 = [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/**
 * Number(v), faster for the plain decimals files are made of. With at most 15 digits the digits form an
 * exact integer and 10^k is exact, so one IEEE division gives the correctly rounded value: the same double
 * Number() returns. Anything else (signs, exponents, spaces, long values) goes to Number().
 */
function decimal(v: string): number {
  const n = v.length;
  if (n > 16) return Number(v);
  let m = 0;
  let dot = -1;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c >= 48 && c <= 57) m = m * 10 + (c - 48);
    else if (c === 46 && dot < 0) dot = i;
    else return Number(v);
  }
  if (dot === n - 1 || dot === 0 || n - (dot < 0 ? 0 : 1) > 15) return Number(v);
  return dot < 0 ? m : m / POW10[n - dot - 1]!;
}

function normType(v: string): 'trade' | 'quote' | undefined {
  if (v === 'trade' || v === 'quote') return v;
  const l = v.toLowerCase();
  if (l === 'trade' || l === 't') return 'trade';
  if (l === 'quote' || l === 'q') return 'quote';
  return undefined;
}

function normSide(v: string): string {
  if (v === 'buy' || v === 'sell' || v === '') return v;
  const l = v.toLowerCase();
  if (l === 'buy' || l === 'b') return 'buy';
  if (l === 'sell' || l === 's') return 'sell';
  return v;
}

/**
 * One row's cells (in file order, picked by `idx[field]`, -1 for a field the file lacks) → a Tick, or the
 * first thing wrong with it. `line` is the row's line number, the default sequence number.
 */
export function decodeRow(
  cells: readonly Cell[],
  idx: Int32Array,
  line: number,
  ctx: DecodeContext,
): Tick | RowError {
  let type: 'trade' | 'quote' | undefined;
  const typeCell = at(cells, idx, F_TYPE);
  if (isEmpty(typeCell)) {
    if (!isEmpty(at(cells, idx, F_PRICE))) type = 'trade';
    else if (!isEmpty(at(cells, idx, F_BID_PRICE)) || !isEmpty(at(cells, idx, F_ASK_PRICE))) type = 'quote';
    else return new RowError(F_TYPE, 'missing (and no price or bid/ask to infer it from)');
  } else {
    type = typeof typeCell === 'string' ? normType(typeCell) : undefined;
    if (type === undefined) return new RowError(F_TYPE, 'must be trade or quote', typeCell);
  }

  const sourceCell = at(cells, idx, F_SOURCE);
  const source = isEmpty(sourceCell) ? ctx.source : text(sourceCell, F_SOURCE);
  if (source instanceof RowError) return source;

  const symbolCell = at(cells, idx, F_SYMBOL);
  if (isEmpty(symbolCell)) return new RowError(F_SYMBOL, 'missing');
  const symbol = text(symbolCell, F_SYMBOL);
  if (symbol instanceof RowError) return symbol;

  const tsCell = at(cells, idx, F_TS);
  if (isEmpty(tsCell)) return new RowError(F_TS, 'missing');
  if (typeof tsCell !== 'string' && typeof tsCell !== 'number')
    return new RowError(F_TS, 'must be text', tsCell);
  const ts = parseTimestamp(typeof tsCell === 'string' ? tsCell : String(tsCell), ctx.tsUnit);
  if (typeof ts === 'string') return new RowError(F_TS, ts, tsCell);

  const seqCell = at(cells, idx, F_SEQ);
  const seq = isEmpty(seqCell) ? line : num(seqCell, F_SEQ);
  if (seq instanceof RowError) return seq;

  const venueCell = at(cells, idx, F_VENUE);
  const venue = isEmpty(venueCell) ? '' : text(venueCell, F_VENUE);
  if (venue instanceof RowError) return venue;

  let raw: Record<string, unknown>;
  if (type === 'trade') {
    const price = num(at(cells, idx, F_PRICE), F_PRICE);
    if (price instanceof RowError) return price;
    const size = num(at(cells, idx, F_SIZE), F_SIZE);
    if (size instanceof RowError) return size;
    const sideCell = at(cells, idx, F_SIDE);
    let side = '';
    if (!isEmpty(sideCell)) {
      if (typeof sideCell !== 'string') return new RowError(F_SIDE, 'must be buy, sell or empty', sideCell);
      side = normSide(sideCell);
    }
    raw = { type, source, symbol, ts, seq, venue, price, size, side };
  } else {
    const bidPrice = num(at(cells, idx, F_BID_PRICE), F_BID_PRICE);
    if (bidPrice instanceof RowError) return bidPrice;
    const bidSize = num(at(cells, idx, F_BID_SIZE), F_BID_SIZE);
    if (bidSize instanceof RowError) return bidSize;
    const askPrice = num(at(cells, idx, F_ASK_PRICE), F_ASK_PRICE);
    if (askPrice instanceof RowError) return askPrice;
    const askSize = num(at(cells, idx, F_ASK_SIZE), F_ASK_SIZE);
    if (askSize instanceof RowError) return askSize;
    raw = { type, source, symbol, ts, seq, venue, bidPrice, bidSize, askPrice, askSize };
  }
  return ctx.validation === 'zod' ? validateZod(raw) : validateFast(raw);
}
