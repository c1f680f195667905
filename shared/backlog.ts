import { batch, pairs, type RedisClient } from './redis.ts';
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
 * A group's backlog is the sum over every shard it reads (groupBacklogs), because that sum is what Redis must
 * hold for it: the producer's high-water mark bounds that total, not a shard. This module is the one place that
 * turns XINFO replies into a backlog; the producer's backpressure and `status` both read it.
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
  /** Entries the group has read (its throughput is the rate of this); null when Redis cannot say. */
  entriesRead?: number | null;
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
    const read = info.get('entries-read');
    out.set(String(info.get('name')), {
      lastDeliveredId: String(info.get('last-delivered-id') ?? '0-0'),
      entriesRead: read === null || read === undefined ? null : Number(read),
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

export interface GroupBacklog {
  group: string;
  /** Entries not yet acknowledged (undelivered + pending), summed over the shards. */
  entries: number;
  /** Of which delivered but not acknowledged. */
  pending: number;
  /** Shards whose lag Redis could not state (nil) while entries were undelivered: their length was counted. */
  estimatedShards: number;
}

/**
 * Every group's backlog over the given shard streams. Streams that do not exist or have no group add nothing;
 * any other error (LOADING, a dropped connection) is thrown, never taken for an empty backlog.
 */
export async function groupBacklogs(
  redis: RedisClient,
  streams: readonly string[],
  corrector?: LagCorrector,
): Promise<GroupBacklog[]> {
  const replies = await batch(
    redis,
    streams.flatMap((key) => [['XINFO', 'GROUPS', key] as const, ['XINFO', 'STREAM', key] as const]),
  );
  const byGroup = new Map<string, GroupBacklog>();
  streams.forEach((key, i) => {
    const [err, groups] = replies[2 * i] ?? [null, []];
    const [streamErr, stream] = replies[2 * i + 1] ?? [null, []];
    const failed = err ?? streamErr;
    if (failed !== null) {
      if (failed.message.includes('no such key')) return;
      throw failed;
    }
    const facts = streamFacts(stream as unknown[]);
    for (const [name, group] of groupFacts(groups as unknown[][])) {
      const b =
        corrector === undefined ? backlogOf(facts, group) : corrector.backlog(key, name, facts, group);
      const total = byGroup.get(name) ?? { group: name, entries: 0, pending: 0, estimatedShards: 0 };
      total.entries += b.undelivered + b.pending;
      total.pending += b.pending;
      if (group.lag === null && b.undelivered > 0) total.estimatedShards++;
      byGroup.set(name, total);
    }
  });
  return [...byGroup.values()];
}

/** The slowest group's total backlog (0 when no stream has a group), which group it is, and how many groups. */
export async function slowestGroupBacklog(
  redis: RedisClient,
  streams: readonly string[],
  corrector?: LagCorrector,
): Promise<{ entries: number; group?: string; groups: number }> {
  const all = await groupBacklogs(redis, streams, corrector);
  let worst: { entries: number; group?: string; groups: number } = { entries: 0, groups: all.length };
  for (const g of all) {
    if (g.entries > worst.entries) worst = { entries: g.entries, group: g.group, groups: all.length };
  }
  return worst;
}
