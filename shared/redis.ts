import { createHash } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';

/** Either a single Redis or a Cluster: both expose the same command methods. */
export type RedisClient = Redis | Cluster;

export interface RedisOptions {
  /** A connection used for blocking reads (XREADGROUP BLOCK) must not be shared with other commands. */
  blocking?: boolean;
  /** Name shown by CLIENT LIST, to tell processes apart when operating. */
  connectionName?: string;
  /**
   * Commands fail at once while disconnected instead of queueing until the server is back (the read API
   * serves what it cached instead of waiting).
   */
  failFast?: boolean;
  log?: Logger;
}

/**
 * Connection factory for single Redis (REDIS_URL) and Redis Cluster (REDIS_CLUSTER_NODES).
 * Blocking connections get ioredis' blocking-command timeout so a half-dead socket cannot hang a reader
 * forever (the timeout fires a little after the command's own BLOCK).
 */
export function createRedis(config: Pick<Config, 'redis'>, options: RedisOptions = {}): RedisClient {
  const common = {
    connectionName: options.connectionName ?? 'tickstream',
    maxRetriesPerRequest: options.failFast === true ? 0 : (null as null),
    enableOfflineQueue: options.failFast !== true,
    // Under Cluster, multi-key batches are sent as concurrent commands (see `batch`); auto-pipelining packs
    // them per node. A blocking connection runs one command at a time and gains nothing from it.
    enableAutoPipelining: config.redis.clusterNodes.length > 0 && options.blocking !== true,
    // The client gives up on a blocking read 30 s after it was due. The grace is generous on purpose: a reply
    // that arrives after the client gave up is lost to us (its entries sit pending until reclaimed), so only a
    // dead socket should ever trip it, never a busy event loop.
    ...(options.blocking === true ? { blockingTimeout: 30_000, blockingTimeoutGrace: 10_000 } : {}),
  };
  let client: RedisClient;
  if (config.redis.clusterNodes.length > 0) {
    const nodes = config.redis.clusterNodes.map((n) => {
      const [host, port] = n.split(':');
      return { host: host!, port: Number(port) };
    });
    client = new Cluster(nodes, { redisOptions: common, scaleReads: 'master' });
  } else {
    client = new Redis(config.redis.url, common);
  }
  const log = options.log;
  if (log !== undefined) {
    let lastError = '';
    client.on('error', (err: Error) => {
      // ioredis reconnects by itself; log each distinct error once rather than on every retry.
      if (err.message !== lastError) log.warn({ err }, 'redis connection error');
      lastError = err.message;
    });
    client.on('ready', () => {
      if (lastError !== '') log.info('redis connection restored');
      lastError = '';
    });
  } else {
    client.on('error', () => undefined);
  }
  return client;
}

/** Close without throwing when the connection is already gone. */
export async function closeRedis(client: RedisClient): Promise<void> {
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}

/** XINFO replies come as flat [name, value, ...] arrays. */
export function pairs(flat: readonly unknown[]): Map<string, unknown> {
  const m = new Map<string, unknown>();
  for (let i = 0; i + 1 < flat.length; i += 2) m.set(String(flat[i]), flat[i + 1]);
  return m;
}

export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}

export type Command = readonly [name: string, ...args: (string | number)[]];
export type Reply = [Error | null, unknown];

/**
 * Send many commands in one round trip and get [error, result] per command, like pipeline.exec().
 * On a single Redis this is one pipeline. Under Cluster a pipeline must stay within one slot, and our keys
 * are spread over slots on purpose, so the commands go out concurrently and auto-pipelining batches them
 * per node.
 */
export async function batch(client: RedisClient, commands: readonly Command[]): Promise<Reply[]> {
  if (commands.length === 0) return [];
  if (!isCluster(client)) {
    const pipeline = client.pipeline();
    for (const [name, ...args] of commands) pipeline.call(name, ...args);
    return ((await pipeline.exec()) ?? []) as Reply[];
  }
  const settled = await Promise.allSettled(commands.map(([name, ...args]) => client.call(name, ...args)));
  return settled.map((s): Reply => (s.status === 'fulfilled' ? [null, s.value] : [toError(s.reason), null]));
}

/** The first error of a batch, thrown; otherwise the results. */
export function orThrow(replies: readonly Reply[]): unknown[] {
  const failed = replies.find(([err]) => err !== null);
  if (failed !== undefined) throw failed[0];
  return replies.map(([, result]) => result);
}

function toError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}

/**
 * A Lua script with one key, run for many keys in one round trip (`batch`): EVALSHA, and EVAL for the calls a
 * server answers NOSCRIPT (a new or restarted server, another Cluster node), which also caches it there.
 */
export class Script {
  readonly sha: string;
  constructor(readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async runMany(
    client: RedisClient,
    calls: readonly (readonly [key: string, ...args: string[]])[],
  ): Promise<Reply[]> {
    const results = await batch(
      client,
      calls.map(([key, ...args]) => ['EVALSHA', this.sha, 1, key, ...args] as const),
    );
    const missing = results.flatMap((r, i) => (r[0]?.message.startsWith('NOSCRIPT') === true ? [i] : []));
    if (missing.length > 0) {
      const retried = await batch(
        client,
        missing.map((i) => {
          const [key, ...args] = calls[i]!;
          return ['EVAL', this.lua, 1, key, ...args] as const;
        }),
      );
      missing.forEach((i, j) => (results[i] = retried[j]!));
    }
    return results;
  }
}

/** Delete every key under a prefix (SCAN + UNLINK): test and benchmark clean-up, never the hot path. */
export async function deleteByPrefix(client: RedisClient, prefix: string): Promise<void> {
  const nodes = isCluster(client) ? client.nodes('master') : [client];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      // One key per call: under Cluster the keys of one scan page may live in different slots.
      for (const key of keys) await client.unlink(key);
    } while (cursor !== '0');
  }
}
