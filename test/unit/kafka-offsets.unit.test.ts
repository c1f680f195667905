import { describe, expect, it } from 'vitest';
import { committableOffset, OffsetTracker } from '../../producers/kafka-offsets.ts';

function tracker(...offsets: number[]): OffsetTracker {
  const t = new OffsetTracker();
  for (const o of offsets) t.track(String(o));
  return t;
}

describe('Kafka offset bookkeeping', () => {
  it('commits nothing until the first message is durable', () => {
    const t = tracker(10, 11, 12);
    expect(t.committable()).toBeUndefined();
    expect(t.toCommit()).toBeUndefined();
    t.markDone(['11', '12']);
    expect(t.committable()).toBeUndefined();
    expect(t.pending()).toEqual([10n]);
  });

  it('commits the end of the batch (last + 1, the next offset to read) when everything is durable', () => {
    const t = tracker(10, 11, 12);
    t.markDone(['10', '11', '12']);
    expect(t.committable()).toBe(12n);
    expect(t.toCommit()).toBe('13');
  });

  it('after a partial failure commits only the fully durable prefix', () => {
    // Messages 20..25; the dead letters (21, 24) were written but the tick frame holding 22 failed.
    const t = tracker(20, 21, 22, 23, 24, 25);
    t.markDone(['20', '21', '24']); // dead letters and the first tick
    t.markDone(['23', '25']);
    expect(t.committable()).toBe(21n);
    expect(t.toCommit()).toBe('22');
    expect(t.pending()).toEqual([22n]);
    // The retry of 22 succeeds: everything is committable.
    t.markDone(['22']);
    expect(t.toCommit()).toBe('26');
  });

  it('never offers the same commit twice, and offers a higher one once more is durable', () => {
    const t = tracker(1, 2, 3);
    t.markDone(['1']);
    expect(t.toCommit()).toBe('2');
    t.markCommitted(t.committable()!);
    expect(t.toCommit()).toBeUndefined();
    t.markDone(['3']);
    expect(t.toCommit()).toBeUndefined(); // 2 is still missing
    t.markDone(['2']);
    expect(t.toCommit()).toBe('4');
  });

  it('handles gaps in the offsets (compaction, transaction markers) and 64-bit offsets', () => {
    const t = tracker(100, 105, 230);
    t.markDone(['100', '105']);
    expect(t.toCommit()).toBe('106');
    const big = new OffsetTracker();
    big.track('9223372036854775805');
    big.track('9223372036854775806');
    big.markDone(['9223372036854775805', '9223372036854775806']);
    expect(big.toCommit()).toBe('9223372036854775807');
  });

  it('refuses offsets out of order and offsets it was never handed', () => {
    const t = tracker(5, 6);
    expect(() => t.track('6')).toThrow(RangeError);
    expect(() => t.track('4')).toThrow(RangeError);
    expect(() => t.markDone(['7'])).toThrow(/not tracked/);
    expect(t.size).toBe(2);
  });

  it('the same rule as a function over outcomes', () => {
    expect(committableOffset([])).toBeUndefined();
    expect(
      committableOffset([
        { offset: '1', done: true },
        { offset: '2', done: true },
        { offset: '3', done: false },
        { offset: '4', done: true },
      ]),
    ).toBe(2n);
    expect(
      committableOffset([
        { offset: '1', done: false },
        { offset: '2', done: true },
      ]),
    ).toBeUndefined();
  });
});
