import { describe, expect, it } from 'vitest';
import { entrySize, futureReason, splitByBytes } from '../../consumers/admission.ts';
import { scaled } from '../../consumers/bars/aggregate.ts';
import { archiveWindow, windowReason } from '../../consumers/sinks/archive.ts';
import { decodeFrame, encodeFrame, frameLimitReason } from '../../shared/codec.ts';
import { loadConfig } from '../../shared/config.ts';
import { DataError, isProgramFault, isRetriable, SinkError } from '../../shared/errors.ts';
import { KafkaTickDecoder } from '../../shared/kafka-codec.ts';
import { isPrintableName, MAX_TS_NS, TickSchema, type Tick, type Trade } from '../../shared/model.ts';
import { isRetriablePgError } from '../../shared/pg.ts';
import { parseTimestamp } from '../../shared/time.ts';

const trade = {
  type: 'trade',
  source: 'feed-a',
  symbol: 'AAPL',
  ts: '1732182436123456789',
  seq: 7,
  venue: 'XNAS',
  price: 187.25,
  size: 300,
  side: 'buy',
} as const;
const good = TickSchema.parse(trade) as Trade;
const kafka = new KafkaTickDecoder({ fieldMap: {}, tsUnit: 'ns' });
const decodeKafkaValue = (v: string) => kafka.decode(v);

function refusal(over: Record<string, unknown>): string {
  const r = TickSchema.safeParse({ ...trade, ...over });
  if (r.success) throw new Error(`accepted ${JSON.stringify(over)}`);
  return r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
}

describe('message model bounds: what every store holds exactly', () => {
  it('refuses a price or size no store can hold, saying which and the range', () => {
    expect(refusal({ price: 1e308 })).toMatch(/price: price out of range \(1e-9 to 1000000000000000\)/);
    expect(refusal({ price: 1e21 })).toMatch(/price out of range/);
    expect(refusal({ price: 1e-12 })).toMatch(/price out of range/);
    expect(refusal({ size: 1e308 })).toMatch(/size: size out of range/);
    expect(refusal({ size: 1e-12 })).toMatch(/size out of range/);
  });

  it('accepts the bounds themselves and an empty side', () => {
    for (const over of [{ price: 1e15 }, { price: 1e-9 }, { size: 1e15 }, { size: 1e-9 }, { size: 0 }]) {
      expect(TickSchema.safeParse({ ...trade, ...over }).success, JSON.stringify(over)).toBe(true);
    }
  });

  it("stops timestamps at PostgreSQL's bigint maximum", () => {
    expect(MAX_TS_NS).toBe(9_223_372_036_854_775_807n);
    expect(TickSchema.parse({ ...trade, ts: '9223372036854775807' }).ts).toBe(MAX_TS_NS);
    expect(refusal({ ts: '9223372036854775808' })).toMatch(/timestamp out of range/);
    expect(refusal({ ts: '9999999999999999999' })).toMatch(/timestamp out of range/);
    expect(parseTimestamp('9223372036854775808')).toBe('out of range');
  });

  it('the frame codec refuses an out-of-range tick alone; the good trade of the same frame passes', () => {
    const fields = encodeFrame([good, good]);
    const rows = JSON.parse(fields[5]!) as unknown[][];
    rows[1]![6] = 1e308;
    fields[5] = JSON.stringify(rows);
    const out = decodeFrame(fields);
    expect(out.ticks).toEqual([good]);
    expect(out.failures).toHaveLength(1);
    expect(out.failures[0]!.reason).toMatch(/^tick 1: price: price out of range/);
  });

  it('the Kafka codec applies the same bounds', () => {
    const r = decodeKafkaValue(JSON.stringify({ ...trade, size: 1e300 }));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/size out of range/);
    const far = decodeKafkaValue(JSON.stringify({ ...trade, ts: '9300000000000000000' }));
    expect(far.ok).toBe(false);
  });
});

describe('names: printable characters only', () => {
  it('refuses controls, ANSI escapes, newlines, bidi overrides and zero-width characters', () => {
    for (const bad of [
      'AA\nPL',
      'AAPL\r',
      '\u001b[31mAAPL',
      'A\u0000',
      'A\u202eLPAA',
      'A\u2066B',
      'A\u200bB',
      'A\u2028B',
      'A\u007fB',
      'A\u0085B',
      'A\ud800B',
      'A\ue000B',
    ]) {
      expect(isPrintableName(bad), JSON.stringify(bad)).toBe(false);
      expect(refusal({ symbol: bad })).toMatch(/symbol: must hold printable characters only/);
      expect(refusal({ source: bad })).toMatch(/source: must hold printable characters only/);
      expect(refusal({ venue: bad })).toMatch(/venue: must hold printable characters only/);
    }
  });

  it('accepts letters, digits, punctuation, symbols and spaces in any script', () => {
    for (const ok of [
      'AAPL',
      'BRK.A',
      'BRK A',
      'BTC/USD',
      'ES_F:2024',
      'Daimler-Benz',
      'Ä€',
      '株式会社',
      'é',
    ]) {
      expect(isPrintableName(ok), ok).toBe(true);
      expect(TickSchema.safeParse({ ...trade, symbol: ok }).success).toBe(true);
    }
  });

  it('the frame codec and the Kafka codec refuse them too', () => {
    const fields = encodeFrame([{ ...good, symbol: '\u001b[2J' }]);
    expect(decodeFrame(fields).failures[0]!.reason).toMatch(/symbol: must hold printable characters/);
    expect(decodeKafkaValue(JSON.stringify({ ...trade, venue: 'X\nY' })).ok).toBe(false);
  });
});

describe('errors that are facts about the data are never retriable', () => {
  it('a value out of range for a bar is a non-retriable DataError', () => {
    let thrown: unknown;
    try {
      scaled(1e308);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(DataError);
    expect(isRetriable(thrown)).toBe(false);
    expect((thrown as Error).message).toBe('value out of range for a bar: 1e+308');
  });

  it('the PostgreSQL classifier (bars, archive) keeps our own verdict instead of retrying', () => {
    expect(isRetriablePgError(new DataError('value out of range for a bar: 1e+308'))).toBe(false);
    expect(isRetriablePgError(new SinkError('down', { retriable: true }))).toBe(true);
    expect(isRetriablePgError(Object.assign(new Error('x'), { code: '08006' }))).toBe(true);
    expect(isRetriablePgError(Object.assign(new Error('x'), { code: '22003' }))).toBe(false);
  });

  it('tells a computation that fails on the data from a store outage', () => {
    const wrapped = new SinkError('merge failed', { retriable: true, cause: new RangeError('too big') });
    expect(isProgramFault(wrapped)).toBe(true);
    expect(isProgramFault(new TypeError('x'))).toBe(true);
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(isProgramFault(new SinkError('down', { retriable: true, cause: refused }))).toBe(false);
    expect(isProgramFault(new SinkError('down', { retriable: true }))).toBe(false);
    expect(isProgramFault(new Error('Connection is closed.'))).toBe(false);
  });
});

describe('future-dated ticks', () => {
  const now = 1_800_000_000_000_000_000n;
  const at = (ts: bigint): Tick => ({ ...good, ts });

  it('accepts ticks up to the skew ahead, and any in the past', () => {
    expect(futureReason(at(now), now, 5000)).toBeUndefined();
    expect(futureReason(at(now + 5_000_000_000n), now, 5000)).toBeUndefined();
    expect(futureReason(at(1n), now, 5000)).toBeUndefined();
  });

  it('refuses a tick further ahead, naming the distance and the variable', () => {
    expect(futureReason(at(now + 5_000_000_001n), now, 5000)).toBe(
      `timestamp ${now + 5_000_000_001n} is 5000 ms ahead of the receiving clock (max 5000 ms, TICKSTREAM_MAX_FUTURE_MS)`,
    );
    expect(futureReason(at(now + 3_600_000_000_000n), now, 5000)).toMatch(/3600000 ms ahead/);
  });

  it('defaults to a few seconds, configurable', () => {
    expect(loadConfig({ env: {} }).consumer.maxFutureMs).toBe(5000);
    expect(loadConfig({ env: { TICKSTREAM_MAX_FUTURE_MS: '60000' } }).consumer.maxFutureMs).toBe(60_000);
  });
});

describe('frame caps', () => {
  const limits = { maxTicks: 100, maxBytes: 10_000 };

  it('passes a frame within both caps', () => {
    expect(frameLimitReason(encodeFrame([good, good]), limits)).toBeUndefined();
  });

  it('refuses a frame with too many ticks before parsing it', () => {
    const fields = ['v', '1', 'n', '1000000', 'd', 'not even parsed'];
    expect(frameLimitReason(fields, limits)).toBe(
      'frame too large: 1000000 ticks (max 100, TICKSTREAM_MAX_FRAME_TICKS)',
    );
  });

  it('refuses a payload over the byte cap, counting UTF-8 bytes', () => {
    const fields = ['v', '1', 'n', '1', 'd', 'x'.repeat(10_001)];
    expect(frameLimitReason(fields, limits)).toBe(
      'frame too large: 10001 payload bytes (max 10000, TICKSTREAM_MAX_FRAME_BYTES)',
    );
    // 4,000 characters of 3 bytes each: 12,000 bytes although only 4,000 characters.
    expect(frameLimitReason(['v', '1', 'n', '1', 'd', '株'.repeat(4000)], limits)).toMatch(
      /12000 payload bytes/,
    );
    expect(frameLimitReason(['v', '1', 'n', '1', 'd', '株'.repeat(3000)], limits)).toBeUndefined();
  });

  it('defaults leave room for the largest frame the producer writes', () => {
    const c = loadConfig({ env: {} });
    expect(c.consumer.maxFrameTicks).toBeGreaterThanOrEqual(10_000);
    expect(c.consumer.maxFrameBytes).toBe(4 * 1024 * 1024);
  });
});

describe('read batches bounded by bytes', () => {
  const entry = (size: number) => ({
    raw: ['v', '1', 'n', '1', 'd', 'x'.repeat(size - 2)].map((f) => Buffer.from(f)),
  });

  it('splits a read into consecutive runs within the byte budget', () => {
    const entries = [entry(400), entry(400), entry(400), entry(900), entry(100)];
    expect(entrySize(entries[0]!)).toBe(400);
    const runs = splitByBytes(entries, 1000);
    expect(runs.map((r) => r.map(entrySize))).toEqual([[400, 400], [400], [900, 100]]);
    expect(runs.flat()).toEqual(entries);
  });

  it('an entry larger than the budget is a run of its own', () => {
    expect(splitByBytes([entry(5000), entry(10)], 1000).map((r) => r.length)).toEqual([1, 1]);
  });
});

describe('archive partition window', () => {
  const DAY = 86_400_000;
  const nowMs = Date.UTC(2026, 10, 30, 12);
  const w = archiveWindow({ archiveDaysBack: 1096, archiveDaysAhead: 1 }, nowMs);
  const atMs = (ms: number): Tick => ({ ...good, ts: BigInt(ms) * 1_000_000n });

  it('takes days from archiveDaysBack days ago to the end of archiveDaysAhead days ahead', () => {
    expect(windowReason(atMs(nowMs), w)).toBeUndefined();
    expect(windowReason(atMs(Date.UTC(2026, 11, 1, 23, 59)), w)).toBeUndefined();
    expect(windowReason(atMs(nowMs - 1096 * DAY), w)).toBeUndefined();
  });

  it('refuses a tick outside it, naming its day, the window and the variables', () => {
    expect(windowReason(atMs(0), w)).toBe(
      'day 1970-01-01 is outside the archive window 2023-11-30 to 2026-12-01 ' +
        '(TICKSTREAM_ARCHIVE_DAYS_BACK=1096, TICKSTREAM_ARCHIVE_DAYS_AHEAD=1)',
    );
    expect(windowReason(atMs(Date.UTC(2026, 11, 2)), w)).toMatch(/^day 2026-12-02 is outside/);
    expect(windowReason({ ...good, ts: MAX_TS_NS }, w)).toMatch(/^day 2262-04-11 is outside/);
  });

  it('defaults to three years back and a day ahead', () => {
    const c = loadConfig({ env: {} });
    expect([c.postgres.archiveDaysBack, c.postgres.archiveDaysAhead]).toEqual([1096, 1]);
  });
});
