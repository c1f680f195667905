import { describe, expect, it } from 'vitest';
import { TickPacker, TickUnpacker } from '../../producers/feeds/handover.ts';
import type { Tick } from '../../shared/model.ts';

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
});
