import { describe, expect, it } from 'vitest';
import { backlogOf, LagCorrector } from '../../shared/backlog.ts';

const stream = { length: 100, lastEntryId: '1000-5' };

describe('backlog from what is certain', () => {
  it('is 0 when the group has delivered the last entry, whatever Redis reports as lag', () => {
    const b = backlogOf(stream, { lastDeliveredId: '1000-5', lag: 62, pending: 0 });
    expect(b).toEqual({ undelivered: 0, pending: 0, redisLag: 62, lagOverruled: true });
    expect(
      backlogOf({ length: 0, lastEntryId: null }, { lastDeliveredId: '0-0', lag: 4400, pending: 3 }),
    ).toEqual({ undelivered: 0, pending: 3, redisLag: 4400, lagOverruled: true });
  });

  it('uses the lag behind the last entry, capped by the length and never below 1; the length for nil', () => {
    expect(backlogOf(stream, { lastDeliveredId: '1000-1', lag: 4, pending: 2 }).undelivered).toBe(4);
    expect(backlogOf(stream, { lastDeliveredId: '1000-1', lag: 4400, pending: 0 }).undelivered).toBe(100);
    expect(backlogOf(stream, { lastDeliveredId: '1000-1', lag: 0, pending: 0 }).undelivered).toBe(1);
    expect(backlogOf(stream, { lastDeliveredId: '999-0', lag: null, pending: 0 }).undelivered).toBe(100);
  });

  it('a corrector subtracts the error measured while caught up, and forgets it once Redis reads 0', () => {
    const c = new LagCorrector();
    expect(c.backlog('s', 'g', stream, { lastDeliveredId: '1000-5', lag: 62, pending: 0 }).undelivered).toBe(
      0,
    );
    const later = { length: 110, lastEntryId: '1001-9' };
    expect(c.backlog('s', 'g', later, { lastDeliveredId: '1001-0', lag: 72, pending: 0 }).undelivered).toBe(
      10,
    );
    expect(
      c.backlog('s', 'other', later, { lastDeliveredId: '1001-0', lag: 72, pending: 0 }).undelivered,
    ).toBe(72);
    expect(c.backlog('s', 'g', later, { lastDeliveredId: '1001-9', lag: 0, pending: 0 }).undelivered).toBe(0);
    expect(c.backlog('s', 'g', later, { lastDeliveredId: '1001-0', lag: 9, pending: 0 }).undelivered).toBe(9);
  });
});
