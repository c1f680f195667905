import { DataError } from '../../shared/errors.ts';
import type { Tick, Trade } from '../../shared/model.ts';

/**
 * Pure OHLCV bar aggregation: no I/O, no clock. The live bars sink, `tickstream bars rebuild`, the tests and
 * the benchmark all run this code, so that live and rebuilt bars agree.
 *
 * A bar is a commutative merge of trades: high and low are max and min, open and close are the prices of the
 * first and last trade by the total order (ts, seq, source), and volume, notional and trade count are sums.
 * The sums are exact (bigint fixed point, see `scaled`), so merging the same trades in any order, split into
 * any partial bars, gives identical bars: a late trade can amend a stored bar, and a rebuild that reads the
 * trades in (ts, seq) order reproduces what the live path built from arrival order.
 *
 * Bucket math is exact on nanosecond bigints: a trade at ts belongs to [ts - ts % tf, ts - ts % tf + tf).
 *
 * Closing: each trade advances a clock, the newest exchange time seen by its watermark key (its symbol, or the
 * stream shard it lives on). The watermark is that clock minus the allowed lateness; a bar whose end is at or
 * before the watermark is closed. A trade for a closed bar is late: it is not dropped but emitted as an
 * amendment (a one-trade partial bar with `late` = 1) that the store merges into the stored bar.
 */

export const TIMEFRAME_NS = {
  '1s': 1_000_000_000n,
  '1m': 60_000_000_000n,
  '5m': 300_000_000_000n,
  '1h': 3_600_000_000_000n,
} as const;

export type TimeframeName = keyof typeof TIMEFRAME_NS;
export const TIMEFRAME_NAMES = Object.keys(TIMEFRAME_NS) as TimeframeName[];

export interface Timeframe {
  readonly name: TimeframeName;
  readonly ns: bigint;
  readonly ms: number;
}

export function timeframe(name: TimeframeName): Timeframe {
  const ns = TIMEFRAME_NS[name];
  return { name, ns, ms: Number(ns / 1_000_000n) };
}

/** Distinct timeframes, shortest first. */
export function timeframes(names: readonly TimeframeName[]): Timeframe[] {
  return [...new Set(names)].map(timeframe).sort((a, b) => (a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : 0));
}

export function bucketStart(ts: bigint, tfNs: bigint): bigint {
  return ts - (ts % tfNs);
}

/**
 * Fixed-point scale of sizes and prices (9 decimals); notional (price × size) carries 18. A JS number is
 * turned into an integer count of 1e-9 units deterministically: the same double always gives the same integer,
 * and a decimal with up to 9 places (what feeds send) converts exactly.
 */
export const SCALE = 1_000_000_000n;
export const SCALE_DIGITS = 9;

export function scaled(x: number): bigint {
  if (Number.isSafeInteger(x)) return BigInt(x) * SCALE;
  // Below 4e6 the product x·1e9 stays under 2^52 and its rounding error under 0.5, so Math.round recovers the
  // decimal a feed meant; larger values go through the exact decimal expansion of the double.
  if (Math.abs(x) < 4e6) return BigInt(Math.round(x * 1e9));
  // A fact about the tick, never retriable; the message model refuses such values first (MAX_PRICE, MAX_SIZE).
  if (!Number.isFinite(x) || Math.abs(x) >= 1e21) throw new DataError(`value out of range for a bar: ${x}`);
  return BigInt(x.toFixed(SCALE_DIGITS).replace('.', ''));
}

/** A fixed-point integer as decimal text ("12.500000000"), for PostgreSQL numeric and display. */
export function formatScaled(v: bigint, digits: number): string {
  const neg = v < 0n;
  const s = (neg ? -v : v).toString().padStart(digits + 1, '0');
  return `${neg ? '-' : ''}${s.slice(0, s.length - digits)}.${s.slice(s.length - digits)}`;
}

/** Inverse of formatScaled for PostgreSQL numeric text with at most `digits` decimals. */
export function parseScaled(text: string, digits: number): bigint {
  const dot = text.indexOf('.');
  if (dot < 0) return BigInt(text) * 10n ** BigInt(digits);
  const frac = text.slice(dot + 1);
  if (frac.length > digits) throw new RangeError(`more than ${digits} decimals: ${text}`);
  return BigInt(text.slice(0, dot) + frac.padEnd(digits, '0'));
}

/** Position of a trade in the total order that decides open and close. */
export interface TradeKey {
  readonly ts: bigint;
  readonly seq: number;
  readonly source: string;
}

export function compareKeys(a: TradeKey, b: TradeKey): number {
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1;
  if (a.seq !== b.seq) return a.seq < b.seq ? -1 : 1;
  // Code-unit order; the store compares with COLLATE "C" (bytes), which agrees for ASCII source names.
  return a.source < b.source ? -1 : a.source > b.source ? 1 : 0;
}

export interface Bar {
  readonly symbol: string;
  readonly tf: Timeframe;
  /** Bucket start, ns since the epoch. */
  readonly start: bigint;
  open: number;
  high: number;
  low: number;
  close: number;
  openKey: TradeKey;
  closeKey: TradeKey;
  /** Σ size, in 1e-9 units. */
  volume: bigint;
  /** Σ price × size, in 1e-18 units. */
  notional: bigint;
  trades: number;
  /** Trades merged after the bar had closed. A delivery statistic: a rebuild in time order has none. */
  late: number;
}

export function barEnd(bar: Pick<Bar, 'start' | 'tf'>): bigint {
  return bar.start + bar.tf.ns;
}

/** Volume-weighted average price, or null for a bar without volume (only zero-size trades). */
export function vwap(bar: Pick<Bar, 'volume' | 'notional'>): number | null {
  if (bar.volume === 0n) return null;
  return Number(bar.notional) / Number(bar.volume) / 1e9;
}

export function barKey(symbol: string, tf: TimeframeName, start: bigint): string {
  return `${symbol}\u0000${tf}\u0000${start}`;
}

function barOf(
  t: Trade,
  tf: Timeframe,
  start: bigint,
  notional: bigint,
  size: bigint,
  late: number,
  key: TradeKey = { ts: t.ts, seq: t.seq, source: t.source },
): Bar {
  return {
    symbol: t.symbol,
    tf,
    start,
    open: t.price,
    high: t.price,
    low: t.price,
    close: t.price,
    openKey: key,
    closeKey: key,
    volume: size,
    notional,
    trades: 1,
    late,
  };
}

/** Merge `add` into `into` (same symbol, timeframe and bucket). Commutative and associative. */
export function mergeBar(into: Bar, add: Bar): void {
  if (add.high > into.high) into.high = add.high;
  if (add.low < into.low) into.low = add.low;
  if (compareKeys(add.openKey, into.openKey) < 0) {
    into.open = add.open;
    into.openKey = add.openKey;
  }
  if (compareKeys(add.closeKey, into.closeKey) > 0) {
    into.close = add.close;
    into.closeKey = add.closeKey;
  }
  into.volume += add.volume;
  into.notional += add.notional;
  into.trades += add.trades;
  into.late += add.late;
}

export function copyBar(bar: Bar): Bar {
  return { ...bar };
}

/** Merge a list of partial bars into one bar per (symbol, tf, start). The inputs are not modified. */
export function mergeAll(bars: Iterable<Bar>, into = new Map<string, Bar>()): Map<string, Bar> {
  for (const b of bars) {
    const k = barKey(b.symbol, b.tf.name, b.start);
    const cur = into.get(k);
    if (cur === undefined) into.set(k, copyBar(b));
    else mergeBar(cur, b);
  }
  return into;
}

export type BarEvent =
  { readonly kind: 'closed'; readonly bar: Bar } | { readonly kind: 'amended'; readonly bar: Bar };

export interface BarBuilderOptions {
  readonly timeframes: readonly Timeframe[];
  /** How far behind its clock a trade may be and still land in an open bar. */
  readonly allowedLatenessNs: bigint;
  /** The clock a symbol's trades advance: the symbol itself (default) or a group such as its stream shard. */
  readonly watermarkKey?: (symbol: string) => string;
}

export interface BarBuilderStats {
  trades: number;
  /** Trades that were late for at least one timeframe. */
  lateTrades: number;
  closed: number;
  amendments: number;
}

interface Clock {
  maxTs: bigint;
  /** Earliest end among the open bars of this clock's symbols: nothing can close before the watermark reaches it. */
  nextClose: bigint;
  readonly symbols: SymbolBars[];
}

interface SymbolBars {
  readonly symbol: string;
  readonly clock: Clock;
  /** Per timeframe index: open bars by bucket start (several are open when trades arrive within the lateness). */
  readonly open: Map<bigint, Bar>[];
  /** Per timeframe index: the bar the last trade went to (the common case is the same bucket again). */
  readonly last: (Bar | undefined)[];
  /** Per timeframe index: the end of `last`'s bucket. */
  readonly lastEnd: bigint[];
}

const NO_CLOSE = 1n << 80n;
const NO_TRADE = -(1n << 80n);

/**
 * Builds bars from trades in arrival order. `add` returns what happened as events: bars that closed, and
 * amendments (partial bars of late trades for bars that had already closed). `drain` closes everything still
 * open (end of a finite input). Quotes are ignored.
 */
export class BarBuilder {
  readonly stats: BarBuilderStats = { trades: 0, lateTrades: 0, closed: 0, amendments: 0 };
  private readonly tfs: readonly Timeframe[];
  private readonly lateness: bigint;
  private readonly keyOf: (symbol: string) => string;
  private readonly clocks = new Map<string, Clock>();
  private readonly symbols = new Map<string, SymbolBars>();

  constructor(options: BarBuilderOptions) {
    if (options.timeframes.length === 0) throw new RangeError('bar builder needs at least one timeframe');
    if (options.allowedLatenessNs < 0n) throw new RangeError('allowed lateness must not be negative');
    this.tfs = options.timeframes;
    this.lateness = options.allowedLatenessNs;
    this.keyOf = options.watermarkKey ?? ((s) => s);
  }

  /** Start a clock where a store left it (the live sink resumes from the stored maximum). */
  seedClock(key: string, maxTs: bigint): void {
    const clock = this.clock(key);
    if (maxTs > clock.maxTs) clock.maxTs = maxTs;
  }

  /** The newest exchange time seen by a clock, or undefined before its first trade. */
  clockOf(key: string): bigint | undefined {
    const c = this.clocks.get(key);
    return c === undefined || c.maxTs === NO_TRADE ? undefined : c.maxTs;
  }

  clockKeys(): string[] {
    return [...this.clocks.keys()];
  }

  watermarkKey(symbol: string): string {
    return this.keyOf(symbol);
  }

  add(tick: Tick, events: BarEvent[] = []): BarEvent[] {
    if (tick.type !== 'trade') return events;
    const s = this.symbolBars(tick.symbol);
    const clock = s.clock;
    const watermark = clock.maxTs - this.lateness;
    const size = scaled(tick.size);
    const notional = scaled(tick.price) * size;
    const ts = tick.ts;
    // One key per trade, shared by its bars (never mutated): a trade touches every timeframe.
    const key: TradeKey = { ts, seq: tick.seq, source: tick.source };
    let late = false;
    this.stats.trades++;
    for (let i = 0; i < this.tfs.length; i++) {
      const tf = this.tfs[i]!;
      let bar = s.last[i];
      let start: bigint;
      let end: bigint;
      // Most trades fall in the bucket of the symbol's previous trade: compare with its bounds (ts ≥ 0, so
      // the bucket is [ts - ts % ns, + ns)) rather than compute them, which allocates three bigints.
      if (bar !== undefined && ts >= bar.start && ts < s.lastEnd[i]!) {
        start = bar.start;
        end = s.lastEnd[i]!;
      } else {
        start = ts - (ts % tf.ns);
        end = start + tf.ns;
      }
      if (end <= watermark) {
        late = true;
        this.stats.amendments++;
        events.push({ kind: 'amended', bar: barOf(tick, tf, start, notional, size, 1, key) });
        continue;
      }
      if (bar === undefined || bar.start !== start) {
        bar = s.open[i]!.get(start);
        if (bar === undefined) {
          bar = barOf(tick, tf, start, notional, size, 0, key);
          s.open[i]!.set(start, bar);
          if (end < clock.nextClose) clock.nextClose = end;
          s.last[i] = bar;
          s.lastEnd[i] = end;
          continue;
        }
        s.last[i] = bar;
        s.lastEnd[i] = end;
      }
      mergeTrade(bar, key, tick.price, notional, size);
    }
    if (late) this.stats.lateTrades++;
    if (ts > clock.maxTs) {
      clock.maxTs = ts;
      if (ts - this.lateness >= clock.nextClose) this.closeDue(clock, ts - this.lateness, events);
    }
    return events;
  }

  /** Close every open bar (end of input), in (symbol, tf, start) order. */
  drain(events: BarEvent[] = []): BarEvent[] {
    const all = this.openBars();
    for (const s of this.symbols.values()) {
      for (let i = 0; i < this.tfs.length; i++) {
        s.open[i]!.clear();
        s.last[i] = undefined;
      }
    }
    for (const c of this.clocks.values()) c.nextClose = NO_CLOSE;
    for (const bar of all) events.push({ kind: 'closed', bar });
    this.stats.closed += all.length;
    return events;
  }

  /** The bars still open, sorted by symbol, timeframe and start. */
  openBars(): Bar[] {
    const out: Bar[] = [];
    for (const s of this.symbols.values())
      for (const m of s.open) for (const bar of m.values()) out.push(bar);
    return out.sort(byBarKey);
  }

  private closeDue(clock: Clock, watermark: bigint, events: BarEvent[]): void {
    let next = NO_CLOSE;
    for (const s of clock.symbols) {
      for (let i = 0; i < this.tfs.length; i++) {
        const open = s.open[i]!;
        for (const [start, bar] of open) {
          const end = start + bar.tf.ns;
          if (end <= watermark) {
            open.delete(start);
            if (s.last[i] === bar) s.last[i] = undefined;
            events.push({ kind: 'closed', bar });
            this.stats.closed++;
          } else if (end < next) next = end;
        }
      }
    }
    clock.nextClose = next;
  }

  private clock(key: string): Clock {
    let c = this.clocks.get(key);
    if (c === undefined) {
      c = { maxTs: NO_TRADE, nextClose: NO_CLOSE, symbols: [] };
      this.clocks.set(key, c);
    }
    return c;
  }

  private symbolBars(symbol: string): SymbolBars {
    let s = this.symbols.get(symbol);
    if (s === undefined) {
      const clock = this.clock(this.keyOf(symbol));
      s = {
        symbol,
        clock,
        open: this.tfs.map(() => new Map<bigint, Bar>()),
        last: this.tfs.map(() => undefined),
        lastEnd: this.tfs.map(() => 0n),
      };
      clock.symbols.push(s);
      this.symbols.set(symbol, s);
    }
    return s;
  }
}

function mergeTrade(bar: Bar, key: TradeKey, p: number, notional: bigint, size: bigint): void {
  if (p > bar.high) bar.high = p;
  if (p < bar.low) bar.low = p;
  if (compareKeys(key, bar.closeKey) > 0) {
    bar.close = p;
    bar.closeKey = key;
  } else if (compareKeys(key, bar.openKey) < 0) {
    bar.open = p;
    bar.openKey = key;
  }
  bar.volume += size;
  bar.notional += notional;
  bar.trades++;
}

export function byBarKey(a: Bar, b: Bar): number {
  if (a.symbol !== b.symbol) return a.symbol < b.symbol ? -1 : 1;
  if (a.tf.ns !== b.tf.ns) return a.tf.ns < b.tf.ns ? -1 : 1;
  return a.start < b.start ? -1 : a.start > b.start ? 1 : 0;
}

/** Build every bar of a finite, complete input (tests, benchmarks): merged per bar, sorted, late counts kept. */
export function buildBars(ticks: Iterable<Tick>, options: BarBuilderOptions): Bar[] {
  const builder = new BarBuilder(options);
  const events: BarEvent[] = [];
  for (const t of ticks) builder.add(t, events);
  builder.drain(events);
  return [...mergeAll(events.map((e) => e.bar)).values()].sort(byBarKey);
}
