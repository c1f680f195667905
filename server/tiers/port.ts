import { TickstreamError } from '../../shared/errors.ts';

/**
 * The tiers of the read side and what they read. L1 (memory.ts) sits in front; below it a store tier is one
 * file that alone imports its driver: Redis (redis.ts), PostgreSQL (postgres.ts), QuestDB (questdb.ts).
 * A store tier reads many keys in one round trip and returns only the keys it holds; it throws when the
 * store fails (L1 then serves what it still holds, marked stale). Tests fail a tier by giving a stand-in.
 */

export type TierName = 'memory' | 'redis' | 'postgres' | 'questdb';

/**
 * quote: the latest quote and trade of a symbol. bar: the open (current) bar of symbol:tf. bars: the newest
 * bars of symbol:tf:limit. indicators: the latest values of symbol:tf. history: bars of symbol:tf:from:to.
 * trades: a page of the archive.
 */
export type Kind = 'quote' | 'bar' | 'bars' | 'indicators' | 'history' | 'trades';

export interface Loader<V> {
  tier: Exclude<TierName, 'memory'>;
  /** The values of those keys the tier holds; throws when the tier cannot answer. */
  load(keys: readonly string[]): Promise<Map<string, V>>;
}

export type Outcome<V> =
  | { status: 'ok'; value: V; stale: boolean; ageMs: number; source: TierName }
  | { status: 'missing' }
  | { status: 'unavailable'; reason: string };

/** A store tier failed or did not answer in time; always retriable (the store may come back). */
export class TierError extends TickstreamError {
  override name = 'TierError';
  constructor(
    message: string,
    readonly timeout: boolean,
    cause?: unknown,
  ) {
    super(message, { retriable: true, cause });
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, tier: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TierError(`${tier} did not answer within ${ms} ms`, true)), ms);
  });
  // The slow read is abandoned, not cancelled; its late result (or error) is ignored.
  p.catch(() => undefined);
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** The latest quote and trade of a symbol, as the API returns it (numbers parsed, nanoseconds as strings). */
export interface QuoteView {
  symbol: string;
  bid: number | null;
  bid_size: number | null;
  ask: number | null;
  ask_size: number | null;
  quote_ts: string | null;
  quote_venue: string | null;
  last: number | null;
  last_size: number | null;
  trade_ts: string | null;
  trade_venue: string | null;
  /** Exchange time (ns) of the newer of quote and trade. */
  ts: string;
  /** `ts` as ISO 8601 with nanoseconds (computed once, when the value is read or pushed). */
  time: string;
  /** Wall-clock ms of the last change (Redis server time; the exchange time for archive reads). */
  updated_at: number;
}

export interface BarView {
  symbol: string;
  tf: string;
  start: string;
  time: string;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  vwap: number | null;
  trades: number;
  closed: boolean;
}

export const INDICATOR_FIELDS = [
  'sma',
  'ema',
  'rsi',
  'macd',
  'macdSignal',
  'macdHist',
  'bbUpper',
  'bbMiddle',
  'bbLower',
  'atr',
  'vwap',
] as const;
export type IndicatorName = (typeof INDICATOR_FIELDS)[number];

export interface IndicatorView {
  symbol: string;
  tf: string;
  start: string;
  time: string;
  status: string;
  values: Record<IndicatorName, number | null>;
}

export interface TradeView {
  symbol: string;
  ts: string;
  time: string;
  seq: number;
  source: string;
  venue: string;
  price: number;
  size: number;
  side: string;
}

export interface TradePage {
  trades: TradeView[];
  next_cursor: string | null;
}

/** ISO time with nanoseconds kept: 2026-11-21T09:47:16.123456789Z. */
export function nsToIso(ns: string | bigint): string {
  const big = BigInt(ns);
  const ms = Number(big / 1_000_000n);
  const frac = (big % 1_000_000_000n).toString().padStart(9, '0');
  // toISOString ends in ".mmmZ": cut the milliseconds off rather than regex-replace them, about a third
  // cheaper; this runs for every pub/sub message.
  return `${new Date(ms).toISOString().slice(0, -4)}${frac}Z`;
}
