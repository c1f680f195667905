import { describe, expect, it } from 'vitest';
import type { Trade } from '../../shared/model.ts';
import {
  BarBuilder,
  bucketStart,
  buildBars,
  formatScaled,
  mergeAll,
  parseScaled,
  scaled,
  timeframes,
  vwap,
  type Bar,
  type BarEvent,
} from '../../consumers/bars/aggregate.ts';
import { mulberry32 } from '../../producers/synthetic.ts';

// 2023-11-14T22:13:00Z: a whole minute, so 1s and 1m buckets both start here.
const T0 = 1_699_999_980_000_000_000n;
const MS = 1_000_000n;

function trade(ms: number, price: number, size: number, seq: number, symbol = 'AAA', source = 'S'): Trade {
  return { type: 'trade', source, symbol, ts: T0 + BigInt(ms) * MS, seq, venue: '', price, size, side: '' };
}

/** What a person reads off a bar: prices, sums as decimals, counts. */
function view(b: Bar) {
  return {
    symbol: b.symbol,
    tf: b.tf.name,
    startMs: Number((b.start - T0) / MS),
    open: b.open,
    high: b.high,
    low: b.low,
    close: b.close,
    volume: formatScaled(b.volume, 9),
    notional: formatScaled(b.notional, 18),
    trades: b.trades,
    late: b.late,
  };
}

const TF_1S_1M = timeframes(['1m', '1s']);
const OPTS = { timeframes: TF_1S_1M, allowedLatenessNs: 500n * MS };

// Arrival order. seq is the feed's arrival sequence; #3 is out of order within the lateness, #6 is late.
const SEQUENCE: Trade[] = [
  trade(100, 10.0, 100, 1),
  trade(900, 10.5, 200, 2),
  trade(300, 9.75, 50, 3), // 0.3 s < clock 0.9 s, but the watermark is 0.4 s: still on time
  trade(1200, 10.25, 100, 4), // clock 1.2 s, watermark 0.7 s: second 0 stays open
  trade(1600, 10.4, 300, 5), // watermark 1.1 s ≥ 1.0 s: second 0 closes
  trade(950, 11.0, 10, 6), // second 0 is closed: late, amends it (new high and a later close by ts)
  trade(2700, 10.1, 100, 7), // watermark 2.2 s: second 1 closes
  trade(2700, 10.2, 100, 8), // same ts as #7, higher seq: becomes the close
];

describe('bar aggregation (pure)', () => {
  it('bucket math is exact on nanoseconds at the edges', () => {
    const s = 1_000_000_000n;
    expect(bucketStart(T0, s)).toBe(T0);
    expect(bucketStart(T0 + s - 1n, s)).toBe(T0);
    expect(bucketStart(T0 + s, s)).toBe(T0 + s);
    // 19-digit timestamps: a float64 would have merged these two.
    expect(bucketStart(1_699_999_999_999_999_999n, s)).toBe(1_699_999_999_000_000_000n);
    expect(bucketStart(1_700_000_000_000_000_000n, s)).toBe(1_700_000_000_000_000_000n);
    expect(bucketStart(T0 + 59_999_999_999n, 60n * s)).toBe(T0);
  });

  it('converts prices and sizes to exact fixed point deterministically', () => {
    expect(scaled(0.1)).toBe(100_000_000n);
    expect(scaled(10.25)).toBe(10_250_000_000n);
    expect(scaled(123.456789123)).toBe(123_456_789_123n);
    expect(scaled(300)).toBe(300_000_000_000n);
    expect(scaled(5_000_000.25)).toBe(5_000_000_250_000_000n);
    expect(formatScaled(12_500_000_000n, 9)).toBe('12.500000000');
    expect(formatScaled(5n, 9)).toBe('0.000000005');
    expect(parseScaled('12.5', 9)).toBe(12_500_000_000n);
    expect(parseScaled('300', 9)).toBe(300_000_000_000n);
  });

  it('emits closes by the watermark and amendments for late trades, as computed by hand', () => {
    const b = new BarBuilder(OPTS);
    const log: { kind: string; bar: ReturnType<typeof view> }[] = [];
    for (const t of SEQUENCE) {
      for (const e of b.add(t)) log.push({ kind: e.kind, bar: view(e.bar) });
    }
    expect(log).toEqual([
      {
        kind: 'closed',
        bar: {
          symbol: 'AAA',
          tf: '1s',
          startMs: 0,
          open: 10.0,
          high: 10.5,
          low: 9.75,
          close: 10.5,
          volume: '350.000000000',
          notional: '3587.500000000000000000', // 10·100 + 10.5·200 + 9.75·50
          trades: 3,
          late: 0,
        },
      },
      {
        kind: 'amended',
        bar: {
          symbol: 'AAA',
          tf: '1s',
          startMs: 0,
          open: 11.0,
          high: 11.0,
          low: 11.0,
          close: 11.0,
          volume: '10.000000000',
          notional: '110.000000000000000000',
          trades: 1,
          late: 1,
        },
      },
      {
        kind: 'closed',
        bar: {
          symbol: 'AAA',
          tf: '1s',
          startMs: 1000,
          open: 10.25,
          high: 10.4,
          low: 10.25,
          close: 10.4,
          volume: '400.000000000',
          notional: '4145.000000000000000000', // 10.25·100 + 10.4·300
          trades: 2,
          late: 0,
        },
      },
    ]);
    expect(b.stats).toEqual({ trades: 8, lateTrades: 1, closed: 2, amendments: 1 });
    // The minute is still open (watermark 2.2 s) and took the late trade in as an ordinary one.
    expect(b.openBars().map(view)).toEqual([
      {
        symbol: 'AAA',
        tf: '1s',
        startMs: 2000,
        open: 10.1,
        high: 10.2,
        low: 10.1,
        close: 10.2,
        volume: '200.000000000',
        notional: '2030.000000000000000000',
        trades: 2,
        late: 0,
      },
      {
        symbol: 'AAA',
        tf: '1m',
        startMs: 0,
        open: 10.0,
        high: 11.0,
        low: 9.75,
        close: 10.2,
        volume: '960.000000000',
        notional: '9872.500000000000000000',
        trades: 8,
        late: 0,
      },
    ]);
  });

  it('the final bars (closed bar merged with its amendment) equal the hand-computed bars', () => {
    const bars = buildBars(SEQUENCE, OPTS).map(view);
    expect(
      bars.map((b) => [b.tf, b.startMs, b.open, b.high, b.low, b.close, b.volume, b.trades, b.late]),
    ).toEqual([
      ['1s', 0, 10.0, 11.0, 9.75, 11.0, '360.000000000', 4, 1],
      ['1s', 1000, 10.25, 10.4, 10.25, 10.4, '400.000000000', 2, 0],
      ['1s', 2000, 10.1, 10.2, 10.1, 10.2, '200.000000000', 2, 0],
      ['1m', 0, 10.0, 11.0, 9.75, 10.2, '960.000000000', 8, 0],
    ]);
    const minute = buildBars(SEQUENCE, OPTS).find((b) => b.tf.name === '1m')!;
    expect(vwap(minute)).toBeCloseTo(9872.5 / 960, 12);
    const second0 = buildBars(SEQUENCE, OPTS)[0]!;
    expect(vwap(second0)).toBeCloseTo(3697.5 / 360, 12);
  });

  it('gives the same bars (but no late trades) when the trades come in time order', () => {
    const ordered = [...SEQUENCE].sort((a, b) => (a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : a.seq - b.seq));
    const strip = (bars: Bar[]) => bars.map((b) => ({ ...view(b), late: 0 }));
    expect(strip(buildBars(ordered, OPTS))).toEqual(strip(buildBars(SEQUENCE, OPTS)));
    expect(buildBars(ordered, OPTS).every((b) => b.late === 0)).toBe(true);
  });

  it('is order independent: any shuffle and any split into partial bars merges to the same bars', () => {
    const rand = mulberry32(7);
    const trades: Trade[] = [];
    for (let i = 0; i < 3000; i++) {
      const ms = Math.floor(rand() * 180_000);
      trades.push(
        trade(
          ms,
          Math.round((50 + rand() * 10) * 100) / 100,
          1 + Math.floor(rand() * 5) * 100,
          i,
          rand() < 0.5 ? 'AAA' : 'BBB',
        ),
      );
    }
    const all = timeframes(['1s', '1m', '5m', '1h']);
    const reference = buildBars(trades, { timeframes: all, allowedLatenessNs: 0n }).map((b) => ({
      ...view(b),
      late: 0,
    }));
    for (let round = 0; round < 3; round++) {
      const shuffled = [...trades];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      // Split into chunks built separately, as flushes of the live sink are, then merged as the store does.
      const partials: Bar[] = [];
      for (let i = 0; i < shuffled.length; i += 700) {
        const events: BarEvent[] = [];
        const b = new BarBuilder({ timeframes: all, allowedLatenessNs: 2000n * MS });
        for (const t of shuffled.slice(i, i + 700)) b.add(t, events);
        partials.push(...events.map((e) => e.bar), ...b.openBars());
      }
      const merged = [...mergeAll(partials).values()].map((b) => ({ ...view(b), late: 0 }));
      merged.sort((a, b) => (a.symbol !== b.symbol ? (a.symbol < b.symbol ? -1 : 1) : 0));
      expect(sortViews(merged)).toEqual(sortViews(reference));
    }
  });

  it('a shard watermark closes a quiet symbol when another symbol of its shard moves on', () => {
    const byShard = { timeframes: timeframes(['1s']), allowedLatenessNs: 0n, watermarkKey: () => 'shard:0' };
    const b = new BarBuilder(byShard);
    expect(b.add(trade(100, 10, 1, 1, 'QUIET'))).toEqual([]);
    const events = b.add(trade(1500, 20, 1, 2, 'BUSY'));
    expect(events.map((e) => [e.kind, e.bar.symbol, Number((e.bar.start - T0) / MS)])).toEqual([
      ['closed', 'QUIET', 0],
    ]);
    // By symbol, the quiet symbol's bar stays open.
    const own = new BarBuilder({ ...byShard, watermarkKey: (s) => s });
    own.add(trade(100, 10, 1, 1, 'QUIET'));
    expect(own.add(trade(1500, 20, 1, 2, 'BUSY'))).toEqual([]);
  });

  it('ignores quotes and resumes a seeded clock', () => {
    const b = new BarBuilder(OPTS);
    b.seedClock('AAA', T0 + 5000n * MS);
    const events = b.add(trade(100, 10, 1, 1));
    // Second 0 is behind the resumed watermark (4.5 s); the minute is not.
    expect(events.map((e) => [e.kind, e.bar.tf.name])).toEqual([['amended', '1s']]);
    expect(b.stats.lateTrades).toBe(1);
    expect(
      b.add({
        type: 'quote',
        source: 'S',
        symbol: 'AAA',
        ts: T0,
        seq: 9,
        venue: '',
        bidPrice: 1,
        bidSize: 1,
        askPrice: 2,
        askSize: 1,
      }),
    ).toEqual([]);
  });
});

function sortViews<T extends { symbol: string; tf: string; startMs: number }>(v: T[]): T[] {
  return [...v].sort((a, b) =>
    a.symbol !== b.symbol
      ? a.symbol < b.symbol
        ? -1
        : 1
      : a.tf !== b.tf
        ? a.tf < b.tf
          ? -1
          : 1
        : a.startMs - b.startMs,
  );
}
