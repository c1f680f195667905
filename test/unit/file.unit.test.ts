import { describe, expect, it } from 'vitest';
import {
  decodeRow,
  DEFAULT_COLUMNS,
  FIELDS,
  paced,
  parseColumnMap,
  RowError,
  sourceNameFromPath,
  splitCsv,
  type DecodeContext,
} from '../../producers/file/index.ts';
import { mulberry32 } from '../../producers/synthetic.ts';
import { ConfigError } from '../../shared/errors.ts';
import { TickSchema, type Tick } from '../../shared/model.ts';
import { parseTimestamp } from '../../shared/time.ts';

const IDX = Int32Array.from(FIELDS, (_, i) => i);
const ctx = (over: Partial<DecodeContext> = {}): DecodeContext => ({
  source: 'file',
  tsUnit: 'ns',
  validation: 'fast',
  ...over,
});

/** Cells in FIELDS order. */
function row(values: Partial<Record<(typeof FIELDS)[number], string>>): string[] {
  return FIELDS.map((f) => values[f] ?? '');
}

const TRADE = {
  type: 'trade',
  symbol: 'AAPL',
  ts: '1709303400123456789',
  venue: 'XNAS',
  price: '179.66',
  size: '100',
  side: 'buy',
};
const QUOTE = {
  type: 'quote',
  symbol: 'MSFT',
  ts: '1709303400123456790',
  bidPrice: '415.38',
  bidSize: '100',
  askPrice: '415.42',
  askSize: '400',
};

describe('splitCsv', () => {
  it('splits plain records, keeping empty fields', () => {
    expect(splitCsv('trade,AAPL,,1.5,')).toEqual(['trade', 'AAPL', '', '1.5', '']);
    expect(splitCsv('')).toEqual(['']);
  });

  it('handles quoted fields with delimiters, escaped quotes and empty quotes', () => {
    expect(splitCsv('"a,b",c')).toEqual(['a,b', 'c']);
    expect(splitCsv('x,"say ""hi""",y')).toEqual(['x', 'say "hi"', 'y']);
    expect(splitCsv('"",a,""')).toEqual(['', 'a', '']);
    expect(splitCsv('"XNAS"')).toEqual(['XNAS']);
  });

  it('reports an open quoted field (the record goes on) and a line break inside quotes', () => {
    expect(splitCsv('a,"first line')).toBeNull();
    expect(splitCsv('a,"first line\nsecond line",b')).toEqual(['a', 'first line\nsecond line', 'b']);
  });

  it('rejects text after a closing quote and stray quotes', () => {
    expect(splitCsv('"ab"c,d')).toMatch(/after the closing quote of field 1/);
    expect(splitCsv('ab,c"d,e')).toMatch(/stray quote in unquoted field 2/);
  });

  it('uses another delimiter', () => {
    expect(splitCsv('a\t"b\tc"\td', '\t')).toEqual(['a', 'b\tc', 'd']);
  });
});

describe('parseTimestamp', () => {
  const base = BigInt(Date.UTC(2024, 2, 1, 14, 30, 0)) * 1_000_000n;

  it('takes integer nanoseconds exactly, all 19 digits', () => {
    expect(parseTimestamp('1709303400123456789')).toBe(1709303400123456789n);
    expect(parseTimestamp('0')).toBe(0n);
    expect(parseTimestamp('9223372036854775807')).toBe(9_223_372_036_854_775_807n);
    expect(parseTimestamp('9223372036854775808')).toBe('out of range');
  });

  it('takes ISO-8601 exactly to the nanosecond', () => {
    expect(parseTimestamp('2024-03-01T14:30:00.123456789Z')).toBe(base + 123_456_789n);
    expect(parseTimestamp('2024-03-01T14:30:00.000000001Z')).toBe(base + 1n);
    expect(parseTimestamp('2024-03-01T14:30:00.5Z')).toBe(base + 500_000_000n);
    expect(parseTimestamp('2024-03-01T14:30:00Z')).toBe(base);
    expect(parseTimestamp('2024-03-01 14:30:00.123456')).toBe(base + 123_456_000n);
    expect(parseTimestamp('2024-03-01T15:30:00.000000007+01:00')).toBe(base + 7n);
    expect(parseTimestamp('2024-03-01T09:30:00-0500')).toBe(base);
    expect(parseTimestamp('2024-03-01T16:30:00+02')).toBe(base);
    // The cached day must not leak into another date.
    expect(parseTimestamp('2024-03-02T14:30:00Z')).toBe(base + 86_400_000_000_000n);
    expect(parseTimestamp('2024-02-29T00:00:00Z')).toBe(BigInt(Date.UTC(2024, 1, 29)) * 1_000_000n);
  });

  it('scales numeric timestamps by unit without a float', () => {
    expect(parseTimestamp('1709303400', 's')).toBe(base);
    expect(parseTimestamp('1709303400.123456789', 's')).toBe(base + 123_456_789n);
    expect(parseTimestamp('1709303400123.456789', 'ms')).toBe(base + 123_456_789n);
    expect(parseTimestamp('1709303400123456.789', 'us')).toBe(base + 123_456_789n);
    expect(parseTimestamp('1709303400123456789', 'ns')).toBe(base + 123_456_789n);
  });

  it('says why a timestamp is refused', () => {
    expect(parseTimestamp('2024-03-01T14:30:00.1234567891Z')).toMatch(/more than 9 fractional digits/);
    expect(parseTimestamp('1709303400.1234567891', 's')).toMatch(/finer than a nanosecond/);
    expect(parseTimestamp('1709303400.5', 'ns')).toMatch(/fraction of a nanosecond/);
    expect(parseTimestamp('2024-13-01T00:00:00Z')).toBe('month out of range');
    expect(parseTimestamp('2023-02-29T00:00:00Z')).toBe('day out of range');
    expect(parseTimestamp('2024-03-01T24:00:00Z')).toBe('time of day out of range');
    expect(parseTimestamp('2024-03-01T14:30:61Z')).toBe('time of day out of range');
    expect(parseTimestamp('1969-12-31T23:59:59Z')).toBe('before 1970');
    expect(parseTimestamp('2024-03-01T14:30:00Q')).toMatch(/ISO-8601/);
    expect(parseTimestamp('2024-03-01')).toMatch(/ISO-8601/);
    expect(parseTimestamp('-5')).toMatch(/expected digits/);
    expect(parseTimestamp('1.7e18')).toMatch(/expected digits/);
    expect(parseTimestamp('99999999999999999999')).toBe('out of range');
    expect(parseTimestamp('')).toBe('missing');
  });
});

describe('column mapping', () => {
  it('parses --map by model field or default column name', () => {
    expect(parseColumnMap('price=px, symbol=ticker,bid_price=bp,askSize=as')).toEqual({
      price: 'px',
      symbol: 'ticker',
      bidPrice: 'bp',
      askSize: 'as',
    });
  });

  it('rejects unknown fields and malformed pairs with the flag named', () => {
    expect(() => parseColumnMap('prize=px')).toThrow(ConfigError);
    expect(() => parseColumnMap('prize=px')).toThrow(/--map: unknown field "prize"/);
    expect(() => parseColumnMap('price')).toThrow(/expected field=column/);
    expect(() => parseColumnMap('price=')).toThrow(/expected field=column/);
  });

  it('documents a default column for every field', () => {
    expect(Object.keys(DEFAULT_COLUMNS).sort()).toEqual([...FIELDS].sort());
  });

  it('derives the source name from the file name', () => {
    expect(sourceNameFromPath('/data/ticks-2024-03-01.csv.gz')).toBe('ticks-2024-03-01');
    expect(sourceNameFromPath('feed.ndjson')).toBe('feed');
    expect(sourceNameFromPath('noext')).toBe('noext');
  });
});

describe('decodeRow', () => {
  it('decodes a trade and a quote; seq defaults to the line number, source to the file', () => {
    const t = decodeRow(row(TRADE), IDX, 42, ctx());
    expect(t).toEqual({
      type: 'trade',
      source: 'file',
      symbol: 'AAPL',
      ts: 1709303400123456789n,
      seq: 42,
      venue: 'XNAS',
      price: 179.66,
      size: 100,
      side: 'buy',
    });
    const q = decodeRow(row({ ...QUOTE, source: 'feed-b', seq: '7' }), IDX, 3, ctx());
    expect(q).toMatchObject({
      type: 'quote',
      source: 'feed-b',
      seq: 7,
      bidPrice: 415.38,
      askSize: 400,
      venue: '',
    });
  });

  it('infers the type from the filled columns when the type is empty', () => {
    expect(decodeRow(row({ ...TRADE, type: '' }), IDX, 1, ctx())).toMatchObject({ type: 'trade' });
    expect(decodeRow(row({ ...QUOTE, type: '' }), IDX, 1, ctx())).toMatchObject({ type: 'quote' });
    const none = decodeRow(row({ symbol: 'X', ts: '1' }), IDX, 1, ctx()) as RowError;
    expect(none.field).toBe(FIELDS.indexOf('type'));
    expect(none.message).toMatch(/missing/);
  });

  it('normalises type and side spellings', () => {
    expect(decodeRow(row({ ...TRADE, type: 'T', side: 'S' }), IDX, 1, ctx())).toMatchObject({
      type: 'trade',
      side: 'sell',
    });
    expect(decodeRow(row({ ...TRADE, side: 'BUY' }), IDX, 1, ctx())).toMatchObject({ side: 'buy' });
  });

  it('names the field at fault and keeps the value', () => {
    const cases: [Record<string, string>, string, RegExp][] = [
      [{ ...TRADE, price: '-1' }, 'price', /positive/],
      [{ ...TRADE, price: '1.2.3' }, 'price', /not a number/],
      [{ ...TRADE, size: '' }, 'size', /missing/],
      [{ ...TRADE, side: 'hold' }, 'side', /buy, sell/],
      [{ ...TRADE, symbol: '' }, 'symbol', /missing/],
      [{ ...TRADE, symbol: 'X'.repeat(65) }, 'symbol', /1 to 64/],
      [{ ...TRADE, ts: 'yesterday' }, 'ts', /expected digits/],
      [{ ...TRADE, seq: '1.5' }, 'seq', /integer/],
      [{ ...TRADE, type: 'bar' }, 'type', /trade or quote/],
      [{ ...QUOTE, askPrice: '0' }, 'askPrice', /positive/],
      [{ ...TRADE, price: '1e308' }, 'price', /out of range: must be from 1e-9 to 1000000000000000/],
      [{ ...TRADE, size: '1e21' }, 'size', /out of range: must be 0 or from 1e-9 to 1000000000000000/],
      [{ ...TRADE, symbol: 'AA\u001b[31mPL' }, 'symbol', /printable characters only/],
      [{ ...TRADE, venue: 'X\u202eY' }, 'venue', /printable characters only/],
      [{ ...TRADE, ts: '9223372036854775808' }, 'ts', /out of range/],
    ];
    for (const [values, field, message] of cases) {
      const r = decodeRow(row(values), IDX, 1, ctx());
      expect(r, field).toBeInstanceOf(RowError);
      expect(FIELDS[(r as RowError).field], JSON.stringify(values)).toBe(field);
      expect((r as RowError).message).toMatch(message);
    }
  });

  it('hand validation and TickSchema agree on valid and broken rows', () => {
    const rand = mulberry32(7);
    const odd = [
      '',
      '-1',
      '0',
      '-0',
      '1.5',
      'abc',
      'NaN',
      'Infinity',
      '1e400',
      '1e3',
      '0x10',
      ' 5',
      '5 ',
      'X'.repeat(64),
      'X'.repeat(65),
      '9007199254740991',
      '9007199254740992',
      'buy',
      'SELL',
      'b',
      'hold',
      'trade',
      'quote',
      'q',
      '123456789012345678',
      '99999999999999999999',
      '2024-03-01T14:30:00.1Z',
      '0.000000001',
      '12345678901234567.5',
      '1e15',
      '1e21',
      '0.0000000001',
      'A\u001b[0mB',
      'A\u202eB',
      '9223372036854775808',
    ];
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 4000; i++) {
      const base: Record<string, string> = { ...(rand() < 0.5 ? TRADE : QUOTE), seq: String(i) };
      const mutations = Math.floor(rand() * 3);
      for (let m = 0; m < mutations; m++) {
        base[FIELDS[Math.floor(rand() * FIELDS.length)]!] = odd[Math.floor(rand() * odd.length)]!;
      }
      const fast = decodeRow(row(base), IDX, i + 1, ctx());
      const zod = decodeRow(row(base), IDX, i + 1, ctx({ validation: 'zod' }));
      const label = JSON.stringify(base);
      if (fast instanceof RowError) {
        expect(zod, label).toBeInstanceOf(RowError);
        expect((zod as RowError).field, label).toBe(fast.field);
        refused++;
      } else {
        expect(zod, label).not.toBeInstanceOf(RowError);
        expect(fast, label).toEqual(zod);
        expect(TickSchema.parse(fast)).toEqual(fast);
        accepted++;
      }
    }
    // Both outcomes are well represented, so the agreement means something.
    expect(accepted).toBeGreaterThan(500);
    expect(refused).toBeGreaterThan(500);
  });
});

describe('paced', () => {
  const tick = (ms: number): Tick =>
    TickSchema.parse({
      ...TRADE,
      source: 's',
      seq: ms,
      ts: BigInt(ms) * 1_000_000n + 1_700_000_000_000_000_000n,
      price: 1,
      size: 1,
    });

  async function* batches(...groups: number[][]): AsyncGenerator<Tick[]> {
    for (const g of groups) yield g.map(tick);
  }

  it('releases ticks at their original spacing divided by the speed (virtual clock)', async () => {
    let now = 1000;
    const released: [number, number[]][] = [];
    const run = paced(batches([0, 0, 100], [150, 1000, 900]), {
      speed: 2,
      clock: () => now,
      wait: async (ms) => {
        now += ms;
      },
    });
    for await (const b of run) released.push([now - 1000, b.map((t) => Number(t.seq))]);
    expect(released).toEqual([
      [0, [0, 0]],
      [50, [100]],
      [75, [150]],
      // 900 is earlier than 1000 in exchange time: it is late and goes at once.
      [500, [1000, 900]],
    ]);
  });

  it('stops waiting when the signal fires', async () => {
    const abort = new AbortController();
    let now = 0;
    const out: number[] = [];
    const run = paced(batches([0, 10_000]), {
      speed: 1,
      signal: abort.signal,
      clock: () => now,
      wait: async (ms, signal) => {
        abort.abort();
        if (signal?.aborted !== true) now += ms;
      },
    });
    for await (const b of run) out.push(...b.map((t) => Number(t.seq)));
    expect(out).toEqual([0]);
  });
});
