import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';
import {
  encodeKafkaValue,
  fastTick,
  KafkaTickDecoder,
  toNanos,
  type KafkaMapping,
} from '../../shared/kafka-codec.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { requireKafka } from '../../shared/kafka.ts';
import { TickSchema, type Tick } from '../../shared/model.ts';

const plain: KafkaMapping = { fieldMap: {}, tsUnit: 'ns' };

const trade = {
  type: 'trade',
  source: 'xnas',
  symbol: 'AAPL',
  ts: '1700000000123456789',
  seq: 7,
  venue: 'XNAS',
  price: 189.5,
  size: 100,
  side: 'buy',
};
const quote = {
  type: 'quote',
  source: 'xnas',
  symbol: 'MSFT',
  ts: '1700000000123456790',
  seq: 8,
  bidPrice: 370.1,
  bidSize: 3,
  askPrice: 370.2,
  askSize: 4,
};

function ok(decoder: KafkaTickDecoder, value: unknown): Tick {
  const r = decoder.decode(Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)));
  if (!r.ok) throw new Error(`expected a tick, got: ${r.reason}`);
  return r.tick;
}

function reason(decoder: KafkaTickDecoder, value: unknown): string {
  const r = decoder.decode(
    value === null ? null : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)),
  );
  if (r.ok)
    throw new Error(
      `expected a rejection, got ${JSON.stringify(r.tick, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`,
    );
  return r.reason;
}

describe('Kafka message decoding (our model)', () => {
  const d = new KafkaTickDecoder(plain);

  it('decodes a trade and a quote in the model, applying defaults', () => {
    expect(ok(d, trade)).toEqual({ ...trade, ts: 1700000000123456789n });
    expect(ok(d, quote)).toEqual({ ...quote, ts: 1700000000123456790n, venue: '' });
    const { side: _side, venue: _venue, ...bare } = trade;
    expect(ok(d, bare)).toMatchObject({ side: '', venue: '' });
  });

  it('keeps nanoseconds exact: 19 digits, two ticks a nanosecond apart stay distinct', () => {
    const a = ok(d, { ...trade, ts: '9223372036854775806' });
    const b = ok(d, { ...trade, ts: '9223372036854775807' });
    expect(a.ts).toBe(9_223_372_036_854_775_806n);
    expect(b.ts - a.ts).toBe(1n);
    // A JSON number that big was already rounded by JSON.parse: refused, never silently shifted.
    expect(
      reason(
        d,
        `{"type":"trade","source":"s","symbol":"X","ts":1700000000123456789,"seq":1,"price":1,"size":1}`,
      ),
    ).toMatch(/ts: a JSON number above 2\^53 has lost precision: send ts as a string/);
    // A small integer number is still exact and accepted.
    expect(ok(d, { ...trade, ts: 123456789 }).ts).toBe(123456789n);
  });

  it('rejects bad messages with a reason that names the field', () => {
    expect(reason(d, null)).toMatch(/empty message value/);
    expect(reason(d, '')).toMatch(/empty message value/);
    expect(reason(d, '{"type":')).toMatch(/^not valid JSON/);
    expect(reason(d, [1, 2])).toMatch(/expected a JSON object, got an array/);
    expect(reason(d, '42')).toMatch(/expected a JSON object, got number/);
    expect(reason(d, { ...trade, type: 'bar' })).toMatch(/^type: /);
    expect(reason(d, { ...trade, price: 'cheap' })).toMatch(/^price: .*expected number/);
    expect(reason(d, { ...trade, price: -1 })).toMatch(/^price: /);
    expect(reason(d, { ...trade, symbol: '' })).toMatch(/^symbol: /);
    expect(reason(d, { ...trade, seq: 1.5 })).toMatch(/^seq: /);
    expect(reason(d, { ...trade, ts: '17e8' })).toMatch(/^ts: expected a decimal timestamp in ns/);
    expect(reason(d, { ...trade, ts: '-5' })).toMatch(/^ts: /);
    expect(reason(d, { ...trade, ts: '10000000000000000000' })).toMatch(/^ts: /);
    const { source: _s, ...noSource } = trade;
    expect(reason(d, noSource)).toMatch(/^source: /);
    // The model is strict: an unknown field is a typo until proven otherwise.
    expect(reason(d, { ...trade, prcie: 1 })).toMatch(/Unrecognized key.*prcie/);
  });

  it('encodes the model with ts as a string, and decoding it gives the same tick back', () => {
    const t = TickSchema.parse(trade);
    const value = encodeKafkaValue(t);
    expect(JSON.parse(value)).toEqual(trade);
    expect(ok(d, value)).toEqual(t);
    const q = TickSchema.parse(quote);
    expect(ok(d, encodeKafkaValue(q))).toEqual(q);
  });
});

describe('Kafka message decoding with a field mapping', () => {
  const mapping: KafkaMapping = {
    fieldMap: { symbol: 'sym', ts: 'time', price: 'px', size: 'qty', type: 'kind' },
    tsUnit: 'ms',
    defaultSource: 'vendor',
  };
  const d = new KafkaTickDecoder(mapping);

  it('reads mapped field names, fills the default source and ignores unmapped extras', () => {
    const t = ok(d, {
      kind: 'trade',
      sym: 'ES',
      time: 1700000000123,
      seq: 3,
      px: 4500.25,
      qty: 2,
      exchangeFlags: 'x',
    });
    expect(t).toEqual({
      type: 'trade',
      source: 'vendor',
      symbol: 'ES',
      ts: 1_700_000_000_123_000_000n,
      seq: 3,
      venue: '',
      price: 4500.25,
      size: 2,
      side: '',
    });
    // A source carried by the message wins over the default.
    expect(ok(d, { kind: 'trade', source: 'cme', sym: 'ES', time: '1', seq: 3, px: 1, qty: 2 }).source).toBe(
      'cme',
    );
  });

  it('converts decimal timestamps exactly to nanoseconds', () => {
    expect(ok(d, { kind: 'trade', sym: 'ES', time: '1700000000123.456789', seq: 1, px: 1, qty: 1 }).ts).toBe(
      1_700_000_000_123_456_789n,
    );
    expect(
      reason(d, { kind: 'trade', sym: 'ES', time: '1700000000123.4567891', seq: 1, px: 1, qty: 1 }),
    ).toMatch(/ts \(message field "time"\): more precision than a nanosecond/);
  });

  it('names both the model field and the message field in reasons', () => {
    expect(reason(d, { kind: 'trade', sym: 'ES', time: 1, seq: 1, px: 'x', qty: 1 })).toMatch(
      /^price \(message field "px"\): /,
    );
    expect(reason(d, { kind: 'trade', time: 1, seq: 1, px: 1, qty: 1 })).toMatch(
      /^symbol \(message field "sym"\): /,
    );
  });
});

describe('timestamp units', () => {
  it('converts every unit exactly, from strings and exact numbers', () => {
    expect(toNanos('1700000000', 's')).toEqual({ ns: 1_700_000_000_000_000_000n });
    expect(toNanos('1700000000.000000001', 's')).toEqual({ ns: 1_700_000_000_000_000_001n });
    expect(toNanos(1700000000.5, 's')).toEqual({ ns: 1_700_000_000_500_000_000n });
    expect(toNanos('1700000000123456', 'us')).toEqual({ ns: 1_700_000_000_123_456_000n });
    expect(toNanos('1700000000123456.789', 'us')).toEqual({ ns: 1_700_000_000_123_456_789n });
    expect(toNanos(1700000000123, 'ms')).toEqual({ ns: 1_700_000_000_123_000_000n });
    expect(toNanos('1700000000123456789', 'ns')).toEqual({ ns: 1_700_000_000_123_456_789n });
    // Trailing zeros beyond a nanosecond are not extra precision.
    expect(toNanos('1.1000000000', 's')).toEqual({ ns: 1_100_000_000n });
  });

  it('refuses what cannot be converted exactly', () => {
    expect(toNanos('1.5', 'ns')).toHaveProperty('reason');
    expect(toNanos(1.5, 'ns')).toHaveProperty('reason');
    expect(toNanos('1.0000000001', 's')).toHaveProperty('reason');
    expect(toNanos(2 ** 60, 'ms')).toHaveProperty('reason');
    expect(toNanos(-1, 'ms')).toHaveProperty('reason');
    expect(toNanos(true, 'ms')).toHaveProperty('reason');
    expect(toNanos('1e9', 's')).toHaveProperty('reason');
  });
});

describe('Kafka configuration', () => {
  it('parses the mapping from KAFKA_FIELD_MAP and refuses unknown model fields', () => {
    const c = loadConfig({ env: { KAFKA_FIELD_MAP: 'symbol=sym, ts=time', KAFKA_TS_UNIT: 'ms' } });
    expect(c.kafka.fieldMap).toEqual({ symbol: 'sym', ts: 'time' });
    expect(c.kafka.tsUnit).toBe('ms');
    expect(() => loadConfig({ env: { KAFKA_FIELD_MAP: 'sym' } })).toThrow(
      /KAFKA_FIELD_MAP: expected field=name pairs/,
    );
    expect(() => loadConfig({ env: { KAFKA_FIELD_MAP: 'symbl=sym' } })).toThrow(
      /KAFKA_FIELD_MAP: keys must be tick fields/,
    );
  });

  it('caps in-flight requests of the idempotent producer at 5, naming both variables', () => {
    expect(() => loadConfig({ env: { KAFKA_MAX_IN_FLIGHT: '6' } })).toThrow(
      /KAFKA_MAX_IN_FLIGHT and KAFKA_IDEMPOTENT: at most 5 requests in flight with the idempotent producer \(got 6\)/,
    );
    expect(loadConfig({ env: { KAFKA_MAX_IN_FLIGHT: '5' } }).kafka.maxInFlight).toBe(5);
    expect(
      loadConfig({ env: { KAFKA_MAX_IN_FLIGHT: '6', KAFKA_IDEMPOTENT: 'false' } }).kafka.maxInFlight,
    ).toBe(6);
  });

  it('refuses KAFKA_RETRIES=0 with the idempotent producer when the config is parsed, naming both variables', () => {
    // Without this check kafkajs throws "Idempotent producer must allow retries" from inside createKafkaSink.
    const parse = (env: Record<string, string>) => () =>
      loadConfig({ env: { KAFKA_BROKERS: 'k1:9092', ...env } });
    expect(parse({ KAFKA_RETRIES: '0' })).toThrow(ConfigError);
    expect(parse({ KAFKA_RETRIES: '0' })).toThrow(
      /invalid configuration:\n\s+KAFKA_RETRIES and KAFKA_IDEMPOTENT: the idempotent producer needs at least 1 retry \(got 0\)/,
    );
    expect(parse({ KAFKA_RETRIES: '0', KAFKA_IDEMPOTENT: 'true' })).toThrow(
      /KAFKA_RETRIES and KAFKA_IDEMPOTENT/,
    );
    expect(parse({ KAFKA_RETRIES: '1' })().kafka.retries).toBe(1);
    expect(parse({ KAFKA_RETRIES: '0', KAFKA_IDEMPOTENT: 'false' })().kafka.retries).toBe(0);
  });

  it('is off unless KAFKA_BROKERS is set, and refuses a mirror topic the ingest side reads', () => {
    expect(() => requireKafka(loadConfig({ env: {} }))).toThrow(ConfigError);
    expect(() => requireKafka(loadConfig({ env: {} }))).toThrow(/KAFKA_BROKERS/);
    const on = loadConfig({ env: { KAFKA_BROKERS: 'k1:9092,k2:9092' } });
    expect(requireKafka(on).brokers).toEqual(['k1:9092', 'k2:9092']);
    const loop = loadConfig({ env: { KAFKA_BROKERS: 'k1:9092', KAFKA_MIRROR_TOPIC: 'ticks' } });
    expect(() => requireKafka(loop)).toThrow(/KAFKA_MIRROR_TOPIC "ticks" is also in KAFKA_TOPICS/);
  });
});

describe('the decoding fast path', () => {
  const replacements: unknown[] = [
    undefined,
    null,
    '',
    'x'.repeat(65),
    'ok',
    -1,
    0,
    1.5,
    2 ** 53,
    'buy',
    'hold',
    'trade',
    'quote',
    true,
    [],
    {},
  ];

  it('never accepts what the schema rejects, and agrees with it on what both accept', () => {
    const ticks = new SyntheticMarket({ symbols: ['AAA', 'BBBB'], seed: 4, source: 'src' }).next(40);
    let fastAccepted = 0;
    let checked = 0;
    for (const t of ticks) {
      const base = JSON.parse(encodeKafkaValue(t)) as Record<string, unknown>;
      const variants: Record<string, unknown>[] = [base, { ...base, extra: 1 }];
      for (const key of Object.keys(base).filter((k) => k !== 'ts')) {
        for (const v of replacements) {
          const o = { ...base };
          if (v === undefined) delete o[key];
          else o[key] = v;
          variants.push(o);
        }
      }
      for (const o of variants) {
        const fast = fastTick(o, BigInt(o.ts as string));
        const slow = TickSchema.safeParse(o);
        checked++;
        if (fast === undefined) continue;
        fastAccepted++;
        expect(slow.success, JSON.stringify(o)).toBe(true);
        expect(fast).toEqual(slow.data);
      }
    }
    expect(checked).toBeGreaterThan(5000);
    expect(fastAccepted).toBeGreaterThan(40);
  });
});
