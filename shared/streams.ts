/**
 * Stream naming and sharding.
 *
 * A symbol always maps to the same shard (FNV-1a 32-bit over its UTF-8 bytes, modulo the shard count), so the
 * order of one symbol's ticks is the order of one stream. Each shard key carries its own hash tag
 * (`ticks:{3}`), so a Redis Cluster spreads shards across nodes; a reader therefore never asks for two shards
 * in one command under Cluster.
 */
export interface StreamLayout {
  readonly prefix: string;
  readonly shards: number;
}

const encoder = new TextEncoder();

export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  const bytes = encoder.encode(text);
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Per shard count, each symbol's shard: looked up per tick on the publish path, so no key is built per call. */
const shardCache = new Map<number, Map<string, number>>();

export function shardOf(symbol: string, shards: number): number {
  let bySymbol = shardCache.get(shards);
  if (bySymbol === undefined) shardCache.set(shards, (bySymbol = new Map()));
  let s = bySymbol.get(symbol);
  if (s === undefined) {
    s = fnv1a(symbol) % shards;
    if (bySymbol.size > 100_000) bySymbol.clear();
    bySymbol.set(symbol, s);
  }
  return s;
}

export function streamKey(layout: StreamLayout, shard: number): string {
  return `${layout.prefix}:{${shard}}`;
}

export function allStreamKeys(layout: StreamLayout): string[] {
  return Array.from({ length: layout.shards }, (_, i) => streamKey(layout, i));
}

export function streamForSymbol(layout: StreamLayout, symbol: string): string {
  return streamKey(layout, shardOf(symbol, layout.shards));
}

/** Dead letters of every group and shard go to one stream; each entry names its origin. */
export function deadLetterKey(layout: StreamLayout): string {
  return `${layout.prefix}:dlq`;
}

/**
 * A group's own retry stream: `dlq requeue` puts a dead letter back here, so that only the group that failed
 * it reads it again (ADR 0006). The worker of that group reads it beside the shards and deletes each entry
 * once acknowledged.
 */
export function retryStreamKey(layout: StreamLayout, group: string): string {
  return `${layout.prefix}:retry:${group}`;
}

/** A large dead-lettered payload, stored once however many groups dead-letter it (ADR 0006). */
export function deadLetterBlobKey(layout: StreamLayout, digest: string): string {
  return `${layout.prefix}:dlq:blob:${digest}`;
}

/** Parse a stream id "ms-seq" for comparisons. */
export function parseStreamId(id: string): [bigint, bigint] {
  const dash = id.indexOf('-');
  if (dash < 0) return [BigInt(id), 0n];
  return [BigInt(id.slice(0, dash)), BigInt(id.slice(dash + 1))];
}

export function compareStreamIds(a: string, b: string): number {
  const [am, as] = parseStreamId(a);
  const [bm, bs] = parseStreamId(b);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

/** The id right after `id`: the smallest id that is still needed once `id` has been consumed. */
export function nextStreamId(id: string): string {
  const [ms, seq] = parseStreamId(id);
  return `${ms}-${seq + 1n}`;
}
