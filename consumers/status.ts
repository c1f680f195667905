import { backlogOf, groupFacts, streamFacts } from '../shared/backlog.ts';
import { batch, pairs, type RedisClient } from '../shared/redis.ts';
import { allStreamKeys, type StreamLayout } from '../shared/streams.ts';
import { countDeadLetters } from './deadletters.ts';

/** What `tickstream status` shows of the streams: per shard, per group, per consumer, and dead letters. */
export interface ShardStatus {
  stream: string;
  length: number;
  /** Entries ever added (XINFO STREAM entries-added): the producers' throughput is its rate. */
  entriesAdded: number | null;
  firstId: string | null;
  lastId: string | null;
  groups: GroupStatus[];
}

export interface GroupStatus {
  group: string;
  /** Entries not yet delivered, from the ids when Redis's own lag is wrong (shared/backlog.ts). */
  lag: number;
  /** What Redis reports as lag (null for nil); differs from `lag` when it was overruled. */
  redisLag: number | null;
  pending: number;
  /** Entries the group has read (XINFO GROUPS entries-read): its throughput is the rate of this. */
  entriesRead: number | null;
  lastDeliveredId: string;
  /** `idle`: not seen for longer than the idle threshold; removed by live consumers once nothing is pending. */
  consumers: { name: string; pending: number; idleMs: number; idle: boolean }[];
}

export interface StreamsStatus {
  shards: ShardStatus[];
  deadLetters: { total: number; byGroup: Record<string, number> };
}

/**
 * `idleAfterMs`: a consumer not seen for this long is shown as idle (a live one reads at least every
 * TICKSTREAM_BLOCK_MS, or refreshes its claim while a batch is in hand).
 */
export async function streamsStatus(
  redis: RedisClient,
  layout: StreamLayout,
  idleAfterMs = 30_000,
): Promise<StreamsStatus> {
  const shards: ShardStatus[] = [];
  for (const stream of allStreamKeys(layout)) {
    let reply: unknown[];
    try {
      reply = (await redis.call('XINFO', 'STREAM', stream)) as unknown[];
    } catch {
      shards.push({ stream, length: 0, entriesAdded: null, firstId: null, lastId: null, groups: [] });
      continue;
    }
    const info = pairs(reply);
    const first = info.get('first-entry') as [string, unknown] | null;
    const last = info.get('last-entry') as [string, unknown] | null;
    const facts = streamFacts(reply);
    const groups: GroupStatus[] = [];
    for (const [name, g] of groupFacts((await redis.call('XINFO', 'GROUPS', stream)) as unknown[][])) {
      const consumers = ((await redis.call('XINFO', 'CONSUMERS', stream, name)) as unknown[][]).map((c) => {
        const ci = pairs(c);
        const idleMs = Number(ci.get('idle'));
        return {
          name: String(ci.get('name')),
          pending: Number(ci.get('pending')),
          idleMs,
          idle: idleMs >= idleAfterMs,
        };
      });
      const b = backlogOf(facts, g);
      groups.push({
        group: name,
        lag: b.undelivered,
        redisLag: b.redisLag,
        pending: g.pending,
        entriesRead: g.entriesRead ?? null,
        lastDeliveredId: g.lastDeliveredId,
        consumers,
      });
    }
    shards.push({
      stream,
      length: Number(info.get('length')),
      entriesAdded: info.has('entries-added') ? Number(info.get('entries-added')) : null,
      firstId: first?.[0] ?? null,
      lastId: last?.[0] ?? null,
      groups,
    });
  }
  return { shards, deadLetters: await countDeadLetters(redis, layout) };
}

/**
 * Lag and pending of one group on every shard, in one pipelined round trip (for metrics). The lag is the
 * certain backlog of shared/backlog.ts, not Redis's `lag` (stale for good after an AOF reload); null when the
 * group is behind and Redis cannot say by how much.
 */
export async function groupBacklog(
  redis: RedisClient,
  layout: StreamLayout,
  group: string,
): Promise<{ stream: string; lag: number | null; pending: number; entriesRead: number | null }[]> {
  const streams = allStreamKeys(layout);
  const replies = await batch(
    redis,
    streams.flatMap((s) => [['XINFO', 'GROUPS', s] as const, ['XINFO', 'STREAM', s] as const]),
  );
  const out: { stream: string; lag: number | null; pending: number; entriesRead: number | null }[] = [];
  streams.forEach((stream, i) => {
    const [err, groups] = replies[2 * i]!;
    const [streamErr, info] = replies[2 * i + 1]!;
    if (err !== null || streamErr !== null) return;
    const facts = groupFacts(groups as unknown[][]).get(group);
    if (facts === undefined) return;
    const b = backlogOf(streamFacts(info as unknown[]), facts);
    out.push({
      stream,
      lag: facts.lag === null && b.undelivered > 0 ? null : b.undelivered,
      pending: facts.pending,
      entriesRead: facts.entriesRead ?? null,
    });
  });
  return out;
}
