import { describe, expect, it } from 'vitest';
import { archiveRange, MAX_ID, MAX_SEQ, MIN_ID, parseBound, streamRange } from '../../consumers/replay.ts';
import { ConfigError } from '../../shared/errors.ts';

const MS = 1_709_303_400_000;

describe('replay bounds', () => {
  it('accepts stream ids as they are', () => {
    expect(parseBound('1709303400000-5', '--from')).toEqual({ kind: 'id', id: '1709303400000-5' });
    expect(streamRange(parseBound('1-2', '--from'), parseBound('3-4', '--to'))).toEqual({
      from: '1-2',
      to: '3-4',
    });
  });

  it('turns times into a half-open range of stream ids', () => {
    const from = parseBound('2024-03-01T14:30:00Z', '--from');
    const to = parseBound(String(MS + 1000), '--to');
    expect(from).toEqual({ kind: 'time', ns: BigInt(MS) * 1_000_000n });
    expect(streamRange(from, to)).toEqual({ from: `${MS}-0`, to: `${MS + 999}-${MAX_SEQ}` });
    // A time inside a millisecond: that millisecond's entries arrived partly before it, so they are out.
    expect(streamRange(parseBound('2024-03-01T14:30:00.0005Z', '--from'), { kind: 'open' })).toEqual({
      from: `${MS + 1}-0`,
      to: MAX_ID,
    });
  });

  it('reads a bare date as its midnight UTC, and - / + as open ends', () => {
    expect(parseBound('2024-03-01', '--from')).toEqual({
      kind: 'time',
      ns: BigInt(Date.UTC(2024, 2, 1)) * 1_000_000n,
    });
    expect(streamRange(parseBound('-', '--from'), parseBound('+', '--to'))).toEqual({
      from: MIN_ID,
      to: MAX_ID,
    });
  });

  it('gives the archive nanosecond bounds and refuses stream ids there', () => {
    expect(
      archiveRange(parseBound(String(MS), '--from'), parseBound('2024-03-01T14:30:00.000000001Z', '--to')),
    ).toEqual({
      from: BigInt(MS) * 1_000_000n,
      to: BigInt(MS) * 1_000_000n + 1n,
    });
    expect(archiveRange({ kind: 'open' }, { kind: 'open' })).toEqual({
      from: 0n,
      to: 9_223_372_036_854_775_807n,
    });
    expect(() => archiveRange(parseBound('1-0', '--from'), { kind: 'open' })).toThrow(/not stream ids/);
  });

  it('names the flag when a bound is not understood', () => {
    expect(() => parseBound('yesterday', '--from')).toThrow(ConfigError);
    expect(() => parseBound('yesterday', '--from')).toThrow(/^--from: "yesterday"/);
    expect(() => parseBound('1709303400000000000', '--to')).toThrow(/--to: .* too long for milliseconds/);
  });
});
