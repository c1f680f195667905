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
    maxRetriesPerRequest: null as null,
    enableAutoPipelining: false,
    ...(options.blocking === true ? { blockingTimeout: 30_000 } : {}),
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
