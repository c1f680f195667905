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

const MAX_TS_NS = 9_999_999_999_999_999_999n; // 19 digits: year 2286; keeps the fixed-width ordering keys valid.

/** Nanosecond timestamp: a bigint, or a string of decimal digits (how it travels on the wire). */
export const NanosSchema = z
  .union([z.bigint(), z.string().regex(/^\d{1,19}$/, 'expected a nanosecond timestamp (decimal digits)')])
  .transform((v) => (typeof v === 'bigint' ? v : BigInt(v)))
  .refine((v) => v >= 0n && v <= MAX_TS_NS, 'timestamp out of range');

const name = z.string().min(1).max(64);
const price = z.number().finite().positive();
const size = z.number().finite().nonnegative();
const seq = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

const identity = {
  source: name,
  symbol: name,
  ts: NanosSchema,
  seq,
  venue: z.string().max(64).default(''),
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
