import type { Cluster } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { closeRedis, createRedis, type RedisClient } from '../../shared/redis.ts';

let client: RedisClient | undefined;
afterEach(async () => {
  if (client !== undefined) await closeRedis(client).catch(() => undefined);
  client = undefined;
});

describe('createRedis under Cluster', () => {
  // Nothing listens on port 1: only the client's options are looked at, then it is closed.
  const config = loadConfig({ env: { REDIS_CLUSTER_NODES: '127.0.0.1:1' } });

  it('failFast reaches the Cluster itself: no offline queue, so a command fails instead of waiting', () => {
    client = createRedis(config, { failFast: true });
    const cluster = client as Cluster;
    expect(cluster.options.enableOfflineQueue).toBe(false);
    expect((cluster.options.redisOptions as { enableOfflineQueue?: boolean }).enableOfflineQueue).toBe(false);
    // Auto-pipelining at the Cluster level breaks MOVED handling: only per node, if at all.
    expect(cluster.options.enableAutoPipelining).not.toBe(true);
  });

  it('queues commands while connecting otherwise', () => {
    client = createRedis(config);
    expect((client as Cluster).options.enableOfflineQueue).toBe(true);
  });
});
