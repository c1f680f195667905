import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { parseVersion, versionAtLeast, WAITAOF_SINCE } from '../../producers/durability.ts';
import { generate, scaled, truthOf, SOURCE, START_NS, STEP_NS } from '../../chaos/dataset.ts';

describe('producer durability settings', () => {
  it('reads TICKSTREAM_PRODUCER_DURABILITY and its companions, ack by default', () => {
    expect(loadConfig({ env: {} }).producer).toMatchObject({
      durability: 'ack',
      durabilityReplicas: 1,
      durabilityTimeoutMs: 5000,
    });
    expect(
      loadConfig({
        env: {
          TICKSTREAM_PRODUCER_DURABILITY: 'replica',
          TICKSTREAM_PRODUCER_REPLICAS: '2',
          TICKSTREAM_PRODUCER_DURABILITY_TIMEOUT_MS: '250',
        },
      }).producer,
    ).toMatchObject({ durability: 'replica', durabilityReplicas: 2, durabilityTimeoutMs: 250 });
    expect(() => loadConfig({ env: { TICKSTREAM_PRODUCER_DURABILITY: 'always' } })).toThrow(
      /TICKSTREAM_PRODUCER_DURABILITY: .*"ack".*"fsync".*"replica".*\(got "always"\)/,
    );
  });

  it('compares Redis versions against WAITAOF’s 7.2', () => {
    expect(parseVersion('7.0.15')).toEqual([7, 0, 15]);
    expect(parseVersion('7.2.4')).toEqual([7, 2, 4]);
    expect(versionAtLeast(parseVersion('7.0.15'), WAITAOF_SINCE)).toBe(false);
    expect(versionAtLeast(parseVersion('7.1.999'), WAITAOF_SINCE)).toBe(false);
    expect(versionAtLeast(parseVersion('7.2.0'), WAITAOF_SINCE)).toBe(true);
    expect(versionAtLeast(parseVersion('8.0.1'), WAITAOF_SINCE)).toBe(true);
    expect(versionAtLeast(parseVersion('10.0.0'), WAITAOF_SINCE)).toBe(true);
  });
});

describe('chaos data set and ground truth', () => {
  it('is deterministic, on a fixed clock, with unique identities', () => {
    const a = generate(2000, 5, 7);
    const b = generate(2000, 5, 7);
    expect(a).toEqual(b);
    expect(a[0]!.ts).toBe(START_NS);
    expect(a[1999]!.ts).toBe(START_NS + 1999n * STEP_NS);
    expect(new Set(a.map((t) => `${t.source}|${t.symbol}|${t.ts}|${t.seq}`)).size).toBe(2000);
    expect(a.every((t) => t.source === SOURCE)).toBe(true);
    expect(generate(2000, 5, 8)).not.toEqual(a);
  });

  it('scales decimals exactly and refuses what it cannot', () => {
    expect(scaled('415.41')).toBe(41_541_000_000n);
    expect(scaled(0.1)).toBe(10_000_000n);
    expect(scaled('1500')).toBe(150_000_000_000n);
    expect(scaled('12.3456789012345678', 16)).toBe(123_456_789_012_345_678n);
    expect(() => scaled('1.123456789')).toThrow(/too many decimals/);
    expect(() => scaled(1e-9)).toThrow(/cannot scale/);
  });

  it('computes counts, Σ price × size, 1-minute bar volume and the newest quote by hand-checked examples', () => {
    const base = { source: 's', venue: '' } as const;
    const t = truthOf([
      { ...base, type: 'trade', symbol: 'A', ts: 60_000_000_000n, seq: 1, price: 10.5, size: 2, side: 'buy' },
      { ...base, type: 'trade', symbol: 'A', ts: 119_999_999_999n, seq: 2, price: 0.1, size: 3, side: '' },
      { ...base, type: 'trade', symbol: 'A', ts: 120_000_000_000n, seq: 3, price: 1, size: 1, side: 'sell' },
      {
        ...base,
        type: 'quote',
        symbol: 'A',
        ts: 5n,
        seq: 9,
        bidPrice: 1,
        bidSize: 1,
        askPrice: 2,
        askSize: 1,
      },
      {
        ...base,
        type: 'quote',
        symbol: 'A',
        ts: 5n,
        seq: 10,
        bidPrice: 3,
        bidSize: 1,
        askPrice: 4,
        askSize: 1,
      },
      {
        ...base,
        type: 'quote',
        symbol: 'A',
        ts: 4n,
        seq: 11,
        bidPrice: 5,
        bidSize: 1,
        askPrice: 6,
        askSize: 1,
      },
    ]);
    expect([t.trades, t.quotes]).toEqual([3, 3]);
    // 10.5×2 + 0.1×3 + 1×1 = 22.3, scaled by 10^16.
    expect(t.notional.get('A')).toBe(223_000_000_000_000_000n);
    expect(t.barVolume.get('A|60000000000')).toBe(500_000_000n);
    expect(t.barTrades.get('A|60000000000')).toBe(2);
    expect(t.barVolume.get('A|120000000000')).toBe(100_000_000n);
    expect(t.lastQuote.get('A')?.seq).toBe(10);
  });
});
