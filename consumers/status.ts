import { batch, pairs, type RedisClient } from '../shared/redis.ts';
import { allStreamKeys, type StreamLayout } from '../shared/streams.ts';
import { countDeadLetters } from './deadletters.ts';

/** What `tickstream status` shows of the streams: per shard, per group, per consumer, and dead letters. */
export interface ShardStatus {
  stream: string;
  length: number;
  firstId: string | null;
  lastId: string | null;
  /** Entries ever added to the stream (Redis 7 `entries-added`), for rates; null when unknown. */
  entriesAdded: number | null;
  groups: GroupStatus[];
}

export interface GroupStatus {
  group: string;
  lag: number | null;
  pending: number;
  lastDeliveredId: string;
  /** Entries the group has read (Redis 7 `entries-read`), for rates; null when unknown. */
  entriesRead: number | null;
  consumers: { name: string; pending: number; idleMs: number }[];
}

export interface StreamsStatus {
  shards: ShardStatus[];
  deadLetters: { total: number; byGroup: Record<string, number> };
}

export async function streamsStatus(redis: RedisClient, layout: StreamLayout): Promise<StreamsStatus> {
  const shards: ShardStatus[] = [];
  for (const stream of allStreamKeys(layout)) {
    let info: Map<string, unknown>;
    try {
      info = pairs((await redis.call('XINFO', 'STREAM', stream)) as unknown[]);
    } catch {
      shards.push({ stream, length: 0, firstId: null, lastId: null, entriesAdded: null, groups: [] });
      continue;
    }
    const first = info.get('first-entry') as [string, unknown] | null;
    const last = info.get('last-entry') as [string, unknown] | null;
    const groups: GroupStatus[] = [];
    for (const g of (await redis.call('XINFO', 'GROUPS', stream)) as unknown[][]) {
      const gi = pairs(g);
      const name = String(gi.get('name'));
      const consumers = ((await redis.call('XINFO', 'CONSUMERS', stream, name)) as unknown[][]).map((c) => {
        const ci = pairs(c);
        return {
          name: String(ci.get('name')),
          pending: Number(ci.get('pending')),
          idleMs: Number(ci.get('idle')),
        };
      });
      const lag = gi.get('lag');
      const read = gi.get('entries-read');
      groups.push({
        entriesRead: read === null || read === undefined ? null : Number(read),
        group: name,
        lag: lag === null || lag === undefined ? null : Number(lag),
        pending: Number(gi.get('pending')),
        lastDeliveredId: String(gi.get('last-delivered-id')),
        consumers,
      });
    }
    shards.push({
      stream,
      length: Number(info.get('length')),
      firstId: first?.[0] ?? null,
      lastId: last?.[0] ?? null,
      entriesAdded: info.has('entries-added') ? Number(info.get('entries-added')) : null,
      groups,
    });
  }
  return { shards, deadLetters: await countDeadLetters(redis, layout) };
}

/** Lag and pending of one group on every shard, in one pipelined round trip (for metrics). */
export async function groupBacklog(
  redis: RedisClient,
  layout: StreamLayout,
  group: string,
): Promise<{ stream: string; lag: number | null; pending: number; entriesRead: number | null }[]> {
  const streams = allStreamKeys(layout);
  const replies = await batch(
    redis,
    streams.map((s) => ['XINFO', 'GROUPS', s] as const),
  );
  const out: { stream: string; lag: number | null; pending: number; entriesRead: number | null }[] = [];
  streams.forEach((stream, i) => {
    const [err, groups] = replies[i]!;
    if (err !== null) return;
    for (const g of groups as unknown[][]) {
      const info = pairs(g);
      if (info.get('name') !== group) continue;
      const lag = info.get('lag');
      const read = info.get('entries-read'); // Redis 7+; nil until the group has read from a known position
      out.push({
        stream,
        lag: lag === null || lag === undefined ? null : Number(lag),
        pending: Number(info.get('pending')),
        entriesRead: read === null || read === undefined ? null : Number(read),
      });
    }
  });
  return out;
}
