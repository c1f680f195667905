import { describe, expect, it } from 'vitest';
import {
  allStreamKeys,
  compareStreamIds,
  fnv1a,
  nextStreamId,
  shardOf,
  streamKey,
} from '../../shared/streams.ts';
import { SyntheticMarket, mulberry32 } from '../../producers/synthetic.ts';

describe('sharding', () => {
  it('uses FNV-1a 32 (known vectors)', () => {
    expect(fnv1a('')).toBe(0x811c9dc5);
    expect(fnv1a('a')).toBe(0xe40c292c);
    expect(fnv1a('foobar')).toBe(0xbf9cf968);
  });

  it('maps a symbol to the same shard every time and spreads symbols', () => {
    const counts = new Array(4).fill(0);
    for (let i = 0; i < 4000; i++) counts[shardOf(`S${i}`, 4)]++;
    for (const c of counts) expect(c).toBeGreaterThan(800);
  });

  it('shards by FNV-1a over the UTF-8 bytes, the same whatever was asked before (the cache)', () => {
    // An independent FNV-1a over the bytes, so the production hash and its cache are checked against
    // something other than themselves; non-ASCII symbols make the UTF-8 encoding matter.
    const reference = (s: string): number => {
      let h = 0x811c9dc5n;
      for (const b of Buffer.from(s, 'utf8')) h = ((h ^ BigInt(b)) * 0x01000193n) & 0xffffffffn;
      return Number(h);
    };
    const symbols = [
      'AAPL',
      'BRK.B',
      'BTC-USD',
      'ÆRO',
      '株式',
      ...Array.from({ length: 200 }, (_, i) => `S${i}`),
    ];
    for (const shards of [1, 3, 4, 16, 4]) {
      for (const s of symbols) expect(shardOf(s, shards), `${s} over ${shards}`).toBe(reference(s) % shards);
    }
    expect(shardOf('AAPL', 4)).toBe(3); // pinned: changing it would move every symbol to another stream
  });

  it('hash-tags each shard on its own', () => {
    expect(streamKey({ prefix: 'ticks', shards: 4 }, 3)).toBe('ticks:{3}');
    expect(allStreamKeys({ prefix: 'x', shards: 2 })).toEqual(['x:{0}', 'x:{1}']);
  });

  it('orders stream ids numerically', () => {
    expect(compareStreamIds('9-1', '10-0')).toBe(-1);
    expect(compareStreamIds('10-2', '10-10')).toBe(-1);
    expect(nextStreamId('5-9')).toBe('5-10');
  });
});

describe('synthetic market', () => {
  it('is reproducible for a seed and keeps bid < ask', () => {
    const clock = () => 1_700_000_000_000_000_000n;
    const a = new SyntheticMarket({ symbols: ['A', 'B'], seed: 7, source: 's', clock }).next(500);
    const b = new SyntheticMarket({ symbols: ['A', 'B'], seed: 7, source: 's', clock }).next(500);
    expect(a).toEqual(b);
    for (const t of a) if (t.type === 'quote') expect(t.bidPrice).toBeLessThan(t.askPrice);
    expect(a.some((t) => t.type === 'trade')).toBe(true);
  });

  it('gives strictly increasing timestamps and sequence numbers per source', () => {
    const ticks = new SyntheticMarket({ symbols: ['A'], seed: 1, source: 's', clock: () => 5n }).next(100);
    for (let i = 1; i < ticks.length; i++) {
      expect(ticks[i]!.ts > ticks[i - 1]!.ts).toBe(true);
      expect(ticks[i]!.seq).toBe(ticks[i - 1]!.seq + 1);
    }
  });

  it('uses a uniform PRNG in [0, 1)', () => {
    const r = mulberry32(3);
    let sum = 0;
    for (let i = 0; i < 10_000; i++) {
      const v = r();
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(1);
      sum += v;
    }
    expect(sum / 10_000).toBeGreaterThan(0.48);
    expect(sum / 10_000).toBeLessThan(0.52);
  });
});
