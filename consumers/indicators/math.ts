/**
 * Indicator math: pure, incremental computables, one instance per symbol and series (tardis-node's
 * computable pattern). `update(x)` takes the next bar's value and returns the indicator at that bar, or null
 * while it is not available yet (too little history). Nothing here returns NaN: a non-finite result is null.
 *
 * Definitions are TA-Lib's with its default settings (compatibility DEFAULT, unstable period 0), down to the
 * order of the floating-point operations. The recursive ones (EMA, RSI, MACD, ATR) can save their state
 * (`state()`) and be restored from it (`restore`) exactly, so a series continued bar by bar from stored state
 * gives the same doubles as TA-Lib run over the whole history (test/int/indicators-talib.int.test.ts checks
 * three long series within 1e-9 relative, in practice bit for bit). SMA, Bollinger and VWAP are functions of
 * their last n bars and are computed from them.
 * - SMA: running sum; value = sum / n.
 * - EMA: seeded with the SMA of the first n values, then prev + (x - prev) · 2/(n+1).
 * - RSI: Wilder: first average gain/loss = mean of the first n changes, then (avg·(n-1) + change)/n;
 *   RSI = 100·gain/(gain+loss), 0 when gain+loss is 0 (|·| < 1e-14).
 * - MACD(fast, slow, signal): both EMAs start at the slow EMA's first bar, the fast one seeded with the SMA of
 *   its last `fast` values there (TA-Lib's alignment); signal = EMA of the MACD line; all three are reported
 *   from the bar where the signal exists.
 * - Bollinger(n, k): middle = SMA(n), σ = population standard deviation, sqrt(E[x²] − mean²) (0 when not
 *   positive); bands = middle ± k·σ.
 * - ATR: Wilder: true range from the second bar, first ATR = mean of the first n true ranges, then
 *   (atr·(n-1) + tr)/n.
 * - VWAP(n) (not in TA-Lib): Σ notional / Σ volume over the last n bars, exact sums (bar notional and volume
 *   are exact fixed point); null when the n bars have no volume.
 */

export interface Computable<In, Out> {
  update(input: In): Out | null;
}

const EPSILON = 0.00000000000001; // TA_IS_ZERO

function finite(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

function requirePeriod(name: string, n: number, min = 1): void {
  if (!Number.isInteger(n) || n < min)
    throw new RangeError(`${name} period must be an integer >= ${min} (got ${n})`);
}

export type EmaState = [count: number, seedSum: number, value: number];
export type RsiState = [count: number, prevValue: number, gain: number, loss: number];
export type MacdState = [count: number, seed: number[], fast: number, slow: number, signal: EmaState];
export type AtrState = [count: number, prevClose: number, seedSum: number, atr: number];

export class Sma implements Computable<number, number> {
  private readonly ring: Float64Array;
  private count = 0;
  private sum = 0;

  constructor(readonly period: number) {
    requirePeriod('SMA', period);
    this.ring = new Float64Array(period);
  }

  update(x: number): number | null {
    const n = this.period;
    this.sum += x;
    this.ring[this.count % n] = x;
    this.count++;
    if (this.count < n) return null;
    const value = this.sum / n;
    // As TA-Lib: the value leaving the window is subtracted after the average is taken (same rounding).
    this.sum -= this.ring[this.count % n]!;
    return finite(value);
  }
}

export class Ema implements Computable<number, number> {
  private readonly k: number;
  private seedSum = 0;
  private count = 0;
  private prev = 0;

  constructor(readonly period: number) {
    requirePeriod('EMA', period);
    this.k = 2 / (period + 1);
  }

  /** What continues the series exactly: [bars seen (capped past the seed), seed sum, value]. */
  state(): EmaState {
    return [Math.min(this.count, this.period + 1), this.seedSum, this.prev];
  }

  static restore(period: number, s: EmaState): Ema {
    const e = new Ema(period);
    [e.count, e.seedSum, e.prev] = s;
    return e;
  }

  update(x: number): number | null {
    this.count++;
    if (this.count < this.period) {
      this.seedSum += x;
      return null;
    }
    if (this.count === this.period) {
      this.seedSum += x;
      this.prev = this.seedSum / this.period;
    } else {
      this.prev = (x - this.prev) * this.k + this.prev;
    }
    return finite(this.prev);
  }
}

export class Rsi implements Computable<number, number> {
  private count = 0;
  private prevValue = 0;
  private gain = 0;
  private loss = 0;

  constructor(readonly period: number) {
    requirePeriod('RSI', period);
  }

  /** [bars seen (capped), previous value, average gain, average loss]. */
  state(): RsiState {
    return [Math.min(this.count, this.period + 2), this.prevValue, this.gain, this.loss];
  }

  static restore(period: number, s: RsiState): Rsi {
    const r = new Rsi(period);
    [r.count, r.prevValue, r.gain, r.loss] = s;
    return r;
  }

  update(x: number): number | null {
    const n = this.period;
    const i = this.count++;
    if (i === 0) {
      this.prevValue = x;
      return null;
    }
    const change = x - this.prevValue;
    this.prevValue = x;
    if (i <= n) {
      if (change < 0) this.loss -= change;
      else this.gain += change;
      if (i < n) return null;
      this.loss /= n;
      this.gain /= n;
    } else {
      this.loss *= n - 1;
      this.gain *= n - 1;
      if (change < 0) this.loss -= change;
      else this.gain += change;
      this.loss /= n;
      this.gain /= n;
    }
    const total = this.gain + this.loss;
    return finite(total > -EPSILON && total < EPSILON ? 0 : 100 * (this.gain / total));
  }
}

export interface MacdValue {
  macd: number;
  signal: number;
  hist: number;
}

export class Macd implements Computable<number, MacdValue> {
  private readonly fast: number;
  private readonly slow: number;
  private readonly kFast: number;
  private readonly kSlow: number;
  private signal: Ema;
  private readonly window: number[] = [];
  private count = 0;
  private fastEma = 0;
  private slowEma = 0;

  constructor(fast: number, slow: number, signal: number) {
    requirePeriod('MACD fast', fast, 2);
    requirePeriod('MACD slow', slow, 2);
    requirePeriod('MACD signal', signal);
    // TA-Lib swaps the periods when given in the wrong order.
    this.fast = Math.min(fast, slow);
    this.slow = Math.max(fast, slow);
    this.kFast = 2 / (this.fast + 1);
    this.kSlow = 2 / (this.slow + 1);
    this.signal = new Ema(signal);
  }

  /** [bars seen (capped), the first values while the slow EMA is not seeded, fast EMA, slow EMA, signal]. */
  state(): MacdState {
    return [
      Math.min(this.count, this.slow + 1),
      [...this.window],
      this.fastEma,
      this.slowEma,
      this.signal.state(),
    ];
  }

  static restore(fast: number, slow: number, signal: number, s: MacdState): Macd {
    const m = new Macd(fast, slow, signal);
    m.count = s[0];
    m.window.push(...s[1]);
    m.fastEma = s[2];
    m.slowEma = s[3];
    m.signal = Ema.restore(signal, s[4]);
    return m;
  }

  update(x: number): MacdValue | null {
    this.count++;
    if (this.count < this.slow) {
      this.window.push(x);
      return null;
    }
    if (this.count === this.slow) {
      this.window.push(x);
      let slowSum = 0;
      for (let i = 0; i < this.slow; i++) slowSum += this.window[i]!;
      let fastSum = 0;
      for (let i = this.slow - this.fast; i < this.slow; i++) fastSum += this.window[i]!;
      this.slowEma = slowSum / this.slow;
      this.fastEma = fastSum / this.fast;
      this.window.length = 0;
    } else {
      this.fastEma = (x - this.fastEma) * this.kFast + this.fastEma;
      this.slowEma = (x - this.slowEma) * this.kSlow + this.slowEma;
    }
    const macd = this.fastEma - this.slowEma;
    const signal = this.signal.update(macd);
    if (signal === null) return null;
    const hist = macd - signal;
    if (!Number.isFinite(macd) || !Number.isFinite(hist)) return null;
    return { macd, signal, hist };
  }
}

export interface BandsValue {
  upper: number;
  middle: number;
  lower: number;
}

export class Bollinger implements Computable<number, BandsValue> {
  private readonly sma: Sma;
  private readonly ring: Float64Array;
  private count = 0;
  private sumSquares = 0;

  constructor(
    readonly period: number,
    readonly deviations: number,
  ) {
    requirePeriod('Bollinger', period, 2);
    if (!Number.isFinite(deviations)) throw new RangeError('Bollinger deviations must be finite');
    this.sma = new Sma(period);
    this.ring = new Float64Array(period);
  }

  update(x: number): BandsValue | null {
    const n = this.period;
    const middle = this.sma.update(x);
    const sq = x * x;
    this.sumSquares += sq;
    const slot = this.count % n;
    this.ring[slot] = sq;
    this.count++;
    if (middle === null) return null;
    let meanSquares = this.sumSquares / n;
    this.sumSquares -= this.ring[this.count % n]!;
    meanSquares -= middle * middle;
    const sd = meanSquares < EPSILON ? 0 : Math.sqrt(meanSquares);
    // TA-Lib: with equal up/down multipliers of 1 it adds σ itself, otherwise σ·k.
    const width = this.deviations === 1 ? sd : sd * this.deviations;
    const upper = middle + width;
    const lower = middle - width;
    if (!Number.isFinite(upper) || !Number.isFinite(lower)) return null;
    return { upper, middle, lower };
  }
}

export interface Hlc {
  high: number;
  low: number;
  close: number;
}

export class Atr implements Computable<Hlc, number> {
  private count = 0;
  private prevClose = 0;
  private seedSum = 0;
  private atr = 0;

  constructor(readonly period: number) {
    requirePeriod('ATR', period);
  }

  /** [bars seen (capped), previous close, seed sum, ATR]. */
  state(): AtrState {
    return [Math.min(this.count, this.period + 2), this.prevClose, this.seedSum, this.atr];
  }

  static restore(period: number, s: AtrState): Atr {
    const a = new Atr(period);
    [a.count, a.prevClose, a.seedSum, a.atr] = s;
    return a;
  }

  update(bar: Hlc): number | null {
    const n = this.period;
    const i = this.count++;
    if (i === 0) {
      this.prevClose = bar.close;
      return null;
    }
    let tr = bar.high - bar.low;
    const up = Math.abs(this.prevClose - bar.high);
    if (up > tr) tr = up;
    const down = Math.abs(this.prevClose - bar.low);
    if (down > tr) tr = down;
    this.prevClose = bar.close;
    if (i < n) {
      this.seedSum += tr;
      return null;
    }
    if (i === n) {
      this.seedSum += tr;
      this.atr = this.seedSum / n;
    } else {
      this.atr *= n - 1;
      this.atr += tr;
      this.atr /= n;
    }
    return finite(this.atr);
  }
}

export interface VolumeNotional {
  /** Σ size in 1e-9 units. */
  volume: bigint;
  /** Σ price × size in 1e-18 units. */
  notional: bigint;
}

export class Vwap implements Computable<VolumeNotional, number> {
  private readonly ring: VolumeNotional[] = [];
  private volume = 0n;
  private notional = 0n;
  private count = 0;

  constructor(readonly period: number) {
    requirePeriod('VWAP', period);
  }

  update(bar: VolumeNotional): number | null {
    const n = this.period;
    this.volume += bar.volume;
    this.notional += bar.notional;
    const slot = this.count % n;
    const out = this.ring[slot];
    if (out !== undefined) {
      this.volume -= out.volume;
      this.notional -= out.notional;
    }
    this.ring[slot] = bar;
    this.count++;
    if (this.count < n || this.volume === 0n) return null;
    return finite(Number(this.notional) / Number(this.volume) / 1e9);
  }
}
