import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Atr, Bollinger, Ema, Macd, Rsi, Sma, Vwap } from '../../consumers/indicators/math.ts';
import {
  computeAt,
  warmupBars,
  type IndicatorParams,
  type WindowBar,
} from '../../consumers/indicators/compute.ts';
import { scaled } from '../../consumers/bars/aggregate.ts';

/** test/fixtures/indicators-reference.json: see its "sources" for where every number comes from. */
interface Fixture {
  published: {
    rsi10: { input: number[]; period: number; expected: (number | null)[]; scales: number[] };
    ema3: { input: number[]; period: number; expected: (number | null)[] };
  };
  ford_2012: {
    input: { high: number[]; low: number[]; close: number[] };
    sma20: (number | null)[];
    ema20: (number | null)[];
    rsi14: (number | null)[];
    macd: (number | null)[];
    macdSignal: (number | null)[];
    macdHist: (number | null)[];
    bbUpper: (number | null)[];
    bbMiddle: (number | null)[];
    bbLower: (number | null)[];
    atr14: (number | null)[];
  };
}

const fixture = JSON.parse(
  readFileSync(join(import.meta.dirname, '..', 'fixtures', 'indicators-reference.json'), 'utf8'),
) as Fixture;
const ford = fixture.ford_2012;
const TOL = 1e-9;

function expectSeries(actual: (number | null)[], expected: (number | null)[]): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!;
    const a = actual[i]!;
    if (e === null) {
      expect(a, `index ${i}: expected "not available"`).toBeNull();
    } else {
      expect(a, `index ${i}`).not.toBeNull();
      expect(Math.abs(a - e), `index ${i}: ${a} vs ${e}`).toBeLessThanOrEqual(TOL);
    }
  }
}

function run<T>(values: T[], update: (v: T) => number | null): (number | null)[] {
  return values.map(update);
}

describe('indicator math vs published and TA-Lib reference values (within 1e-9)', () => {
  it('RSI(10), Wilder: the values published by ta-lib-python, at both scales', () => {
    const { input, period, expected, scales } = fixture.published.rsi10;
    for (const scale of scales) {
      const rsi = new Rsi(period);
      expectSeries(
        run(
          input.map((v) => v * scale),
          (v) => rsi.update(v),
        ),
        expected,
      );
    }
  });

  it('EMA(3) with TA-Lib seeding (first EMA = SMA of the first 3): the published values', () => {
    const { input, period, expected } = fixture.published.ema3;
    const ema = new Ema(period);
    expectSeries(
      run(input, (v) => ema.update(v)),
      expected,
    );
  });

  it('SMA(20), EMA(20), RSI(14) on ford_2012 closes match TA-Lib', () => {
    const sma = new Sma(20);
    const ema = new Ema(20);
    const rsi = new Rsi(14);
    expectSeries(
      run(ford.input.close, (v) => sma.update(v)),
      ford.sma20,
    );
    expectSeries(
      run(ford.input.close, (v) => ema.update(v)),
      ford.ema20,
    );
    expectSeries(
      run(ford.input.close, (v) => rsi.update(v)),
      ford.rsi14,
    );
  });

  it('MACD(12,26,9) on ford_2012 matches TA-Lib (line, signal, histogram)', () => {
    const macd = new Macd(12, 26, 9);
    const out = ford.input.close.map((v) => macd.update(v));
    expectSeries(
      out.map((o) => o?.macd ?? null),
      ford.macd,
    );
    expectSeries(
      out.map((o) => o?.signal ?? null),
      ford.macdSignal,
    );
    expectSeries(
      out.map((o) => o?.hist ?? null),
      ford.macdHist,
    );
  });

  it('Bollinger(20, 2) with population standard deviation on ford_2012 matches TA-Lib', () => {
    const bb = new Bollinger(20, 2);
    const out = ford.input.close.map((v) => bb.update(v));
    expectSeries(
      out.map((o) => o?.upper ?? null),
      ford.bbUpper,
    );
    expectSeries(
      out.map((o) => o?.middle ?? null),
      ford.bbMiddle,
    );
    expectSeries(
      out.map((o) => o?.lower ?? null),
      ford.bbLower,
    );
    // Population (divide by n), not sample: check one band by hand.
    const last20 = ford.input.close.slice(-20);
    const mean = last20.reduce((a, b) => a + b, 0) / 20;
    const sd = Math.sqrt(last20.reduce((a, b) => a + (b - mean) ** 2, 0) / 20);
    expect(out.at(-1)!.upper).toBeCloseTo(mean + 2 * sd, 9);
  });

  it('ATR(14), Wilder, on ford_2012 high/low/close matches TA-Lib', () => {
    const atr = new Atr(14);
    const { high, low, close } = ford.input;
    expectSeries(
      close.map((c, i) => atr.update({ high: high[i]!, low: low[i]!, close: c })),
      ford.atr14,
    );
  });

  it('VWAP(n) is Σ notional / Σ volume over the last n bars, exactly', () => {
    const vwap = new Vwap(3);
    const bar = (price: number, size: number) => ({
      volume: scaled(size),
      notional: scaled(price) * scaled(size),
    });
    expect(vwap.update(bar(10, 100))).toBeNull();
    expect(vwap.update(bar(11, 300))).toBeNull();
    expect(vwap.update(bar(12, 100))).toBeCloseTo((1000 + 3300 + 1200) / 500, 12);
    expect(vwap.update(bar(13, 0))).toBeCloseTo((3300 + 1200) / 400, 12);
    expect(vwap.update({ volume: 0n, notional: 0n })).toBe(12); // only the 12 × 100 bar has volume
    expect(vwap.update({ volume: 0n, notional: 0n })).toBeNull(); // no volume at all: not available
  });

  it('never yields NaN: flat prices give RSI 0 (as TA-Lib) and Bollinger width 0; infinities become null', () => {
    const rsi = new Rsi(3);
    const bb = new Bollinger(3, 2);
    const flat = [5, 5, 5, 5, 5].map((v) => [rsi.update(v), bb.update(v)] as const);
    expect(flat.at(-1)![0]).toBe(0);
    expect(flat.at(-1)![1]).toEqual({ upper: 5, middle: 5, lower: 5 });
    const sma = new Sma(2);
    sma.update(Number.MAX_VALUE);
    expect(sma.update(Number.MAX_VALUE)).toBeNull();
  });
});

describe('indicators of a bar from its window', () => {
  const P: IndicatorParams = {
    sma: 3,
    ema: 3,
    rsi: 2,
    macdFast: 2,
    macdSlow: 3,
    macdSignal: 2,
    bbPeriod: 3,
    bbStdDev: 2,
    atr: 2,
    vwap: 2,
  };
  const TF = 60_000_000_000n;
  const mk = (i: number, close: number): WindowBar => ({
    start: BigInt(i) * TF,
    high: close + 1,
    low: close - 1,
    close,
    volume: scaled(100),
    notional: scaled(close) * scaled(100),
  });

  it('marks too little history as warming_up with nulls (never NaN)', () => {
    const bars = [mk(0, 10), mk(1, 11)];
    const r = computeAt(bars, TF, TF, 50, 'carry', P);
    expect(r.status).toBe('warming_up');
    expect(r.values.sma).toBeNull();
    expect(r.values.vwap).toBeCloseTo(10.5, 12);
    expect(Object.values(r.values).some((v) => typeof v === 'number' && Number.isNaN(v))).toBe(false);
    expect(warmupBars(P)).toBe(4);
  });

  it('depends only on the window: more history before it changes nothing', () => {
    const series = Array.from({ length: 40 }, (_, i) => mk(i, 100 + Math.sin(i) * 5));
    const a = computeAt(series, 39n * TF, TF, 10, 'carry', P);
    const b = computeAt(series.slice(25), 39n * TF, TF, 10, 'carry', P);
    expect(a).toEqual(b);
    expect(a.status).toBe('ok');
    expect(a.bars).toBe(10);
  });

  it('a gap is filled with flat bars (carry) or restarts the series (reset)', () => {
    const bars = [mk(0, 10), mk(1, 11), mk(2, 12), mk(3, 13), /* 4, 5 missing */ mk(6, 16), mk(7, 17)];
    const carry = computeAt(bars, 7n * TF, TF, 8, 'carry', P);
    expect([carry.bars, carry.filled]).toEqual([6, 2]);
    // SMA(3) over closes 13 (carried), 16, 17.
    expect(carry.values.sma).toBeCloseTo((13 + 16 + 17) / 3, 12);
    const reset = computeAt(bars, 7n * TF, TF, 8, 'reset', P);
    expect([reset.bars, reset.filled, reset.status]).toEqual([2, 0, 'warming_up']);
    expect(reset.values.sma).toBeNull();
  });
});
