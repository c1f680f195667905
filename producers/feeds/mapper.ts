import { isValidTick } from '../../shared/codec.ts';
import { QuoteSchema, TradeSchema, type Quote, type Tick, type Trade } from '../../shared/model.ts';
import { parseTimestamp } from '../../shared/time.ts';

/**
 * The FeedMapper port: one venue's wire protocol → the message model (tardis-node's per-venue mappers,
 * `canHandle` + `map`). A mapper owns no socket: the connection (connection.ts) opens the URL it names, sends
 * what it asks to send, and hands it every message already parsed as JSON, with the time it was received.
 *
 * Contract:
 * - `map` never throws for a message of the venue's: what it cannot turn into ticks comes back as an event
 *   (`malformed`, `gap`, `error`), and unknown message types are ignored as the venues require.
 * - Ticks carry `source` = the venue, `seq` = the venue's trade id or sequence number (so a message seen twice
 *   after a reconnect is the same tick), and `ts` = the venue's exchange time in exact nanoseconds. Where a
 *   message has no exchange time, the receive time is used and `venue` ends in RX_MARK (docs/feeds.md).
 * - A mapper keeps per-symbol sequence state across reconnects, so the trades missed while disconnected are
 *   reported as a gap, and messages replayed after a reconnect are dropped as duplicates.
 */
export interface FeedMapper {
  readonly venue: string;
  /** The WebSocket URL to open (the symbols may be part of it, as on Binance). */
  url(): string;
  /** Messages to send once the socket is open (authentication, or the subscriptions themselves). */
  onOpen(): string[];
  /** Messages that end the subscriptions on a graceful stop. */
  onClose(): string[];
  map(message: unknown, receivedNs: bigint): MapResult;
  /**
   * How to build this mapper again in a feed worker thread (source.ts), which cannot be handed the object
   * itself. Without it the feed runs in the main thread.
   */
  readonly spec?: MapperSpec;
}

/**
 * A mapper as plain data: the module that exports its class (its `import.meta.url`, so it names the .ts source
 * under tsx and the compiled .js in dist/), the export's name, and the constructor's options (structured-
 * cloneable: strings, numbers, arrays).
 */
export interface MapperSpec {
  readonly module: string;
  readonly name: string;
  readonly options: unknown;
}

export type FeedEventKind = 'gap' | 'malformed' | 'error' | 'subscribed' | 'duplicate';

export interface FeedEvent {
  kind: FeedEventKind;
  symbol?: string;
  detail: string;
  /** The raw message, for `malformed`; truncated by the connection before it is stored. */
  raw?: string;
}

export interface MapResult {
  readonly ticks: readonly Tick[];
  readonly events: readonly FeedEvent[];
  /** Messages to send now (e.g. the subscriptions after a successful authentication). */
  send?: string[];
  /** The venue refused us for a reason a reconnect cannot fix (bad credentials, unknown symbol). */
  fatal?: string;
}

export const NONE: MapResult = Object.freeze({ ticks: [], events: [] }) as MapResult;

export type Channel = 'trades' | 'quotes';
export const CHANNELS: readonly Channel[] = ['trades', 'quotes'];

export interface MapperOptions {
  symbols: readonly string[];
  channels: readonly Channel[];
  /** Overrides the venue's public endpoint (a stand-in, a sandbox, a regional host). */
  url?: string;
}

/** Marks a tick stamped with the receive time because its message has no exchange time. */
export const RX_MARK = '@rx';

/** Thrown inside a mapper for a message it cannot map; `safeMap` turns it into a `malformed` event. */
export class MappingError extends Error {
  override name = 'MappingError';
}

/** Run a mapper body; a MappingError or a model violation becomes a `malformed` event, never a throw. */
export function safeMap(fn: () => MapResult): MapResult {
  try {
    return fn();
  } catch (err) {
    if (err instanceof MappingError)
      return { ticks: [], events: [{ kind: 'malformed', detail: err.message }] };
    throw err;
  }
}

export function obj(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new MappingError(`${what}: not an object`);
  return v as Record<string, unknown>;
}

export function str(o: Record<string, unknown>, key: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0) throw new MappingError(`field "${key}": expected a string`);
  return v;
}

/** A decimal string or a JSON number → the nearest double (what the model holds), refusing junk. */
export function num(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string') {
    n = plainDecimal(v);
    if (Number.isNaN(n)) {
      if (!DECIMAL.test(v)) throw new MappingError(`field "${key}": expected a decimal number`);
      n = Number(v);
    }
  } else throw new MappingError(`field "${key}": expected a decimal number`);
  if (!Number.isFinite(n)) throw new MappingError(`field "${key}": not finite`);
  return n;
}

const DECIMAL = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;
const POW10 = Array.from({ length: 23 }, (_, k) => 10 ** k);

/**
 * The venues' usual decimal strings ("91234.56000000", "0.00100000") → the double Number() gives, or NaN for
 * anything else, which `num` then checks and converts the general way. Hand-rolled because the regular
 * expression plus Number() cost more than the rest of a trade's mapping (profiled). It is Clinger's fast path,
 * which string-to-double conversions take themselves: with at most 15 digits the digits form an integer below
 * 2^53 (exact), 10^k for k ≤ 22 is exact, so their quotient is correctly rounded: the same double as Number().
 * Only `digits[.digits]` is taken here; a sign, an exponent or more digits go the general way.
 * test/unit/feeds.unit.test.ts compares both on generated strings.
 */
export function plainDecimal(s: string): number {
  const n = s.length;
  if (n === 0 || n > 16) return NaN;
  let m = 0;
  let point = -1;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) m = m * 10 + (c - 48);
    else if (c === 46 && point < 0 && i > 0 && i < n - 1) point = i;
    else return NaN;
  }
  if (point < 0) return n > 15 ? NaN : m;
  return m / POW10[n - 1 - point]!;
}

/** A non-negative integer id (trade id, sequence, update id) within the model's `seq` range. */
export function id(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0)
    throw new MappingError(`field "${key}": expected a non-negative integer id`);
  return n;
}

/** RFC 3339 / ISO-8601 with up to nanoseconds → exact nanoseconds. */
export function isoNs(o: Record<string, unknown>, key: string): bigint {
  const r = parseTimestamp(str(o, key));
  if (typeof r === 'string') throw new MappingError(`field "${key}": ${r}`);
  return r;
}

/** An integer epoch time in `unit` → exact nanoseconds. */
export function epochNs(o: Record<string, unknown>, key: string, unit: 'ms' | 'us'): bigint {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new MappingError(`field "${key}": expected an integer epoch time`);
  return BigInt(v) * (unit === 'ms' ? 1_000_000n : 1_000n);
}

/**
 * Validate against the model (a venue may send a zero bid, an empty book side); a violation is malformed.
 * The codec's fast checks (the same rules the stream decoder applies) accept the common case cheaply; zod,
 * the authority, explains a rejection.
 */
export function trade(t: Trade): Trade {
  if (isValidTick(t)) return t;
  const r = TradeSchema.safeParse(t);
  if (!r.success) throw new MappingError(`trade ${t.symbol}: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}

export function quote(q: Quote): Quote {
  if (isValidTick(q)) return q;
  const r = QuoteSchema.safeParse(q);
  if (!r.success) throw new MappingError(`quote ${q.symbol}: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}

/**
 * `seq` for a message that has no id of its own (Alpaca quotes, receive-stamped tickers): FNV-1a over its
 * content as text (numbers in their shortest decimal form, parts joined by '|'), so the same message seen twice
 * is the same tick and two different quotes at one instant are two. The value is a tick's identity in every
 * store: it must never change between versions (a quote re-sent across an upgrade would be stored twice), which
 * test/unit/feeds.unit.test.ts pins.
 */
export function contentSeq(...parts: readonly (string | number)[]): number {
  let h = 0x811c9dc5;
  const s = parts.join('|');
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Per-symbol sequence bookkeeping for ids that step by one (trade ids on Coinbase, Binance, Kraken): a jump
 * is a gap (ticks the venue sent that we did not see), an id at or below the last one a duplicate.
 * Kept across reconnects on purpose: what was missed while disconnected is a gap too.
 */
export class SequenceTracker {
  private readonly latest = new Map<string, number>();

  /** 'ok', 'duplicate', or the number of ids missing before this one. */
  check(symbol: string, seq: number): 'ok' | 'duplicate' | number {
    const prev = this.latest.get(symbol);
    if (prev !== undefined && seq <= prev) return 'duplicate';
    this.latest.set(symbol, seq);
    if (prev === undefined || seq === prev + 1) return 'ok';
    return seq - prev - 1;
  }

  last(key: string): number | undefined {
    return this.latest.get(key);
  }

  /** Move past ids reported lost by other means (a heartbeat), so they are not reported twice. */
  advance(key: string, seq: number): void {
    if ((this.latest.get(key) ?? -1) < seq) this.latest.set(key, seq);
  }

  /** For ids that only grow (book update ids): a repeat is a duplicate, a jump is normal. */
  monotonic(symbol: string, seq: number): boolean {
    const prev = this.latest.get(symbol);
    if (prev !== undefined && seq <= prev) return false;
    this.latest.set(symbol, seq);
    return true;
  }
}

/** Shared by every result without events, so the common message allocates no empty array. */
const NO_EVENTS: readonly FeedEvent[] = Object.freeze([]);

/** A message that maps to ticks and no event. */
export function ticksOnly(ticks: readonly Tick[]): MapResult {
  return { ticks, events: NO_EVENTS };
}

/**
 * A trade whose seq steps by one per symbol (`trades` tracks trade ids only, keyed by symbol): a duplicate is
 * dropped, a gap reported with the trade kept.
 */
export function sequencedTrade(trades: SequenceTracker, t: Trade, gapDetail = 'trade ids'): MapResult {
  const verdict = trades.check(t.symbol, t.seq);
  if (verdict === 'ok') return ticksOnly([t]);
  if (verdict === 'duplicate')
    return {
      ticks: [],
      events: [{ kind: 'duplicate', symbol: t.symbol, detail: `trade ${t.seq} seen before` }],
    };
  return {
    ticks: [t],
    events: [{ kind: 'gap', symbol: t.symbol, detail: `${verdict} ${gapDetail} missing before ${t.seq}` }],
  };
}

/** A tick whose seq only grows (no gap meaning; `seqs` keyed by symbol, one tracker per tick type): repeats are dropped. */
export function monotonicTick(seqs: SequenceTracker, t: Tick): MapResult {
  if (seqs.monotonic(t.symbol, t.seq)) return ticksOnly([t]);
  return {
    ticks: [],
    events: [{ kind: 'duplicate', symbol: t.symbol, detail: `${t.type} ${t.seq} seen before` }],
  };
}

/** Collects the ticks and events of a message that holds several rows (Kraken's, Alpaca's arrays). */
export class Collector {
  readonly ticks: Tick[] = [];
  readonly events: FeedEvent[] = [];

  /** Add a trade whose seq steps by one per symbol; duplicates are dropped, gaps reported (and kept). */
  sequencedTrade(trades: SequenceTracker, t: Trade, gapDetail = 'trade ids'): void {
    const r = sequencedTrade(trades, t, gapDetail);
    this.ticks.push(...r.ticks);
    this.events.push(...r.events);
  }

  result(): MapResult {
    return this.events.length === 0 ? ticksOnly(this.ticks) : { ticks: this.ticks, events: this.events };
  }
}
