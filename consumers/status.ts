import { pairs, type RedisClient } from '../shared/redis.ts';
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
  lag: number | null;
  pending: number;
  /** Entries the group has read (XINFO GROUPS entries-read): its throughput is the rate of this. */
  entriesRead: number | null;
  lastDeliveredId: string;
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
      shards.push({ stream, length: 0, entriesAdded: null, firstId: null, lastId: null, groups: [] });
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
        group: name,
        lag: lag === null || lag === undefined ? null : Number(lag),
        pending: Number(gi.get('pending')),
        entriesRead: read === null || read === undefined ? null : Number(read),
        lastDeliveredId: String(gi.get('last-delivered-id')),
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
