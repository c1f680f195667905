import { pairs } from './redis.ts';
import { compareStreamIds } from './streams.ts';

/**
 * How far a consumer group is behind on one stream, from what is certain rather than from Redis's `lag`.
 *
 * Redis computes `lag` from counters (entries-added, the group's entries-read) that an AOF reload, a cut AOF
 * or deletions in range leave stale: after a restart it was seen reporting 62 or 4,400 for groups that had
 * everything delivered and nothing pending, for good, so `status` never showed 0 and a producer held back
 * by it never resumed. The group's last-delivered id and the stream's last entry are certain, so:
 * - last-delivered id at or past the last entry: nothing is undelivered (0), whatever `lag` says;
 * - otherwise `lag` when Redis has one, capped by the stream's length (no more entries can follow);
 * - otherwise (nil lag) the stream's length, an upper bound.
 * A long-lived reader (the producer's backpressure) keeps a LagCorrector: the lag Redis reports at a moment
 * the group is caught up is its counters' error, which stays constant as entries are added and read, so it
 * is subtracted from later readings (until the next caught-up reading measures it again).
 */
export interface StreamFacts {
  length: number;
  /** Id of the newest entry still in the stream, null when empty. */
  lastEntryId: string | null;
}

export interface GroupFacts {
  lastDeliveredId: string;
  /** Redis's own figure, null when it reports nil. */
  lag: number | null;
  pending: number;
}

export interface Backlog {
  /** Entries not yet delivered to the group (see above). */
  undelivered: number;
  /** Delivered, not acknowledged. */
  pending: number;
  /** What Redis reported as lag, for comparison; null for nil. */
  redisLag: number | null;
  /** Whether Redis's lag was overruled because it contradicts the ids. */
  lagOverruled: boolean;
}

export function backlogOf(stream: StreamFacts, group: GroupFacts, lagError = 0): Backlog {
  const { lag, pending } = group;
  let undelivered: number;
  if (stream.lastEntryId === null || compareStreamIds(group.lastDeliveredId, stream.lastEntryId) >= 0) {
    undelivered = 0;
  } else if (lag !== null && Number.isFinite(lag) && lag >= 0) {
    // Not caught up: at least one entry is undelivered, and no more than the stream holds.
    undelivered = Math.max(1, Math.min(lag - lagError, stream.length));
  } else {
    undelivered = stream.length;
  }
  return {
    undelivered,
    pending,
    redisLag: lag,
    lagOverruled: lag !== null && lag !== undelivered,
  };
}

/** Facts of a stream from an `XINFO STREAM` reply. */
export function streamFacts(xinfoStream: readonly unknown[]): StreamFacts {
  const info = pairs(xinfoStream);
  const last = info.get('last-entry') as [unknown, unknown] | null | undefined;
  return {
    length: Number(info.get('length') ?? 0),
    lastEntryId: last === null || last === undefined ? null : String(last[0]),
  };
}

/** Facts of each group from an `XINFO GROUPS` reply, by name. */
export function groupFacts(xinfoGroups: readonly unknown[][]): Map<string, GroupFacts> {
  const out = new Map<string, GroupFacts>();
  for (const g of xinfoGroups) {
    const info = pairs(g);
    const lag = info.get('lag');
    out.set(String(info.get('name')), {
      lastDeliveredId: String(info.get('last-delivered-id') ?? '0-0'),
      lag: lag === null || lag === undefined ? null : Number(lag),
      pending: Number(info.get('pending') ?? 0),
    });
  }
  return out;
}

/** Remembers, per stream and group, the lag Redis reported while the group was caught up (see above). */
export class LagCorrector {
  private readonly errors = new Map<string, number>();

  backlog(streamKey: string, groupName: string, stream: StreamFacts, group: GroupFacts): Backlog {
    const key = `${streamKey}\u0000${groupName}`;
    const b = backlogOf(stream, group, this.errors.get(key) ?? 0);
    if (b.undelivered === 0 && group.lag !== null) {
      if (group.lag === 0) this.errors.delete(key);
      else this.errors.set(key, group.lag);
    }
    return b;
  }
}
