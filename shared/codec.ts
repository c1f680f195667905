import { z } from 'zod';
import { DecodeError, errorMessage } from './errors.ts';
import {
  isPriceInRange,
  isPrintableName,
  isSizeInRange,
  MAX_TS_NS,
  NameSchema,
  NanosSchema,
  PriceSchema,
  SeqSchema,
  SizeSchema,
  VenueSchema,
  type Quote,
  type Tick,
  type Trade,
} from './model.ts';

/**
 * Stream-entry encoding ("frame v1"), documented in docs/stream-format.md.
 *
 * One XADD carries a frame of ticks for one shard, so producers pay one round trip per frame rather than per
 * tick. An entry has three fields:
 *   v  format version, "1"
 *   n  number of ticks in the frame (a checksum for truncation)
 *   d  JSON array of tick tuples:
 *        ["t", source, symbol, tsNanos, seq, venue, price, size, side]
 *        ["q", source, symbol, tsNanos, seq, venue, bidPrice, bidSize, askPrice, askSize]
 *      tsNanos is a decimal string so nanoseconds survive JSON exactly.
 *
 * This module is the only place that turns stream fields into ticks.
 */
export const FRAME_VERSION = '1';

/** Flat field list as XADD wants it. */
export function encodeFrame(ticks: readonly Tick[]): string[] {
  const rows: unknown[] = new Array(ticks.length);
  for (let i = 0; i < ticks.length; i++) rows[i] = toTuple(ticks[i]!);
  return ['v', FRAME_VERSION, 'n', String(ticks.length), 'd', JSON.stringify(rows)];
}

/**
 * Ticks already encoded, one wire tuple (JSON text, as in a frame's `d`) per tick, each with its shard
 * (`shardOf(symbol, shardCount)`), for `Publisher.publishEncoded`: a live feed encodes its ticks with
 * `encodeTick`, which costs less than building tuples for JSON.stringify as `encodeFrame` does.
 */
export interface EncodedTicks {
  readonly rows: readonly string[];
  readonly shards: Uint16Array;
  readonly shardCount: number;
}

/**
 * One tick's row of a frame's `d`, exactly `JSON.stringify(toTuple(t))`, so `encodeRowsFrame` of such rows
 * equals `encodeFrame` of the ticks. Written out by hand because building the tuple and stringifying it cost
 * a feed worker twice what mapping the message did (profiled): a finite number's JSON text is its String(),
 * and a string with nothing to escape is itself in quotes (anything else goes through JSON.stringify).
 * test/unit/codec.unit.test.ts compares both on generated ticks.
 */
export function encodeTick(t: Tick): string {
  const head = `${jsonString(t.source)},${jsonString(t.symbol)},"${t.ts}",${jsonNumber(t.seq)},${jsonString(t.venue)}`;
  return t.type === 'trade'
    ? `["t",${head},${jsonNumber(t.price)},${jsonNumber(t.size)},${jsonString(t.side)}]`
    : `["q",${head},${jsonNumber(t.bidPrice)},${jsonNumber(t.bidSize)},${jsonNumber(t.askPrice)},${jsonNumber(t.askSize)}]`;
}

/** A string's JSON text, as JSON.stringify writes it (quoted as is when nothing needs escaping). */
export function jsonString(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // Control characters, '"', '\\' and surrogates (a lone one is escaped) are JSON.stringify's to write.
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return JSON.stringify(s);
  }
  return `"${s}"`;
}

/** A number's JSON text, as JSON.stringify writes it (`null` for NaN and the infinities). */
export function jsonNumber(n: number): string {
  return Number.isFinite(n) ? String(n) : 'null';
}

/** Flat field list as XADD wants it, from rows made by `encodeTick`. */
export function encodeRowsFrame(rows: readonly string[]): string[] {
  return ['v', FRAME_VERSION, 'n', String(rows.length), 'd', `[${rows.join(',')}]`];
}

/** The wire tuple of one tick; dead letters keep bad ticks in this form so they can be requeued as they were. */
export function toTuple(t: Tick): unknown[] {
  return t.type === 'trade'
    ? ['t', t.source, t.symbol, t.ts.toString(), t.seq, t.venue, t.price, t.size, t.side]
    : [
        'q',
        t.source,
        t.symbol,
        t.ts.toString(),
        t.seq,
        t.venue,
        t.bidPrice,
        t.bidSize,
        t.askPrice,
        t.askSize,
      ];
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Stream entry fields as read from Redis (bytes), as text. Strict: a field that is not valid UTF-8 is a
 * DecodeError naming the field, never a lossy U+FFFD rewrite (two symbols differing only in invalid bytes
 * would otherwise become one). Callers keep the bytes for the dead letter.
 */
export function decodeEntryFields(raw: readonly Uint8Array[]): string[] {
  const out: string[] = new Array(raw.length);
  for (let i = 0; i < raw.length; i++) {
    try {
      out[i] = strictUtf8.decode(raw[i]!);
    } catch (err) {
      const what = i % 2 === 0 ? `name of field ${i / 2}` : `field "${out[i - 1] ?? '?'}"`;
      throw new DecodeError(`${what} is not valid UTF-8 (${raw[i]!.length} bytes)`, err);
    }
  }
  return out;
}

const name = NameSchema;
const venue = VenueSchema;
const price = PriceSchema;
const size = SizeSchema;
const seq = SeqSchema;

export const TradeTuple = z
  .tuple([z.literal('t'), name, name, NanosSchema, seq, venue, price, size, z.enum(['buy', 'sell', ''])])
  .transform(([, source, symbol, ts, seq, venue, price, size, side]): Trade => ({
    type: 'trade',
    source,
    symbol,
    ts,
    seq,
    venue,
    price,
    size,
    side,
  }));

export const QuoteTuple = z
  .tuple([z.literal('q'), name, name, NanosSchema, seq, venue, price, size, price, size])
  .transform(([, source, symbol, ts, seq, venue, bidPrice, bidSize, askPrice, askSize]): Quote => ({
    type: 'quote',
    source,
    symbol,
    ts,
    seq,
    venue,
    bidPrice,
    bidSize,
    askPrice,
    askSize,
  }));

/** A tick of a frame that failed validation: the rest of the frame is still delivered. */
export interface TickDecodeFailure {
  readonly index: number;
  readonly reason: string;
  /** The tuple as it stood in the frame, JSON-encoded, so a dead letter can be inspected and requeued. */
  readonly raw: string;
}

export interface DecodedFrame {
  readonly ticks: Tick[];
  /** For each tick, its index in the frame (differs from its index in `ticks` once a tuple failed). */
  readonly positions: number[];
  readonly failures: TickDecodeFailure[];
}

/**
 * Decode one stream entry's fields (ioredis' flat [k, v, k, v] array).
 * Throws DecodeError when the entry as a whole is unusable (not a frame, bad JSON, count mismatch);
 * a single bad tuple is reported in `failures` instead, so it cannot take its neighbours down with it.
 */
export function decodeFrame(fields: readonly string[]): DecodedFrame {
  let v: string | undefined;
  let n: string | undefined;
  let d: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const k = fields[i];
    if (k === 'v') v = fields[i + 1];
    else if (k === 'n') n = fields[i + 1];
    else if (k === 'd') d = fields[i + 1];
  }
  if (v === undefined || d === undefined || n === undefined) {
    throw new DecodeError(`not a tick frame: missing field(s) ${missing({ v, n, d })}`);
  }
  if (v !== FRAME_VERSION)
    throw new DecodeError(`unsupported frame version "${v}" (expected ${FRAME_VERSION})`);
  let rows: unknown;
  try {
    rows = JSON.parse(d);
  } catch (err) {
    throw new DecodeError(`frame payload is not valid JSON: ${errorMessage(err)}`, err);
  }
  if (!Array.isArray(rows)) throw new DecodeError('frame payload is not a JSON array');
  if (String(rows.length) !== n) {
    throw new DecodeError(`frame count mismatch: header says ${n}, payload has ${rows.length}`);
  }
  const ticks: Tick[] = [];
  const positions: number[] = [];
  const failures: TickDecodeFailure[] = [];
  for (let i = 0; i < rows.length; i++) {
    const row: unknown = rows[i];
    const kind = Array.isArray(row) ? row[0] : undefined;
    const schema = kind === 't' ? TradeTuple : kind === 'q' ? QuoteTuple : undefined;
    if (schema === undefined) {
      failures.push({
        index: i,
        reason: `tick ${i}: unknown tuple kind ${JSON.stringify(kind)}`,
        raw: JSON.stringify(row),
      });
      continue;
    }
    const fast = kind === 't' ? fastTrade(row as unknown[]) : fastQuote(row as unknown[]);
    if (fast !== undefined) {
      ticks.push(fast);
      positions.push(i);
      continue;
    }
    // The zod schema is the authority: it explains a rejection, and accepts anything the fast path was too
    // strict about.
    const parsed = schema.safeParse(row);
    if (parsed.success) {
      ticks.push(parsed.data);
      positions.push(i);
    } else
      failures.push({
        index: i,
        reason: `tick ${i}: ${describeIssues(parsed.error, kind)}`,
        raw: JSON.stringify(row),
      });
  }
  return { ticks, positions, failures };
}

/*
 * Fast path. Validating each tuple through zod costs several microseconds, far more than the JSON parse, and
 * decoding is the consumers' hot loop. These checks implement the tuple schemas' rules for the common case
 * and return undefined for anything they do not accept; the schema then decides. They must never accept what
 * the schema rejects: test/unit/codec.unit.test.ts compares both on generated and mutated tuples.
 */
const TS_DIGITS = /^\d{1,19}$/;
const isName = (v: unknown): v is string =>
  typeof v === 'string' && v.length >= 1 && v.length <= 64 && isPrintableName(v);
const isVenue = (v: unknown): v is string => typeof v === 'string' && v.length <= 64 && isPrintableName(v);
const isPrice = (v: unknown): v is number => typeof v === 'number' && isPriceInRange(v);
const isSize = (v: unknown): v is number => typeof v === 'number' && isSizeInRange(v);
const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function fastTs(v: unknown): bigint | undefined {
  if (typeof v !== 'string' || !TS_DIGITS.test(v)) return undefined;
  const ts = BigInt(v);
  return ts <= MAX_TS_NS ? ts : undefined;
}

export function fastTrade(r: unknown[]): Trade | undefined {
  if (r.length !== 9) return undefined;
  const [, source, symbol, rawTs, seq, venue, price, size, side] = r;
  const ts = fastTs(rawTs);
  if (ts === undefined || !isName(source) || !isName(symbol) || !isSeq(seq) || !isVenue(venue))
    return undefined;
  if (!isPrice(price) || !isSize(size) || (side !== 'buy' && side !== 'sell' && side !== ''))
    return undefined;
  return { type: 'trade', source, symbol, ts, seq, venue, price, size, side };
}

export function fastQuote(r: unknown[]): Quote | undefined {
  if (r.length !== 10) return undefined;
  const [, source, symbol, rawTs, seq, venue, bidPrice, bidSize, askPrice, askSize] = r;
  const ts = fastTs(rawTs);
  if (ts === undefined || !isName(source) || !isName(symbol) || !isSeq(seq) || !isVenue(venue))
    return undefined;
  if (!isPrice(bidPrice) || !isSize(bidSize) || !isPrice(askPrice) || !isSize(askSize)) return undefined;
  return { type: 'quote', source, symbol, ts, seq, venue, bidPrice, bidSize, askPrice, askSize };
}

/**
 * The same checks on a tick built in process (the live-feed mappers): accepts only what the model accepts, and
 * returns false for anything it is not sure of, which the caller then explains through the zod schema.
 */
export function isValidTick(t: Tick): boolean {
  if (
    typeof t.ts !== 'bigint' ||
    t.ts < 0n ||
    t.ts > MAX_TS_NS ||
    !isName(t.source) ||
    !isName(t.symbol) ||
    !isSeq(t.seq) ||
    !isVenue(t.venue)
  )
    return false;
  if (t.type === 'trade')
    return isPrice(t.price) && isSize(t.size) && (t.side === 'buy' || t.side === 'sell' || t.side === '');
  return isPrice(t.bidPrice) && isSize(t.bidSize) && isPrice(t.askPrice) && isSize(t.askSize);
}

const TUPLE_FIELDS: Record<string, readonly string[]> = {
  t: ['kind', 'source', 'symbol', 'ts', 'seq', 'venue', 'price', 'size', 'side'],
  q: ['kind', 'source', 'symbol', 'ts', 'seq', 'venue', 'bidPrice', 'bidSize', 'askPrice', 'askSize'],
};

function describeIssues(error: z.ZodError, kind: string): string {
  const names = TUPLE_FIELDS[kind] ?? [];
  return error.issues
    .map((issue) => {
      const pos = issue.path[0];
      const field = typeof pos === 'number' ? (names[pos] ?? `#${pos}`) : 'tuple';
      return `${field}: ${issue.message}`;
    })
    .join('; ');
}

function missing(fields: Record<string, string | undefined>): string {
  return Object.entries(fields)
    .filter(([, v]) => v === undefined)
    .map(([k]) => k)
    .join(', ');
}

/** How large a frame the consumers decode (TICKSTREAM_MAX_FRAME_TICKS, TICKSTREAM_MAX_FRAME_BYTES). */
export interface FrameLimits {
  readonly maxTicks: number;
  readonly maxBytes: number;
}

/**
 * Why an entry is too large to decode, or undefined. Checked before the payload is parsed: a frame of a
 * million tuples costs hundreds of megabytes once decoded, so its size is judged from the header and the raw
 * payload alone. The producer never writes a frame over TICKSTREAM_FRAME_SIZE (at most 10,000) ticks.
 */
export function frameLimitReason(fields: readonly string[], limits: FrameLimits): string | undefined {
  let n: string | undefined;
  let d: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const k = fields[i];
    if (k === 'n') n = fields[i + 1];
    else if (k === 'd') d = fields[i + 1];
  }
  if (n !== undefined && /^\d+$/.test(n) && Number(n) > limits.maxTicks) {
    return `frame too large: ${n} ticks (max ${limits.maxTicks}, TICKSTREAM_MAX_FRAME_TICKS)`;
  }
  // A character is at most 3 UTF-8 bytes (4 for a surrogate pair, which is 2 characters): count only when near.
  if (d !== undefined && d.length * 3 > limits.maxBytes) {
    const bytes = Buffer.byteLength(d, 'utf8');
    if (bytes > limits.maxBytes) {
      return `frame too large: ${bytes} payload bytes (max ${limits.maxBytes}, TICKSTREAM_MAX_FRAME_BYTES)`;
    }
  }
  return undefined;
}
