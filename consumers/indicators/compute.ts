import type { Config } from '../../shared/config.ts';
import { Atr, Bollinger, Ema, Macd, Rsi, Sma, Vwap, type Computable } from './math.ts';

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
