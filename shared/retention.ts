import type { Config } from './config.ts';
import { errorMessage } from './errors.ts';
import { pairs, type RedisClient } from './redis.ts';
import { allStreamKeys, compareStreamIds, nextStreamId, type StreamLayout } from './streams.ts';

/**
 * Retention: trim the shard streams by age and/or size, but never past an entry some consumer group still
 * needs. A group needs its oldest pending entry (delivered, not acknowledged) and everything after its
 * last-delivered id. The trim bound is the lowest of those over all groups, applied with XTRIM MINID.
 *
 * Groups only move forward, so a bound computed a moment ago stays safe while XTRIM runs. A group created
 * after the bound was computed (with XGROUP CREATE ... 0) is not protected: create groups before trimming
 * starts, as `tickstream consume` does on start.
 */
export type RetentionSettings = Config['retention'];

export interface TrimResult {
  stream: string;
  length: number;
  trimmed: number;
  /** The MINID used, or undefined when nothing was to be trimmed. */
  minId?: string;
  /** The group whose unacknowledged entries stopped the trim short of the age/size target. */
  heldBackBy?: string;
}

/** How far the size bound may scan per pass; trimming runs often, so the excess is normally small. */
const MAX_SIZE_SCAN = 10_000;

export async function trimStreams(
  redis: RedisClient,
  layout: StreamLayout,
  settings: RetentionSettings,
  nowMs = Date.now(),
): Promise<TrimResult[]> {
  const results: TrimResult[] = [];
  for (const stream of allStreamKeys(layout)) results.push(await trimStream(redis, stream, settings, nowMs));
  return results;
}

export async function trimStream(
  redis: RedisClient,
  stream: string,
  settings: RetentionSettings,
  nowMs: number,
): Promise<TrimResult> {
  const length = await redis.xlen(stream);
  let target: string | undefined;
  if (settings.maxAgeMs > 0) target = `${Math.max(0, nowMs - settings.maxAgeMs)}-0`;
  if (settings.maxLen > 0 && length > settings.maxLen) {
    const excess = Math.min(length - settings.maxLen, MAX_SIZE_SCAN);
    const head = (await redis.call('XRANGE', stream, '-', '+', 'COUNT', String(excess))) as [
      string,
      unknown,
    ][];
    const last = head[head.length - 1];
    if (last !== undefined) {
      const bySize = nextStreamId(last[0]);
      if (target === undefined || compareStreamIds(bySize, target) > 0) target = bySize;
    }
  }
  if (target === undefined || length === 0) return { stream, length, trimmed: 0 };

  const needed = await groupBounds(redis, stream);
  let minId = target;
  let heldBackBy: string | undefined;
  for (const [group, bound] of needed) {
    if (compareStreamIds(bound, minId) < 0) {
      minId = bound;
      heldBackBy = group;
    }
  }
  const trimmed = Number(await redis.call('XTRIM', stream, 'MINID', minId));
  return { stream, length, trimmed, minId, ...(heldBackBy !== undefined ? { heldBackBy } : {}) };
}

/** For each group: the lowest id it still needs. */
export async function groupBounds(redis: RedisClient, stream: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let groups: unknown[][];
  try {
    groups = (await redis.call('XINFO', 'GROUPS', stream)) as unknown[][];
  } catch (err) {
    // Only a missing stream means "no groups". Any other failure (LOADING, BUSY, ACL...) must stop the trim:
    // trimming without knowing the groups could remove entries they have not read.
    if (errorMessage(err).includes('no such key')) return out;
    throw err;
  }
  for (const g of groups) {
    const info = pairs(g);
    const name = String(info.get('name'));
    let bound = nextStreamId(String(info.get('last-delivered-id') ?? '0-0'));
    if (Number(info.get('pending') ?? 0) > 0) {
      const summary = (await redis.call('XPENDING', stream, name)) as [
        number,
        string | null,
        string | null,
        unknown,
      ];
      const oldest = summary[1];
      if (oldest !== null && compareStreamIds(oldest, bound) < 0) bound = oldest;
    }
    out.set(name, bound);
  }
  return out;
}
