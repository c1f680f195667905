import { nowNs, type Quote, type Tick, type Trade } from '../shared/model.ts';

/**
 * Seedable synthetic market: per symbol a geometric Brownian motion mid price, quotes with a spread around it
 * (bid < ask always), trades at the touch, lot-sized sizes, and one increasing sequence number per source.
 * The same seed gives the same prices, sizes and sequence; timestamps follow the injected clock (wall clock by
 * default), kept strictly increasing so that (source, ts, seq) stays unique and ordered.
 */
export interface SyntheticOptions {
  symbols: readonly string[];
  seed: number;
  source: string;
  venue?: string;
  /** Share of ticks that are trades (the rest are quotes). */
  tradeRatio?: number;
  /** Annualised volatility range; each symbol draws one. */
  volatility?: readonly [number, number];
  clock?: () => bigint;
}

interface SymbolState {
  symbol: string;
  mid: number;
  sigmaPerStep: number;
  spreadBps: number;
  tickSize: number;
}

/** mulberry32: small, fast, good enough for simulation, and reproducible across platforms. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function symbolNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `SYM${String(i).padStart(4, '0')}`);
}

const STEPS_PER_YEAR = 252 * 6.5 * 3600 * 10; // one step ≈ 100 ms of a trading year

export class SyntheticMarket {
  private readonly rand: () => number;
  private readonly states: SymbolState[];
  private readonly source: string;
  private readonly venue: string;
  private readonly tradeRatio: number;
  private readonly clock: () => bigint;
  private seq = 0;
  private lastTs = 0n;
  private spare: number | undefined;

  constructor(options: SyntheticOptions) {
    if (options.symbols.length === 0) throw new RangeError('synthetic market needs at least one symbol');
    this.rand = mulberry32(options.seed);
    this.source = options.source;
    this.venue = options.venue ?? 'SYNTH';
    this.tradeRatio = options.tradeRatio ?? 0.3;
    this.clock = options.clock ?? nowNs;
    const [vLo, vHi] = options.volatility ?? [0.15, 0.6];
    this.states = options.symbols.map((symbol) => {
      const mid = 10 + this.rand() * 490;
      const sigma = vLo + this.rand() * (vHi - vLo);
      return {
        symbol,
        mid,
        sigmaPerStep: sigma / Math.sqrt(STEPS_PER_YEAR),
        spreadBps: 1 + this.rand() * 9,
        tickSize: mid < 1 ? 0.0001 : 0.01,
      };
    });
  }

  /** The next `n` ticks, across symbols in random order. */
  next(n: number): Tick[] {
    const out: Tick[] = new Array(n);
    // Ticks of one call share the clock reading, one nanosecond apart; never earlier than the last call's.
    const now = this.clock();
    let ts = now > this.lastTs ? now : this.lastTs + 1n;
    for (let i = 0; i < n; i++) {
      out[i] = this.step(this.states[Math.floor(this.rand() * this.states.length)]!, ts);
      this.lastTs = ts;
      ts += 1n;
    }
    return out;
  }

  private step(s: SymbolState, ts: bigint): Tick {
    // GBM: S ← S·exp(-σ²/2 + σ·Z) per step (drift-free).
    const z = this.gaussian();
    s.mid *= Math.exp(-0.5 * s.sigmaPerStep * s.sigmaPerStep + s.sigmaPerStep * z);
    const half = Math.max(s.tickSize, (s.mid * s.spreadBps) / 20_000);
    const bid = roundTo(s.mid - half, s.tickSize);
    const ask = Math.max(roundTo(s.mid + half, s.tickSize), roundTo(bid + s.tickSize, s.tickSize));
    const seq = ++this.seq;
    if (this.rand() < this.tradeRatio) {
      const buy = this.rand() < 0.5;
      const trade: Trade = {
        type: 'trade',
        source: this.source,
        symbol: s.symbol,
        ts,
        seq,
        venue: this.venue,
        price: buy ? ask : bid,
        size: this.lots(),
        side: buy ? 'buy' : 'sell',
      };
      return trade;
    }
    const quote: Quote = {
      type: 'quote',
      source: this.source,
      symbol: s.symbol,
      ts,
      seq,
      venue: this.venue,
      bidPrice: bid,
      bidSize: this.lots(),
      askPrice: ask,
      askSize: this.lots(),
    };
    return quote;
  }

  /** Round lots of 100, heavier towards small sizes. */
  private lots(): number {
    return 100 * (1 + Math.floor(-Math.log(1 - this.rand()) * 3));
  }

  private gaussian(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.rand();
    const v = this.rand();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
}

function roundTo(x: number, step: number): number {
  const decimals = step >= 0.01 ? 2 : 4;
  return Number((Math.round(x / step) * step).toFixed(decimals));
}
