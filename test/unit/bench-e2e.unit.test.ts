import { describe, expect, it } from 'vitest';
import { slope } from '../../bench/e2e.ts';

/** The e2e benchmark's test of a growing backlog: the least-squares trend over a step's second half. */
describe('bench e2e: backlog trend', () => {
  it('is the rate of a backlog that grows steadily', () => {
    const points = Array.from({ length: 21 }, (_, i) => [i / 2, 100 + 30 * (i / 2)] as const);
    expect(slope(points)).toBeCloseTo(30, 9);
  });

  it('is about zero for a sawtooth that keeps up (a large read drained every 2 s)', () => {
    const points = Array.from({ length: 40 }, (_, i) => [i / 2, ((i / 2) % 2) * 500] as const);
    expect(Math.abs(slope(points))).toBeLessThan(15);
  });

  it('catches growth hidden in a sawtooth', () => {
    const points = Array.from({ length: 40 }, (_, i) => [i / 2, ((i / 2) % 2) * 500 + 40 * (i / 2)] as const);
    expect(slope(points)).toBeGreaterThan(25);
  });

  it('is zero without two distinct times', () => {
    expect(slope([])).toBe(0);
    expect(slope([[1, 5]])).toBe(0);
    expect(
      slope([
        [1, 5],
        [1, 9],
      ]),
    ).toBe(0);
  });
});
