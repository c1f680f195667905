import { describe, expect, it } from 'vitest';
import { floorGrowth } from '../../bench/e2e.ts';

/** The e2e benchmark's test of a growing backlog: how far its floor rose from the third quarter to the last. */
describe('bench e2e: backlog floor growth', () => {
  const step = (backlog: (t: number) => number) =>
    Array.from({ length: 41 }, (_, i) => [i / 2, backlog(i / 2)] as const);

  it('is the rise of a backlog that grows steadily', () => {
    expect(
      floorGrowth(
        step((t) => 100 + 30 * t),
        20,
      ),
    ).toBe(150);
  });

  it('is zero for a tall sawtooth that keeps up (a large read drained every 2 s)', () => {
    expect(
      floorGrowth(
        step((t) => (t % 2) * 700),
        20,
      ),
    ).toBe(0);
  });

  it('catches a sawtooth whose floor rises', () => {
    expect(
      floorGrowth(
        step((t) => (t % 2) * 700 + 40 * t),
        20,
      ),
    ).toBeGreaterThan(150);
  });

  it('is zero when a quarter has no sample', () => {
    expect(floorGrowth([], 20)).toBe(0);
    expect(floorGrowth([[16, 500]], 20)).toBe(0);
  });
});
