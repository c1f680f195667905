import type { Config } from '../../shared/config.ts';
import {
  Atr,
  Bollinger,
  Ema,
  Macd,
  Rsi,
  Sma,
  Vwap,
  type AtrState,
  type BandsValue,
  type Computable,
  type EmaState,
  type MacdState,
  type RsiState,
} from './math.ts';

/**
 * The indicators of one bar, as a pure function of the bars in the window of `window` buckets ending at it.
 *
 * Why a fixed window rather than one running state per symbol: EMA, RSI, MACD and ATR depend on where their
 * series starts. Defining a bar's values by its own window makes them a function of stored bars only, so a
 * job that runs twice, two workers, or a restart compute exactly the same numbers, and a bar amended by a late
 * trade is recomputed correctly by the next job. Inside the window the definitions are TA-Lib's (math.ts).
 *
 * Missing buckets (no trade in that interval): `carry` inserts a flat bar at the previous close with no volume
 * (the usual charting convention); `reset` starts the series again after the gap, so values are not available
 * until enough bars follow it. Either way a value that cannot be computed is null and the row's status says
 * `warming_up`; nothing is NaN.
 */

export interface IndicatorParams {
  sma: number;
  ema: number;
  rsi: number;
  macdFast: number;
  macdSlow: number;
  macdSignal: number;
  bbPeriod: number;
  bbStdDev: number;
  atr: number;
  vwap: number;
}

export type GapPolicy = 'carry' | 'reset';

export interface IndicatorValues {
  sma: number | null;
  ema: number | null;
  rsi: number | null;
  macd: number | null;
  macdSignal: number | null;
  macdHist: number | null;
  bbUpper: number | null;
  bbMiddle: number | null;
  bbLower: number | null;
  atr: number | null;
  vwap: number | null;
}

/** SMA, EMA, RSI, MACD, Bollinger, ATR, VWAP: the unit of "indicators per second". */
export const INDICATOR_COUNT = 7;

export const VALUE_NAMES: readonly (keyof IndicatorValues)[] = [
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
];

export function paramsOf(settings: Config['indicators']): IndicatorParams {
  return {
    sma: settings.smaPeriod,
    ema: settings.emaPeriod,
    rsi: settings.rsiPeriod,
    macdFast: settings.macdFast,
    macdSlow: settings.macdSlow,
    macdSignal: settings.macdSignal,
    bbPeriod: settings.bbPeriod,
    bbStdDev: settings.bbStdDev,
    atr: settings.atrPeriod,
    vwap: settings.vwapPeriod,
  };
}

/** Stored with each row, so a change of parameters is visible (and overwrites on the next computation). */
export function paramsKey(p: IndicatorParams): string {
  return `sma=${p.sma};ema=${p.ema};rsi=${p.rsi};macd=${p.macdFast}/${p.macdSlow}/${p.macdSignal};bb=${p.bbPeriod}/${p.bbStdDev};atr=${p.atr};vwap=${p.vwap}`;
}

/** Bars needed before every value exists (TA-Lib lookbacks + 1). */
export function warmupBars(p: IndicatorParams): number {
  const slow = Math.max(p.macdFast, p.macdSlow);
  return Math.max(p.sma, p.ema, p.rsi + 1, slow + p.macdSignal - 1, p.bbPeriod, p.atr + 1, p.vwap);
}

export interface WindowBar {
  start: bigint;
  high: number;
  low: number;
  close: number;
  /** 1e-9 units. */
  volume: bigint;
  /** 1e-18 units. */
  notional: bigint;
}

export class IndicatorSet implements Computable<WindowBar, IndicatorValues> {
  private readonly sma: Sma;
  private readonly ema: Ema;
  private readonly rsi: Rsi;
  private readonly macd: Macd;
  private readonly bb: Bollinger;
  private readonly atr: Atr;
  private readonly vwap: Vwap;

  constructor(p: IndicatorParams) {
    this.sma = new Sma(p.sma);
    this.ema = new Ema(p.ema);
    this.rsi = new Rsi(p.rsi);
    this.macd = new Macd(p.macdFast, p.macdSlow, p.macdSignal);
    this.bb = new Bollinger(p.bbPeriod, p.bbStdDev);
    this.atr = new Atr(p.atr);
    this.vwap = new Vwap(p.vwap);
  }

  update(bar: WindowBar): IndicatorValues {
    const c = bar.close;
    const macd = this.macd.update(c);
    const bb = this.bb.update(c);
    return {
      sma: this.sma.update(c),
      ema: this.ema.update(c),
      rsi: this.rsi.update(c),
      macd: macd?.macd ?? null,
      macdSignal: macd?.signal ?? null,
      macdHist: macd?.hist ?? null,
      bbUpper: bb?.upper ?? null,
      bbMiddle: bb?.middle ?? null,
      bbLower: bb?.lower ?? null,
      atr: this.atr.update(bar),
      vwap: this.vwap.update(bar),
    };
  }

  /** Advance without building the result (every bar of a window but the last). */
  step(bar: WindowBar): void {
    const c = bar.close;
    this.macd.update(c);
    this.bb.update(c);
    this.sma.update(c);
    this.ema.update(c);
    this.rsi.update(c);
    this.atr.update(bar);
    this.vwap.update(bar);
  }
}

export interface IndicatorResult {
  start: bigint;
  values: IndicatorValues;
  status: 'ok' | 'warming_up';
  /** Real bars in the series used. */
  bars: number;
  /** Flat bars inserted for missing buckets. */
  filled: number;
}

/**
 * Indicators of the bar starting at `end`, from `bars` (one symbol, one timeframe, sorted by start, containing
 * at least every bar of the window; more is fine).
 */
export function computeAt(
  bars: readonly WindowBar[],
  end: bigint,
  tfNs: bigint,
  window: number,
  gaps: GapPolicy,
  params: IndicatorParams,
): IndicatorResult {
  const first = end - BigInt(window - 1) * tfNs;
  let lo = lowerBound(bars, first);
  const hi = lowerBound(bars, end + 1n); // exclusive
  if (gaps === 'reset') {
    // Only the contiguous run of buckets ending at `end`.
    let i = hi - 1;
    while (i > lo && bars[i - 1]!.start === bars[i]!.start - tfNs) i--;
    lo = i;
  }
  const set = new IndicatorSet(params);
  let values = emptyValues();
  let real = 0;
  let filled = 0;
  let prev: WindowBar | undefined;
  for (let i = lo; i < hi; i++) {
    const bar = bars[i]!;
    if (prev !== undefined) {
      for (let t = prev.start + tfNs; t < bar.start; t += tfNs) {
        const close = prev.close;
        set.step({ start: t, high: close, low: close, close, volume: 0n, notional: 0n });
        filled++;
      }
    }
    if (i === hi - 1) values = set.update(bar);
    else set.step(bar);
    real++;
    prev = bar;
  }
  const complete = VALUE_NAMES.every((k) => values[k] !== null);
  return { start: end, values, status: complete ? 'ok' : 'warming_up', bars: real, filled };
}

export function emptyValues(): IndicatorValues {
  return {
    sma: null,
    ema: null,
    rsi: null,
    macd: null,
    macdSignal: null,
    macdHist: null,
    bbUpper: null,
    bbMiddle: null,
    bbLower: null,
    atr: null,
    vwap: null,
  };
}

function lowerBound(bars: readonly WindowBar[], start: bigint): number {
  let lo = 0;
  let hi = bars.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (bars[mid]!.start < start) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * What a stored indicator row carries so that the next bar continues its series (infra/migrations/0005): the
 * recursive indicators' state, and the series' length in buckets, real bars and filled buckets. JSON text
 * with doubles in shortest round-trip form, so restoring it is exact.
 */
export interface SeriesState {
  v: 1;
  /** Buckets in the series so far (real + filled). */
  n: number;
  bars: number;
  filled: number;
  ema: EmaState;
  rsi: RsiState;
  macd: MacdState;
  atr: AtrState;
}

export function parseState(text: string | null): SeriesState | undefined {
  if (text === null) return undefined;
  const s = JSON.parse(text) as SeriesState;
  return s.v === 1 ? s : undefined;
}

/** The row before the series continues: its bar start and its state. */
export interface SeriesPoint {
  start: bigint;
  state: SeriesState;
}

export interface SeriesResult extends IndicatorResult {
  state: SeriesState;
}

/**
 * One (symbol, timeframe) series continued bar by bar, each bar O(1): EMA, RSI, MACD and ATR from the state of
 * the previous bar's row, SMA, Bollinger and VWAP from the last n buckets. Equal to running TA-Lib over the
 * whole history of the series, whatever point it is continued from.
 *
 * The series starts at the symbol's first bar of the timeframe. Missing buckets: `carry` steps the series
 * through a flat bar at the previous close with no volume for each (so a window that starts inside a gap holds
 * those flat bars, carried from the last bar before the gap, however far back that is); `reset` starts a new
 * series at the first bar after a gap.
 */
export class SeriesComputer {
  private readonly p: IndicatorParams;
  private readonly tfNs: bigint;
  private readonly gaps: GapPolicy;
  /** The last buckets of the series (up to the longest window of SMA, Bollinger, VWAP). */
  private ring: WindowBar[] = [];
  private readonly ringSize: number;
  private ema!: Ema;
  private rsi!: Rsi;
  private macd!: Macd;
  private atr!: Atr;
  private n = 0;
  private bars = 0;
  private filled = 0;
  private last: WindowBar | undefined;

  /**
   * `from`: the row the series continues from (none: a new series). `history`: the real bars up to and
   * including `from.start`, oldest first, at least the newest `historyBars(params)` of them (or all there are).
   */
  constructor(
    params: IndicatorParams,
    tfNs: bigint,
    gaps: GapPolicy,
    from?: SeriesPoint | undefined,
    history: readonly WindowBar[] = [],
  ) {
    this.p = params;
    this.tfNs = tfNs;
    this.gaps = gaps;
    this.ringSize = historyBars(params);
    if (from === undefined) {
      this.reset();
      return;
    }
    const s = from.state;
    this.ema = Ema.restore(params.ema, s.ema);
    this.rsi = Rsi.restore(params.rsi, s.rsi);
    this.macd = Macd.restore(params.macdFast, params.macdSlow, params.macdSignal, s.macd);
    this.atr = Atr.restore(params.atr, s.atr);
    this.n = s.n;
    this.bars = s.bars;
    this.filled = s.filled;
    // The buckets ending at from.start, gaps filled as the series filled them, as many as the series has.
    const buckets: WindowBar[] = [];
    let prev: WindowBar | undefined;
    for (const bar of history) {
      if (bar.start > from.start) break;
      if (prev !== undefined)
        for (let t = prev.start + tfNs; t < bar.start; t += tfNs) buckets.push(flat(t, prev));
      buckets.push(bar);
      prev = bar;
    }
    if (prev === undefined || prev.start !== from.start)
      throw new RangeError(`indicator history does not end at the bar the series continues from`);
    this.ring = buckets.slice(-Math.min(this.ringSize, this.n));
    this.last = prev;
  }

  /** The next real bar (start after every bar before it). */
  next(bar: WindowBar): SeriesResult {
    const last = this.last;
    if (last !== undefined) {
      if (bar.start <= last.start) throw new RangeError('indicator bars must come in time order');
      if (bar.start - last.start > this.tfNs) {
        if (this.gaps === 'reset') this.reset();
        else
          for (let t = last.start + this.tfNs; t < bar.start; t += this.tfNs) {
            this.step(flat(t, last));
            this.filled++;
          }
      }
    }
    const carried = this.step(bar);
    this.bars++;
    this.last = bar;
    const window = this.windowValues();
    const values: IndicatorValues = { ...carried, ...window };
    const complete = VALUE_NAMES.every((k) => values[k] !== null);
    return {
      start: bar.start,
      values,
      status: complete ? 'ok' : 'warming_up',
      bars: this.bars,
      filled: this.filled,
      state: {
        v: 1,
        n: this.n,
        bars: this.bars,
        filled: this.filled,
        ema: this.ema.state(),
        rsi: this.rsi.state(),
        macd: this.macd.state(),
        atr: this.atr.state(),
      },
    };
  }

  private reset(): void {
    const p = this.p;
    this.ema = new Ema(p.ema);
    this.rsi = new Rsi(p.rsi);
    this.macd = new Macd(p.macdFast, p.macdSlow, p.macdSignal);
    this.atr = new Atr(p.atr);
    this.ring = [];
    this.n = 0;
    this.bars = 0;
    this.filled = 0;
    this.last = undefined;
  }

  private step(
    bar: WindowBar,
  ): Pick<IndicatorValues, 'ema' | 'rsi' | 'macd' | 'macdSignal' | 'macdHist' | 'atr'> {
    const c = bar.close;
    const macd = this.macd.update(c);
    const out = {
      ema: this.ema.update(c),
      rsi: this.rsi.update(c),
      macd: macd?.macd ?? null,
      macdSignal: macd?.signal ?? null,
      macdHist: macd?.hist ?? null,
      atr: this.atr.update(bar),
    };
    this.ring.push(bar);
    if (this.ring.length > this.ringSize) this.ring.shift();
    this.n++;
    return out;
  }

  private windowValues(): Pick<IndicatorValues, 'sma' | 'bbUpper' | 'bbMiddle' | 'bbLower' | 'vwap'> {
    const p = this.p;
    const sma = new Sma(p.sma);
    const bb = new Bollinger(p.bbPeriod, p.bbStdDev);
    const vwap = new Vwap(p.vwap);
    let s: number | null = null;
    let b: BandsValue | null = null;
    let v: number | null = null;
    const r = this.ring;
    for (let i = Math.max(0, r.length - p.sma); i < r.length; i++) s = sma.update(r[i]!.close);
    for (let i = Math.max(0, r.length - p.bbPeriod); i < r.length; i++) b = bb.update(r[i]!.close);
    for (let i = Math.max(0, r.length - p.vwap); i < r.length; i++) v = vwap.update(r[i]!);
    return {
      sma: s,
      bbUpper: b?.upper ?? null,
      bbMiddle: b?.middle ?? null,
      bbLower: b?.lower ?? null,
      vwap: v,
    };
  }
}

/** Real bars a continued series needs before its first new bar (the longest window of SMA, Bollinger, VWAP). */
export function historyBars(p: IndicatorParams): number {
  return Math.max(p.sma, p.bbPeriod, p.vwap);
}

function flat(start: bigint, prev: WindowBar): WindowBar {
  return { start, high: prev.close, low: prev.close, close: prev.close, volume: 0n, notional: 0n };
}
