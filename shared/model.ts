import { z } from 'zod';

/**
 * The one message model. Everything past the stream boundary is a `Tick`.
 *
 * Identity: (source, symbol, ts, seq) names a tick. Sinks key their idempotency on it, so a tick delivered
 * twice (redelivery after a crash, replay for backfill) is stored once.
 *
 * `ts` is the exchange timestamp in nanoseconds since the Unix epoch, as a bigint: a float64 cannot hold
 * 19-digit nanosecond values exactly, and two ticks a nanosecond apart must stay distinct.
 */

/**
 * The largest timestamp: PostgreSQL's bigint maximum (2262-04-11T23:47:16.854775807Z). The archive, the bars
 * and QuestDB's TIMESTAMP_NS all hold `ts` as a signed 64-bit integer, so nothing beyond it can be stored.
 */
export const MAX_TS_NS = 9_223_372_036_854_775_807n;

/**
 * Bounds of prices and sizes: what every store holds exactly. The bars keep prices and sizes as fixed-point
 * integers of 1e-9 units (consumers/bars/aggregate.ts), so a non-zero value below 1e-9 would become 0 there,
 * and they cannot convert a double of 1e21 or more at all. 1e15 stays far inside that and below 2^53, where a
 * double still holds every integer, so an integer price or size arrives as the feed wrote it. QuestDB and the
 * archive (double, numeric) hold everything in between. A tick outside is refused at the edge with a reason.
 */
export const MIN_PRICE = 1e-9;
export const MAX_PRICE = 1e15;
export const MIN_SIZE = 1e-9;
export const MAX_SIZE = 1e15;

/** A price within [MIN_PRICE, MAX_PRICE]; NaN and infinities are outside. */
export function isPriceInRange(v: number): boolean {
  return v >= MIN_PRICE && v <= MAX_PRICE;
}

/** A size of 0 (an empty side of a book) or within [MIN_SIZE, MAX_SIZE]. */
export function isSizeInRange(v: number): boolean {
  return v === 0 || (v >= MIN_SIZE && v <= MAX_SIZE);
}

/**
 * Symbols, sources and venues become Redis keys, SQL rows, QuestDB symbols and terminal output, so they hold
 * printable characters only: letters, marks, digits, punctuation, symbols and the plain space (U+0020).
 * Control characters (newlines, NUL, ESC and so ANSI escapes), format characters (bidi overrides, zero-width
 * joiners), other separators, unpaired surrogates, private-use and unassigned code points are refused.
 * Documented in docs/stream-format.md.
 */
const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]*$/u;

export function isPrintableName(s: string): boolean {
  // Plain ASCII (nearly every name) without the regular expression: the consumers decode millions of these.
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return PRINTABLE.test(s);
  }
  return true;
}

const PRINTABLE_MESSAGE =
  'must hold printable characters only (no control, format or bidi characters, no newlines)';

/** Nanosecond timestamp: a bigint, or a string of decimal digits (how it travels on the wire). */
export const NanosSchema = z
  .union([z.bigint(), z.string().regex(/^\d{1,19}$/, 'expected a nanosecond timestamp (decimal digits)')])
  .transform((v) => (typeof v === 'bigint' ? v : BigInt(v)))
  .refine((v) => v >= 0n && v <= MAX_TS_NS, `timestamp out of range (0 to ${MAX_TS_NS})`);

const name = z.string().min(1).max(64).refine(isPrintableName, PRINTABLE_MESSAGE);
const price = z
  .number()
  .finite()
  .positive()
  .refine(isPriceInRange, `price out of range (${MIN_PRICE} to ${MAX_PRICE})`);
const size = z
  .number()
  .finite()
  .nonnegative()
  .refine(isSizeInRange, `size out of range (0, or ${MIN_SIZE} to ${MAX_SIZE})`);
const seq = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** Tuple and object fields share these rules (shared/codec.ts decodes the wire tuples with them). */
export const NameSchema = name;
export const VenueSchema = z.string().max(64).refine(isPrintableName, PRINTABLE_MESSAGE);
export const PriceSchema = price;
export const SizeSchema = size;
export const SeqSchema = seq;

const identity = {
  source: name,
  symbol: name,
  ts: NanosSchema,
  seq,
  venue: VenueSchema.default(''),
};

export const TradeSchema = z
  .object({
    type: z.literal('trade'),
    ...identity,
    price,
    size,
    side: z.enum(['buy', 'sell', '']).default(''),
  })
  .strict();

export const QuoteSchema = z
  .object({
    type: z.literal('quote'),
    ...identity,
    bidPrice: price,
    bidSize: size,
    askPrice: price,
    askSize: size,
  })
  .strict();

export const TickSchema = z.discriminatedUnion('type', [TradeSchema, QuoteSchema]);

export type Trade = Readonly<z.output<typeof TradeSchema>>;
export type Quote = Readonly<z.output<typeof QuoteSchema>>;
export type Tick = Trade | Quote;
/** What callers may pass in (defaults applied by parsing). */
export type TickInput = z.input<typeof TickSchema>;

/** The identity of a tick as one string, for sets and checksums in tests and tools. */
export function tickKey(t: Tick): string {
  return `${t.source}|${t.symbol}|${t.ts}|${t.seq}`;
}

/** A JSON-safe view of a tick (bigint as a string), for logs, dead letters and NDJSON output. */
export function tickToJson(t: Tick): Record<string, unknown> {
  return { ...t, ts: t.ts.toString() };
}

const NS_PER_MS = 1_000_000n;

export function nsToDate(ns: bigint): Date {
  return new Date(Number(ns / NS_PER_MS));
}

export function msToNs(ms: number): bigint {
  return BigInt(Math.trunc(ms)) * NS_PER_MS;
}

/**
 * Wall-clock nanoseconds: the monotonic clock anchored once to the epoch. Successive calls never go back and
 * differences are exact; the absolute value is as good as Date.now() at start-up (±1 ms).
 */
const ANCHOR_NS = BigInt(Date.now()) * NS_PER_MS - process.hrtime.bigint();

export function nowNs(): bigint {
  return ANCHOR_NS + process.hrtime.bigint();
}
