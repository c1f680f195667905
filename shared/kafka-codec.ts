import type { z } from 'zod';
import {
  isPriceInRange,
  isPrintableName,
  isSizeInRange,
  MAX_TS_NS,
  TickSchema,
  tickToJson,
  type Tick,
} from './model.ts';

/**
 * The Kafka message format of the bridge (docs/kafka.md): a message value is one tick as a JSON object in
 * the message model, `ts` as a decimal string of nanoseconds so that all 19 digits survive JSON. The key is
 * the symbol (so that one partition keeps one symbol's order); it is not read back, the value is authoritative.
 *
 *   {"type":"trade","source":"xnas","symbol":"AAPL","ts":"1700000000123456789","seq":7,"venue":"",
 *    "price":189.5,"size":100,"side":"buy"}
 *
 * Topics written by other systems can be read through a mapping: `fieldMap` names the message field that holds
 * each model field, `tsUnit` says what `ts` counts (converted exactly, never through a float), and
 * `defaultSource` fills `source` when messages carry none. With a mapping, fields it does not name are ignored;
 * without one, the message must be exactly the model (unknown fields are an error, as for every tick).
 *
 * This module is the only place that turns Kafka message bytes into ticks and ticks into message bytes.
 */
export type TsUnit = 'ns' | 'us' | 'ms' | 's';

export interface KafkaMapping {
  /** Model field → message field. Fields not listed keep their model name. */
  readonly fieldMap: Readonly<Record<string, string>>;
  readonly tsUnit: TsUnit;
  readonly defaultSource?: string | undefined;
}

export type KafkaDecodeResult = { ok: true; tick: Tick } | { ok: false; reason: string };

const MODEL_FIELDS = [
  ...new Set(TickSchema.options.flatMap((o) => Object.keys((o as unknown as { shape: object }).shape))),
] as readonly string[];

/** Sub-second digits each unit can carry down to a nanosecond, and nanoseconds per unit. */
const UNITS: Record<TsUnit, { digits: number; factor: bigint }> = {
  ns: { digits: 0, factor: 1n },
  us: { digits: 3, factor: 1_000n },
  ms: { digits: 6, factor: 1_000_000n },
  s: { digits: 9, factor: 1_000_000_000n },
};

const DECIMAL = /^(\d{1,30})(?:\.(\d{1,30}))?$/;

/**
 * A timestamp in `unit` (a decimal string, or a JSON number that is still exact) as nanoseconds, or the reason
 * it cannot be converted without losing precision.
 */
export function toNanos(value: unknown, unit: TsUnit): { ns: bigint } | { reason: string } {
  let text: string;
  if (typeof value === 'string') text = value.trim();
  else if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0)
      return { reason: `expected a non-negative timestamp, got ${value}` };
    if (Number.isInteger(value) && !Number.isSafeInteger(value)) {
      // JSON.parse already rounded it: 1700000000123456789 arrives as 1700000000123456800.
      return { reason: 'a JSON number above 2^53 has lost precision: send ts as a string' };
    }
    text = String(value);
  } else {
    return { reason: `expected a timestamp (decimal string or number), got ${describe(value)}` };
  }
  const m = DECIMAL.exec(text);
  if (m === null) return { reason: `expected a decimal timestamp in ${unit}, got ${JSON.stringify(text)}` };
  const { digits, factor } = UNITS[unit];
  const frac = (m[2] ?? '').replace(/0+$/, '');
  if (frac.length > digits) {
    return { reason: `more precision than a nanosecond in ${JSON.stringify(text)} (unit ${unit})` };
  }
  return { ns: BigInt(m[1]!) * factor + (frac === '' ? 0n : BigInt(frac.padEnd(digits, '0'))) };
}

export class KafkaTickDecoder {
  private readonly mapping: KafkaMapping;
  private readonly mapped: boolean;
  /** Message field name → model field name, for error messages. */
  private readonly messageName: Map<string, string>;

  constructor(mapping: KafkaMapping) {
    this.mapping = mapping;
    this.mapped = Object.keys(mapping.fieldMap).length > 0;
    this.messageName = new Map(MODEL_FIELDS.map((f) => [f, mapping.fieldMap[f] ?? f]));
  }

  decode(value: Buffer | string | null | undefined): KafkaDecodeResult {
    if (value === null || value === undefined || value.length === 0) {
      return { ok: false, reason: 'empty message value (null or tombstone)' };
    }
    let obj: unknown;
    try {
      obj = JSON.parse(typeof value === 'string' ? value : value.toString('utf8'));
    } catch (err) {
      return { ok: false, reason: `not valid JSON: ${err instanceof Error ? err.message : String(err)}` };
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      return { ok: false, reason: `expected a JSON object, got ${describe(obj)}` };
    }
    const src = obj as Record<string, unknown>;
    let candidate: Record<string, unknown>;
    if (this.mapped) {
      candidate = {};
      for (const [field, name] of this.messageName) {
        if (Object.hasOwn(src, name)) candidate[field] = src[name];
      }
    } else {
      candidate = src; // freshly parsed and ours: adjusted in place, no copy in the hot loop
    }
    if (candidate.source === undefined && this.mapping.defaultSource !== undefined) {
      candidate.source = this.mapping.defaultSource;
    }
    let ns: bigint | undefined;
    const rawTs = candidate.ts;
    if (this.mapping.tsUnit === 'ns' && typeof rawTs === 'string' && TS_DIGITS.test(rawTs)) {
      ns = BigInt(rawTs);
    } else if (rawTs !== undefined) {
      const ts = toNanos(rawTs, this.mapping.tsUnit);
      if ('reason' in ts) return { ok: false, reason: `${this.label('ts')}: ${ts.reason}` };
      ns = ts.ns;
      candidate.ts = ts.ns.toString();
    }
    if (ns !== undefined) {
      const fast = fastTick(candidate, ns);
      if (fast !== undefined) return { ok: true, tick: fast };
    }
    // The zod schema is the authority: it explains a rejection, and accepts anything the fast path was too
    // strict about.
    const parsed = TickSchema.safeParse(candidate);
    if (parsed.success) return { ok: true, tick: parsed.data };
    return { ok: false, reason: this.describeIssues(parsed.error) };
  }

  private label(field: string): string {
    const name = this.messageName.get(field);
    return name === undefined || name === field ? field : `${field} (message field "${name}")`;
  }

  private describeIssues(error: z.ZodError): string {
    return error.issues
      .map((issue) => {
        const pos = issue.path[0];
        return `${typeof pos === 'string' ? this.label(pos) : 'message'}: ${issue.message}`;
      })
      .join('; ');
  }
}

/*
 * Fast path. zod costs several microseconds per message, far more than JSON.parse, and this is the ingest
 * bridge's hot loop. These checks implement TickSchema's rules for the common case and return undefined for
 * anything they do not accept (the schema then decides, and explains). They must never accept what the schema
 * rejects: test/unit/kafka-codec.unit.test.ts compares both on generated and mutated messages.
 */
const TS_DIGITS = /^\d{1,19}$/;
const TRADE_KEYS = new Set(['type', 'source', 'symbol', 'ts', 'seq', 'venue', 'price', 'size', 'side']);
const QUOTE_KEYS = new Set([
  'type',
  'source',
  'symbol',
  'ts',
  'seq',
  'venue',
  'bidPrice',
  'bidSize',
  'askPrice',
  'askSize',
]);
const isName = (v: unknown): v is string =>
  typeof v === 'string' && v.length >= 1 && v.length <= 64 && isPrintableName(v);
const isPrice = (v: unknown): v is number => typeof v === 'number' && isPriceInRange(v);
const isSize = (v: unknown): v is number => typeof v === 'number' && isSizeInRange(v);
const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** `ts` has already been checked and converted to `ns` (at most 19 digits; the model's maximum is checked here). */
export function fastTick(o: Record<string, unknown>, ns: bigint): Tick | undefined {
  const { type, source, symbol, seq } = o;
  const venue = o.venue === undefined ? '' : o.venue;
  if (
    !isName(source) ||
    !isName(symbol) ||
    !isSeq(seq) ||
    typeof venue !== 'string' ||
    venue.length > 64 ||
    !isPrintableName(venue)
  ) {
    return undefined;
  }
  if (ns > MAX_TS_NS) return undefined;
  if (type === 'trade') {
    for (const k in o) if (!TRADE_KEYS.has(k)) return undefined;
    const { price, size } = o;
    const side = o.side === undefined ? '' : o.side;
    if (!isPrice(price) || !isSize(size) || (side !== 'buy' && side !== 'sell' && side !== ''))
      return undefined;
    return { type, source, symbol, ts: ns, seq, venue, price, size, side };
  }
  if (type === 'quote') {
    for (const k in o) if (!QUOTE_KEYS.has(k)) return undefined;
    const { bidPrice, bidSize, askPrice, askSize } = o;
    if (!isPrice(bidPrice) || !isSize(bidSize) || !isPrice(askPrice) || !isSize(askSize)) return undefined;
    return { type, source, symbol, ts: ns, seq, venue, bidPrice, bidSize, askPrice, askSize };
  }
  return undefined;
}

/** The message value the Redis → Kafka direction produces: the model as JSON, ts as a string. */
export function encodeKafkaValue(t: Tick): string {
  return JSON.stringify(tickToJson(t));
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}
