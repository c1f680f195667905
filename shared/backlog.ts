import { batch, pairs, type RedisClient } from './redis.ts';

/**
 * How far behind each consumer group is, in stream entries: the one place that turns XINFO replies into a
 * backlog. The producer's backpressure reads it (producers/publisher.ts); anything else that needs "how much
 * is a group still to do" should call it too, so there is one definition to correct.
 *
 * A group's backlog on one shard is what it has not acknowledged there: the entries not yet delivered to it
 * (Redis' `lag`) plus the delivered ones still pending. A group's backlog is the sum over every shard it
 * reads, because that sum is what Redis must hold for it; the high-water mark bounds that total, not a shard.
 */
export interface GroupBacklog {
  group: string;
  /** Entries not yet acknowledged, summed over the shards. */
  entries: number;
  /** Of which delivered but not acknowledged. */
  pending: number;
  /** Shards whose lag Redis could not state (reported as nil); their whole length was counted. */
  estimatedShards: number;
}

/** The backlog of one group on one shard, from its XINFO GROUPS record and the stream's length. */
export function shardBacklog(
  info: ReadonlyMap<string, unknown>,
  streamLength: number,
): { entries: number; pending: number; estimated: boolean } {
  const pending = Number(info.get('pending') ?? 0);
  // Redis reports lag as nil when it cannot compute it (entries deleted in range); the stream length is then a
  // safe upper bound.
  const lagRaw = info.get('lag');
  const estimated = lagRaw === null || lagRaw === undefined;
  const lag = estimated ? streamLength : Number(lagRaw);
  return { entries: lag + pending, pending, estimated };
}

/** Every group's backlog over the given shard streams. Streams that do not exist or have no group add nothing. */
export async function groupBacklogs(redis: RedisClient, streams: readonly string[]): Promise<GroupBacklog[]> {
  const replies = await batch(
    redis,
    streams.flatMap((key) => [['XINFO', 'GROUPS', key] as const, ['XLEN', key] as const]),
  );
  const byGroup = new Map<string, GroupBacklog>();
  streams.forEach((_, i) => {
    const [err, groups] = replies[2 * i] ?? [null, []];
    if (err !== null) {
      // Only a missing stream means "no groups here"; anything else (LOADING, a dropped connection) must not
      // pass for an empty backlog.
      if (err.message.includes('no such key')) return;
      throw err;
    }
    const length = Number(replies[2 * i + 1]?.[1] ?? 0);
    for (const g of groups as unknown[][]) {
      const info = pairs(g);
      const name = String(info.get('name'));
      const one = shardBacklog(info, length);
      const total = byGroup.get(name) ?? { group: name, entries: 0, pending: 0, estimatedShards: 0 };
      total.entries += one.entries;
      total.pending += one.pending;
      if (one.estimated) total.estimatedShards++;
      byGroup.set(name, total);
    }
  });
  return [...byGroup.values()];
}

/** The slowest group's total backlog (0 when no stream has a group), which group it is, and how many groups. */
export async function slowestGroupBacklog(
  redis: RedisClient,
  streams: readonly string[],
): Promise<{ entries: number; group?: string; groups: number }> {
  const all = await groupBacklogs(redis, streams);
  let worst: { entries: number; group?: string; groups: number } = { entries: 0, groups: all.length };
  for (const g of all) {
    if (g.entries > worst.entries) worst = { entries: g.entries, group: g.group, groups: all.length };
  }
  return worst;
}
