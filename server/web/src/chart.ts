import {
  CandlestickSeries,
  HistogramSeries,
  LineSeries,
  createChart,
  type IChartApi,
  type ISeriesApi,
  type LineData,
  type UTCTimestamp,
} from 'lightweight-charts';
import { Bollinger, Ema, Macd, Rsi, Sma } from '../../../consumers/indicators/math.ts';
import { getJson } from './api.ts';

export interface Bar {
  symbol: string;
  tf: string;
  start: string;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  closed: boolean;
}

const UP = '#26a69a';
const DOWN = '#ef5350';

/**
 * Candlesticks with volume (lightweight-charts v5), SMA/EMA/Bollinger over the price and RSI and MACD panes
 * below. The overlays are computed from the bars shown with the pipeline's own indicator math
 * (consumers/indicators/math.ts, TA-Lib definitions, default periods); the legend shows the values the
 * indicator jobs stored (GET /v1/indicators). Pushed bars update the chart in place.
 */
export class Chart {
  readonly chart: IChartApi;
  private readonly candles: ISeriesApi<'Candlestick'>;
  private readonly volume: ISeriesApi<'Histogram'>;
  private readonly lines: Record<string, ISeriesApi<'Line'>>;
  private readonly macdHist: ISeriesApi<'Histogram'>;
  private bars: Bar[] = [];
  symbol = '';
  tf = '';

  constructor(
    el: HTMLElement,
    private readonly indicatorTimeframes: readonly string[],
  ) {
    this.chart = createChart(el, {
      autoSize: true,
      layout: {
        background: { color: '#161c23' },
        textColor: '#d6dde4',
        panes: { separatorColor: '#242c35' },
      },
      grid: { vertLines: { color: '#1d242c' }, horzLines: { color: '#1d242c' } },
      timeScale: { timeVisible: true, secondsVisible: true },
    });
    this.candles = this.chart.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      wickUpColor: UP,
      wickDownColor: DOWN,
      borderVisible: false,
    });
    this.volume = this.chart.addSeries(HistogramSeries, {
      priceScaleId: 'volume',
      priceFormat: { type: 'volume' },
    });
    this.chart.priceScale('volume').applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    const line = (color: string, pane = 0, width: 1 | 2 = 1) =>
      this.chart.addSeries(
        LineSeries,
        { color, lineWidth: width, priceLineVisible: false, lastValueVisible: false },
        pane,
      );
    this.lines = {
      sma: line('#f0b90b'),
      ema: line('#42a5f5'),
      bbUpper: line('#8e99a6'),
      bbLower: line('#8e99a6'),
      rsi: line('#ab47bc', 1, 2),
      macd: line('#42a5f5', 2),
      signal: line('#ff9800', 2),
    };
    this.macdHist = this.chart.addSeries(
      HistogramSeries,
      { priceLineVisible: false, lastValueVisible: false },
      2,
    );
    const panes = this.chart.panes();
    panes[0]?.setStretchFactor(3);
    panes[1]?.setStretchFactor(1);
    panes[2]?.setStretchFactor(1);
  }

  /** Load a symbol and timeframe from the API. */
  async load(symbol: string, tf: string): Promise<void> {
    this.symbol = symbol;
    this.tf = tf;
    const r = await getJson<{ bars: Bar[] }>(`/v1/bars/${encodeURIComponent(symbol)}?tf=${tf}&limit=300`);
    this.bars = r.bars;
    this.render(true);
    this.chart.timeScale().fitContent();
    await this.legend();
  }

  /** A pushed bar: replaces the bar with its start or extends the series. */
  push(bar: Bar): void {
    if (bar.symbol !== this.symbol || bar.tf !== this.tf) return;
    const last = this.bars[this.bars.length - 1];
    if (last !== undefined && BigInt(bar.start) < BigInt(last.start)) return;
    if (last !== undefined && last.start === bar.start) this.bars[this.bars.length - 1] = bar;
    else this.bars.push(bar);
    if (this.bars.length > 1000) this.bars.shift();
    this.candles.update(candle(bar));
    this.volume.update(vol(bar));
    this.render(false);
  }

  get barCount(): number {
    return this.bars.length;
  }

  async legend(values?: Record<string, number | null>): Promise<void> {
    let v = values;
    if (v === undefined && this.indicatorTimeframes.includes(this.tf)) {
      try {
        v = (
          await getJson<{ values: Record<string, number | null> }>(
            `/v1/indicators/${encodeURIComponent(this.symbol)}?tf=${this.tf}`,
          )
        ).values;
      } catch {
        v = undefined;
      }
    }
    const fmt = (x: number | null | undefined) => (x === null || x === undefined ? '-' : x.toFixed(2));
    document.getElementById('legend')!.textContent =
      v === undefined
        ? `no stored indicators for ${this.tf} (overlays computed here)`
        : `stored: SMA ${fmt(v.sma)} · EMA ${fmt(v.ema)} · RSI ${fmt(v.rsi)} · MACD ${fmt(v.macd)}`;
  }

  private render(all: boolean): void {
    if (all) {
      this.candles.setData(this.bars.map(candle));
      this.volume.setData(this.bars.map(vol));
    }
    const sma = new Sma(20);
    const ema = new Ema(20);
    const bb = new Bollinger(20, 2);
    const rsi = new Rsi(14);
    const macd = new Macd(12, 26, 9);
    const out: Record<string, LineData[]> = {
      sma: [],
      ema: [],
      bbUpper: [],
      bbLower: [],
      rsi: [],
      macd: [],
      signal: [],
    };
    const hist: { time: UTCTimestamp; value: number; color: string }[] = [];
    for (const b of this.bars) {
      const time = t(b);
      const push = (k: string, v: number | null) => {
        if (v !== null) out[k]!.push({ time, value: v });
      };
      push('sma', sma.update(b.close));
      push('ema', ema.update(b.close));
      const band = bb.update(b.close);
      push('bbUpper', band?.upper ?? null);
      push('bbLower', band?.lower ?? null);
      push('rsi', rsi.update(b.close));
      const m = macd.update(b.close);
      if (m !== null) {
        push('macd', m.macd);
        push('signal', m.signal);
        hist.push({ time, value: m.hist, color: m.hist >= 0 ? UP : DOWN });
      }
    }
    for (const [k, s] of Object.entries(this.lines)) s.setData(out[k]!);
    this.macdHist.setData(hist);
  }
}

function t(b: Bar): UTCTimestamp {
  return Number(BigInt(b.start) / 1_000_000_000n) as UTCTimestamp;
}

function candle(b: Bar) {
  return { time: t(b), open: b.open, high: b.high, low: b.low, close: b.close };
}

function vol(b: Bar) {
  return {
    time: t(b),
    value: b.volume,
    color: b.close >= b.open ? 'rgba(38,166,154,0.5)' : 'rgba(239,83,80,0.5)',
  };
}
