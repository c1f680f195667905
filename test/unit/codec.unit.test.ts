import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame, encodeRowsFrame, encodeTick, toTuple } from '../../shared/codec.ts';
import { DecodeError } from '../../shared/errors.ts';
import { TickSchema, type Tick } from '../../shared/model.ts';

const trade: Tick = TickSchema.parse({
  type: 'trade',
  source: 'feed-a',
  symbol: 'AAPL',
  ts: '1732182436123456789',
  seq: 7,
  venue: 'XNAS',
  price: 187.25,
  size: 300,
  side: 'buy',
});
const quote: Tick = TickSchema.parse({
  type: 'quote',
  source: 'feed-a',
  symbol: 'MSFT',
  ts: 1732182436123456790n,
  seq: 8,
  bidPrice: 411.1,
  bidSize: 100,
  askPrice: 411.12,
  askSize: 200,
});

function fieldsWith(d: unknown, n?: number): string[] {
  const payload = typeof d === 'string' ? d : JSON.stringify(d);
  const count = n ?? (Array.isArray(d) ? d.length : 1);
  return ['v', '1', 'n', String(count), 'd', payload];
}

describe('frame codec', () => {
  it('round-trips trades and quotes exactly', () => {
    const decoded = decodeFrame(encodeFrame([trade, quote]));
    expect(decoded.failures).toEqual([]);
    expect(decoded.ticks).toEqual([trade, quote]);
  });

  it('keeps nanosecond timestamps exact (beyond float precision)', () => {
    // 2^53 < ts: as a float these two would be equal.
    const a = { ...trade, ts: 9_007_199_254_740_993_123n };
    const b = { ...trade, ts: 9_007_199_254_740_993_124n, seq: 8 };
    const [da, db] = decodeFrame(encodeFrame([a, b])).ticks;
    expect(da!.ts).toBe(9_007_199_254_740_993_123n);
    expect(db!.ts).toBe(9_007_199_254_740_993_124n);
    expect(typeof da!.ts).toBe('bigint');
  });

  it('rejects an entry that is not a frame, naming the missing fields', () => {
    expect(() => decodeFrame(['foo', 'bar'])).toThrow(/missing field\(s\) v, n, d/);
    expect(() => decodeFrame(['foo', 'bar'])).toThrow(DecodeError);
  });

  it('rejects an unknown version, bad JSON, a non-array and a count mismatch', () => {
    expect(() => decodeFrame(['v', '2', 'n', '0', 'd', '[]'])).toThrow(/unsupported frame version "2"/);
    expect(() => decodeFrame(fieldsWith('[["t",', 1))).toThrow(/not valid JSON/);
    expect(() => decodeFrame(fieldsWith('{"a":1}', 1))).toThrow(/not a JSON array/);
    expect(() => decodeFrame(fieldsWith([], 3))).toThrow(/count mismatch: header says 3, payload has 0/);
  });

  it('reports a bad tick by index and field, and still decodes its neighbours', () => {
    const good = JSON.parse(encodeFrame([trade])[5]!)[0];
    const badPrice = ['t', 'feed-a', 'AAPL', '1732182436123456789', 9, '', -1, 100, ''];
    const badTs = ['q', 'feed-a', 'AAPL', '17321824361.5', 10, '', 1, 1, 2, 1];
    const unknown = ['x', 1];
    const out = decodeFrame(fieldsWith([good, badPrice, badTs, unknown]));
    expect(out.ticks).toEqual([trade]);
    expect(out.failures.map((f) => f.index)).toEqual([1, 2, 3]);
    expect(out.failures[0]!.reason).toMatch(/^tick 1: price: /);
    expect(out.failures[1]!.reason).toMatch(/^tick 2: ts: expected a nanosecond timestamp/);
    expect(out.failures[2]!.reason).toMatch(/unknown tuple kind "x"/);
    expect(JSON.parse(out.failures[0]!.raw)).toEqual(badPrice);
  });

  it('rejects tuples of the wrong length and non-integer sequence numbers', () => {
    const short = ['t', 'feed-a', 'AAPL', '1', 1, '', 1, 1];
    const fracSeq = ['t', 'feed-a', 'AAPL', '1', 1.5, '', 1, 1, ''];
    const out = decodeFrame(fieldsWith([short, fracSeq]));
    expect(out.ticks).toHaveLength(0);
    expect(out.failures[1]!.reason).toMatch(/seq/);
  });
});

describe('message model', () => {
  it('rejects unknown fields and names the problem', () => {
    const r = TickSchema.safeParse({ ...trade, ts: '1', extra: 1 });
    expect(r.success).toBe(false);
    expect(r.error?.issues).toEqual([
      expect.objectContaining({ code: 'unrecognized_keys', keys: ['extra'] }),
    ]);
    expect(r.error?.issues[0]?.message).toMatch(/"extra"/);
  });

  it('rejects timestamps that do not fit 19 digits', () => {
    expect(TickSchema.safeParse({ ...trade, ts: '12345678901234567890' }).success).toBe(false);
  });
});

describe('rows encoded one by one (feed workers)', () => {
  it('encodeTick writes exactly what JSON.stringify writes for the tuple, escapes and odd numbers included', () => {
    const strings = [
      'BTC-USD',
      'a"b',
      'back\\slash',
      'tab\there',
      '\u0001',
      'é€😀',
      '\ud800',
      'x\udfff',
      '',
      '/',
    ];
    const numbers = [0, -0, 1, 0.1, 1e21, 1e-7, 123456789.123, 5e-324, Number.MAX_VALUE, NaN, Infinity];
    let rand = 99;
    const next = () => (rand = (rand * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
    for (let i = 0; i < 5000; i++) {
      const common = {
        source: pick(strings),
        symbol: pick(strings),
        ts: BigInt(Math.floor(next() * 2 ** 53)) * 1000n + BigInt(i),
        seq: Math.floor(next() * 2 ** 40),
        venue: pick(strings),
      };
      // Built as objects, not through the model: the encoder must match JSON.stringify on anything.
      const t = (
        i % 2 === 0
          ? {
              type: 'trade',
              ...common,
              price: pick(numbers),
              size: pick(numbers),
              side: pick(['buy', '', 'x"']),
            }
          : {
              type: 'quote',
              ...common,
              bidPrice: pick(numbers),
              bidSize: pick(numbers),
              askPrice: pick(numbers),
              askSize: pick(numbers),
            }
      ) as Tick;
      expect(encodeTick(t)).toBe(JSON.stringify(toTuple(t)));
    }
  });

  it('a frame of rows is the frame of the ticks', () => {
    expect(encodeRowsFrame([trade, quote].map(encodeTick))).toEqual(encodeFrame([trade, quote]));
    expect(encodeRowsFrame([])).toEqual(encodeFrame([]));
  });
});

describe('codec fast path agrees with the zod tuple schemas', () => {
  const pool: unknown[] = [
    -1,
    0,
    -0,
    1,
    1.5,
    Infinity,
    -Infinity,
    2 ** 53,
    2 ** 53 - 1,
    null,
    true,
    '',
    'x',
    'x'.repeat(64),
    'x'.repeat(65),
    '123',
    '1.5',
    '-5',
    '12345678901234567890',
    '0000000000000000001',
    'buy',
    'sell',
    'hold',
    [],
    {},
  ];
  it('never accepts a tuple the schema rejects, and agrees on the value when both accept', async () => {
    const { TradeTuple, QuoteTuple, fastTrade, fastQuote } = await import('../../shared/codec.ts');
    const base = JSON.parse(encodeFrame([trade, quote])[5]!) as unknown[][];
    let rand = 12345;
    const next = () => (rand = (rand * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    let compared = 0;
    for (let i = 0; i < 20_000; i++) {
      const row = [...base[i % 2]!];
      const mutations = 1 + Math.floor(next() * 2);
      for (let m = 0; m < mutations; m++)
        row[1 + Math.floor(next() * (row.length - 1))] = pool[Math.floor(next() * pool.length)];
      if (next() < 0.05) row.pop();
      // Every pool value is one JSON.parse can produce (1e400 parses to Infinity, -0 to -0).
      const roundTripped = row;
      const fast = i % 2 === 0 ? fastTrade(roundTripped) : fastQuote(roundTripped);
      const strict = (i % 2 === 0 ? TradeTuple : QuoteTuple).safeParse(roundTripped);
      if (fast !== undefined) {
        expect(strict.success, JSON.stringify(roundTripped)).toBe(true);
        expect(fast).toEqual(strict.data);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(1000);
  });

  it('isValidTick (ticks built in process) never accepts a tick the model rejects', async () => {
    const { isValidTick } = await import('../../shared/codec.ts');
    const { TickSchema } = await import('../../shared/model.ts');
    let rand = 777;
    const next = () => (rand = (rand * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const keys = (t: Tick) => Object.keys(t).filter((k) => k !== 'type');
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const t: Record<string, unknown> = { ...(i % 2 === 0 ? trade : quote) };
      const k = keys(t as Tick);
      const mutations = Math.floor(next() * 3);
      for (let m = 0; m < mutations; m++) {
        const field = k[Math.floor(next() * k.length)]!;
        const v = pool[Math.floor(next() * pool.length)];
        // ts travels as a bigint in process: mutate it as one when the pool value is a digit string.
        t[field] = field === 'ts' && typeof v === 'string' && /^\d+$/.test(v) ? BigInt(v) : v;
      }
      if (isValidTick(t as unknown as Tick)) {
        expect(TickSchema.safeParse(t).success, String(i)).toBe(true);
        accepted++;
      }
    }
    expect(accepted).toBeGreaterThan(1000);
  });
});
