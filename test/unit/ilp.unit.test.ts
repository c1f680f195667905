import { SenderOptions, createBuffer, type Sender, type SenderBuffer } from '@questdb/nodejs-client';
import { describe, expect, it } from 'vitest';
import { appendTick } from '../../consumers/sinks/questdb.ts';
import { IlpRowError, IlpRows, ilpEscape, type IlpProtocolVersion } from '../../shared/ilp.ts';
import type { Tick } from '../../shared/model.ts';
import { SyntheticMarket, symbolNames } from '../../producers/synthetic.ts';

const TABLES = { trades: 'ts_trades', quotes: 'ts_quotes' };
const VERSIONS: IlpProtocolVersion[] = ['1', '2', '3'];

/** The client's own buffer for a protocol version (what the Sender fills). */
function clientBuffer(version: IlpProtocolVersion): SenderBuffer {
  return createBuffer(new SenderOptions(`http::addr=localhost:9000;protocol_version=${version};`));
}

/** The bytes the client writes for these ticks, through the hot writer's column mapping (appendTick). */
async function clientBytes(version: IlpProtocolVersion, ticks: readonly Tick[]): Promise<Buffer> {
  const buffer = clientBuffer(version);
  // appendTick takes a Sender; the buffer has the same row-building methods, and `at` is synchronous there.
  const asSender = buffer as unknown as Sender;
  for (const t of ticks) await appendTick(asSender, TABLES, t);
  return Buffer.from(buffer.toBufferView());
}

function ourBytes(version: IlpProtocolVersion, ticks: readonly Tick[], initialBytes?: number): Buffer {
  const rows = new IlpRows({ protocolVersion: version, tables: TABLES, maxBytes: 1 << 30, initialBytes });
  for (const t of ticks) rows.add(t);
  expect(rows.rows).toBe(ticks.length);
  return Buffer.from(rows.view());
}

/** Ticks whose strings need every escape the protocol has, and text beyond ASCII. */
function awkwardTicks(): Tick[] {
  const names = ['a b', 'c,d', 'e=f', 'g\nh', 'i\rj', 'k\\l', 'm"n', 'Ünïcødé', '株式', '😀x', 'plain'];
  const out: Tick[] = [];
  let seq = 0;
  for (const source of names) {
    for (const symbol of names) {
      const venue = seq % 3 === 0 ? '' : names[(seq * 7) % names.length]!;
      const ts = 1_732_182_436_123_456_789n + BigInt(seq);
      if (seq % 2 === 0) {
        out.push({
          type: 'trade',
          source,
          symbol,
          ts,
          seq,
          venue,
          price: [187.25, 0.1 + 0.2, 1e21, 5e-324, -3.5, 42][seq % 6]!,
          size: [300, 0.000_001, 1.5e-7, 123_456_789.123][seq % 4]!,
          side: (['', 'buy', 'sell'] as const)[seq % 3]!,
        });
      } else {
        out.push({
          type: 'quote',
          source,
          symbol,
          ts,
          seq: seq * 1_000_003,
          venue,
          bidPrice: 411.1 + seq / 7,
          bidSize: seq,
          askPrice: 411.12 + seq / 3,
          askSize: 2 ** 52 + seq,
        });
      }
      seq++;
    }
  }
  return out;
}

describe('ILP rows (shared/ilp.ts) against the QuestDB client 4.2 buffers', () => {
  for (const version of VERSIONS) {
    it(`protocol ${version}: synthetic ticks give the client's bytes exactly`, async () => {
      const ticks = new SyntheticMarket({ symbols: symbolNames(50), seed: 3, source: 'unit' }).next(2000);
      const ours = ourBytes(version, ticks);
      expect(ours.length).toBeGreaterThan(2000 * 40);
      expect(ours.equals(await clientBytes(version, ticks))).toBe(true);
    });

    it(`protocol ${version}: escapes, empty symbols and non-ASCII text give the client's bytes exactly`, async () => {
      const ticks = awkwardTicks();
      // A 64-byte start makes the buffer grow many times on the way.
      expect(ourBytes(version, ticks, 64).equals(await clientBytes(version, ticks))).toBe(true);
    });
  }

  it('escapes what the client escapes, and nothing else', () => {
    expect(ilpEscape('a b,c=d\ne\rf\\g"h')).toBe('a\\ b\\,c\\=d\\\ne\\\rf\\\\g"h');
    expect(ilpEscape('BTC-USD')).toBe('BTC-USD');
  });

  it('refuses a non-integer seq as the client does, leaving the rows before it intact', () => {
    const [a, b] = new SyntheticMarket({ symbols: ['X'], seed: 1, source: 'unit' }).next(2);
    const rows = new IlpRows({ protocolVersion: '2', tables: TABLES, maxBytes: 1 << 20 });
    rows.add(a!);
    const before = Buffer.from(rows.view());
    expect(() => rows.add({ ...b!, seq: 1.5 })).toThrow(IlpRowError);
    expect(() => clientBuffer('2').table('t').symbol('s', 'x').intColumn('seq', 1.5)).toThrow(
      /must be an integer/,
    );
    expect(rows.rows).toBe(1);
    expect(Buffer.from(rows.view()).equals(before)).toBe(true);
  });

  it('refuses to grow past maxBytes, keeping what was written', () => {
    const ticks = new SyntheticMarket({ symbols: ['X'], seed: 1, source: 'unit' }).next(100);
    const rows = new IlpRows({ protocolVersion: '1', tables: TABLES, maxBytes: 1000, initialBytes: 256 });
    let added = 0;
    expect(() => {
      for (const t of ticks) {
        rows.add(t);
        added++;
      }
    }).toThrow(/Max buffer size is 1000 bytes/);
    expect(added).toBeGreaterThan(0);
    expect(rows.rows).toBe(added);
    expect(rows.length).toBeLessThanOrEqual(1000);
    expect(rows.view().toString().split('\n').length - 1).toBe(added);
  });

  it('starts over after reset', () => {
    const ticks = new SyntheticMarket({ symbols: ['X', 'Y'], seed: 2, source: 'unit' }).next(10);
    const rows = new IlpRows({ protocolVersion: '1', tables: TABLES, maxBytes: 1 << 20 });
    for (const t of ticks) rows.add(t);
    rows.reset();
    expect(rows.length).toBe(0);
    expect(rows.rows).toBe(0);
    rows.add(ticks[0]!);
    expect(rows.view().toString()).toBe(ourBytes('1', [ticks[0]!]).toString());
  });
});
