import { describe, expect, it } from 'vitest';
import { encodeChunks, TickPacker, TickUnpacker } from '../../producers/feeds/handover.ts';
import { encodeTick } from '../../shared/codec.ts';
import type { Tick } from '../../shared/model.ts';
import { shardOf } from '../../shared/streams.ts';

// The columns a feed worker hands the main thread (producers/feeds/handover.ts): ticks come back as they went.
describe('feed worker hand-over in columns', () => {
  const ticks: Tick[] = [
    {
      type: 'trade',
      source: 'binance',
      symbol: 'BTCUSDT',
      ts: 1_796_026_767_000_000_123n,
      seq: 2 ** 53 - 1,
      venue: 'binance',
      price: 91234.56,
      size: 0.001,
      side: 'sell',
    },
    {
      type: 'quote',
      source: 'binance',
      symbol: 'ETHUSDT',
      ts: 9_223_372_036_854_775_807n,
      seq: 0,
      venue: 'binance@rx',
      bidPrice: 3000.1,
      bidSize: 2,
      askPrice: 3000.2,
      askSize: 1e-8,
    },
    {
      type: 'trade',
      source: 'kraken',
      symbol: 'BTC/USD',
      ts: 0n,
      seq: 7,
      venue: 'kraken',
      price: 1,
      size: 1,
      side: '',
    },
    {
      type: 'trade',
      source: 'binance',
      symbol: 'BTCUSDT',
      ts: 1n,
      seq: 8,
      venue: 'binance',
      price: 2,
      size: 3,
      side: 'buy',
    },
  ];

  it('returns every tick exactly, across chunks, sending each string once', () => {
    const packer = new TickPacker(3);
    const unpacker = new TickUnpacker();
    const out: Tick[] = [];
    const sent: string[] = [];
    for (const t of ticks) {
      if (!packer.add(t)) {
        const { columns, transfer } = packer.take();
        expect(transfer).toHaveLength(5);
        sent.push(...columns.newStrings);
        out.push(...unpacker.unpack(columns));
        expect(packer.add(t)).toBe(true);
      }
    }
    const { columns } = packer.take();
    sent.push(...columns.newStrings);
    out.push(...unpacker.unpack(columns));
    expect(out).toEqual(ticks);
    expect(sent).toEqual(['binance', 'BTCUSDT', 'ETHUSDT', 'binance@rx', 'kraken', 'BTC/USD']);
    expect(packer.take().columns.kinds).toHaveLength(0);
  });

  it('encodes chunks straight into frame rows equal to encodeTick, with their shards, mixed with unpacking', () => {
    // Awkward strings too: a quote and a backslash need JSON escapes, the rest go in quotes as they are.
    const [trade, quote] = ticks as [Tick & { type: 'trade' }, Tick & { type: 'quote' }];
    const more: Tick[] = [
      ...ticks,
      { ...trade, symbol: 'A"B\\C', seq: 9, price: 0.1 + 0.2 },
      { ...quote, source: 'ünï', symbol: 'ETHUSDT', seq: 10, askSize: Number.NaN },
    ];
    const packer = new TickPacker(2);
    const unpacker = new TickUnpacker();
    const rows: string[] = [];
    const shards: number[] = [];
    const encodedFrom: Tick[] = [];
    let chunk = 0;
    let pending: Tick[] = [];
    const handOver = () => {
      const { columns } = packer.take();
      // Alternate: the table must grow the same whichever way a chunk is taken.
      if (chunk++ % 2 === 0) {
        const encoded = encodeChunks(unpacker, [columns], 4);
        expect(encoded.shardCount).toBe(4);
        rows.push(...encoded.rows);
        shards.push(...encoded.shards);
        encodedFrom.push(...pending);
      } else {
        expect(unpacker.unpack(columns)).toEqual(pending);
      }
      pending = [];
    };
    for (const t of more) {
      if (!packer.add(t)) {
        handOver();
        packer.add(t);
      }
      pending.push(t);
    }
    handOver();
    expect(chunk).toBe(3);
    expect(encodedFrom.length).toBeGreaterThan(2);
    expect(rows).toEqual(encodedFrom.map(encodeTick));
    expect(shards).toEqual(encodedFrom.map((t) => shardOf(t.symbol, 4)));
    // A new shard count is honoured (the cache is per count).
    packer.add(more[0]!);
    expect([...encodeChunks(unpacker, [packer.take().columns], 7).shards]).toEqual([
      shardOf(more[0]!.symbol, 7),
    ]);
  });

  it('hands over a partial chunk in buffers sized to its ticks, a full one in the packer arrays', () => {
    const packer = new TickPacker(1024);
    packer.add(ticks[0]!);
    packer.add(ticks[1]!);
    const partial = packer.take();
    // Two ticks: 2 kinds, 6 names (4 bytes), 2 ts and seqs (8 bytes), 8 values (8 bytes).
    expect(partial.transfer.map((b) => b.byteLength)).toEqual([2, 24, 16, 16, 64]);
    const full = new TickPacker(2);
    full.add(ticks[0]!);
    full.add(ticks[1]!);
    expect(full.add(ticks[2]!)).toBe(false);
    const whole = full.take();
    expect(whole.transfer.map((b) => b.byteLength)).toEqual([2, 24, 16, 16, 64]);
    expect(whole.columns.kinds.buffer).toBe(whole.transfer[0]);
    // Chunks that span several reads come back in order, encoded together.
    const unpacker = new TickUnpacker();
    const a = new TickPacker(8);
    a.add(ticks[0]!);
    const first = a.take().columns;
    a.add(ticks[1]!);
    a.add(ticks[3]!);
    const both = encodeChunks(unpacker, [first, a.take().columns], 4);
    expect(both.rows).toEqual([ticks[0]!, ticks[1]!, ticks[3]!].map(encodeTick));
    expect([...both.shards]).toEqual([ticks[0]!, ticks[1]!, ticks[3]!].map((t) => shardOf(t.symbol, 4)));
  });
});
