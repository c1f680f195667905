import { batch, orThrow, pairs, type RedisClient } from '../../shared/redis.ts';
import {
  INDICATOR_FIELDS,
  nsToIso,
  type BarView,
  type IndicatorName,
  type IndicatorView,
  type QuoteView,
} from './port.ts';

/**
 * L2: the Redis hashes the write side keeps: `<quotes.keyPrefix><SYMBOL>` (latest-quote projector,
 * consumers/sinks/quotes.ts), `<bars.keyPrefix><symbol>:<tf>` (open bar, consumers/sinks/bars.ts) and
 * `<indicators.keyPrefix><symbol>:<tf>` (consumers/indicators/job.ts). Read only: one pipelined HGETALL per
 * key, one round trip per call. The parsers also decode the pub/sub messages, which carry the same fields.
 */
export interface RedisTierSettings {
  quoteKeyPrefix: string;
  barKeyPrefix: string;
  indicatorKeyPrefix: string;
}

export class RedisTier {
  constructor(
    private readonly redis: RedisClient,
    private readonly s: RedisTierSettings,
  ) {}

  async quotes(symbols: readonly string[]): Promise<Map<string, QuoteView>> {
    const hashes = await this.hashes(symbols.map((sym) => this.s.quoteKeyPrefix + sym));
    const out = new Map<string, QuoteView>();
    symbols.forEach((sym, i) => {
      const q = quoteFromFields(hashes[i]);
      if (q !== undefined) out.set(sym, q);
    });
    return out;
  }

  /** Keys are "symbol:tf". */
  async openBars(keys: readonly string[]): Promise<Map<string, BarView>> {
    const hashes = await this.hashes(keys.map((k) => this.s.barKeyPrefix + k));
    const out = new Map<string, BarView>();
    keys.forEach((k, i) => {
      const b = barFromFields(hashes[i]);
      if (b !== undefined) out.set(k, b);
    });
    return out;
  }

  /** Keys are "symbol:tf". */
  async indicators(keys: readonly string[]): Promise<Map<string, IndicatorView>> {
    const hashes = await this.hashes(keys.map((k) => this.s.indicatorKeyPrefix + k));
    const out = new Map<string, IndicatorView>();
    keys.forEach((k, i) => {
      const v = indicatorsFromFields(hashes[i]);
      if (v !== undefined) out.set(k, v);
    });
    return out;
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  private async hashes(keys: readonly string[]): Promise<(Record<string, unknown> | undefined)[]> {
    const replies = orThrow(
      await batch(
        this.redis,
        keys.map((k) => ['HGETALL', k] as const),
      ),
    );
    return replies.map((r) => {
      const flat = r as string[] | null;
      return flat === null || flat.length === 0 ? undefined : Object.fromEntries(pairs(flat));
    });
  }
}

type Fields = Readonly<Record<string, unknown>> | undefined;

function num(v: unknown): number | null {
  if (v === undefined || v === null || v === '') return null;
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : null;
}

function str(v: unknown): string | null {
  if (v === undefined || v === null || v === '') return null;
  return String(v);
}

function nsText(v: unknown): string | null {
  const s = str(v);
  return s !== null && /^\d{1,20}$/.test(s) ? s : null;
}

export function quoteFromFields(h: Fields): QuoteView | undefined {
  if (h === undefined) return undefined;
  const symbol = str(h.symbol);
  const ts = nsText(h.ts) ?? nsText(h.quote_ts) ?? nsText(h.trade_ts);
  if (symbol === null || ts === null) return undefined;
  return {
    symbol,
    bid: num(h.bid),
    bid_size: num(h.bid_size),
    ask: num(h.ask),
    ask_size: num(h.ask_size),
    quote_ts: nsText(h.quote_ts),
    quote_venue: str(h.quote_venue),
    last: num(h.last),
    last_size: num(h.last_size),
    trade_ts: nsText(h.trade_ts),
    trade_venue: str(h.trade_venue),
    ts,
    time: nsToIso(ts),
    updated_at: num(h.updated_at) ?? Number(BigInt(ts) / 1_000_000n),
  };
}

export function barFromFields(h: Fields): BarView | undefined {
  if (h === undefined) return undefined;
  const symbol = str(h.symbol);
  const tf = str(h.tf);
  const start = nsText(h.start) ?? nsText(h.start_ns);
  const open = num(h.open);
  const high = num(h.high);
  const low = num(h.low);
  const close = num(h.close);
  if (symbol === null || tf === null || start === null) return undefined;
  if (open === null || high === null || low === null || close === null) return undefined;
  return {
    symbol,
    tf,
    start,
    time: nsToIso(start),
    open,
    high,
    low,
    close,
    volume: num(h.volume) ?? 0,
    vwap: num(h.vwap),
    trades: num(h.trades) ?? 0,
    closed: h.closed === true || h.closed === '1' || h.closed === 'true',
  };
}

export function indicatorsFromFields(h: Fields): IndicatorView | undefined {
  if (h === undefined) return undefined;
  const symbol = str(h.symbol);
  const tf = str(h.tf);
  const start = nsText(h.start) ?? nsText(h.start_ns);
  if (symbol === null || tf === null || start === null) return undefined;
  // Values come flat (the hash) or under `values` (a message may nest them).
  const nested =
    h.values !== null && typeof h.values === 'object' ? (h.values as Record<string, unknown>) : {};
  const values = {} as Record<IndicatorName, number | null>;
  for (const k of INDICATOR_FIELDS) values[k] = num(nested[k] ?? h[k]);
  return { symbol, tf, start, time: nsToIso(start), status: str(h.status) ?? 'ok', values };
}
