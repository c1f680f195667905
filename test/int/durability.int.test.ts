import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import type { Config } from '../../shared/config.ts';
import { encodeKafkaValue } from '../../shared/kafka-codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { checkDurability, versionAtLeast, WAITAOF_SINCE } from '../../producers/durability.ts';
import { KafkaBatchProcessor } from '../../producers/kafka.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket, symbolNames } from '../../producers/synthetic.ts';
import { redisServerVersion, RedisServer, startReplicated } from '../../chaos/servers.ts';
import { runCli } from '../helpers/cli.ts';
import { testConfig, uniqueName, waitUntil } from '../helpers/index.ts';
import { messagesAt, StandInBatchPayload } from '../helpers/kafka.ts';

/**
 * Producer durability (TICKSTREAM_PRODUCER_DURABILITY) against private redis-servers started by the test:
 * a primary with a replica for `replica` (WAIT), an AOF server for `fsync` (WAITAOF, Redis ≥ 7.2).
 */
const version = redisServerVersion();
const hasRedisServer = version !== undefined;
const hasWaitAof = version !== undefined && versionAtLeast(version, WAITAOF_SINCE);
const versionText = version?.join('.') ?? 'none';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function client(url: string): Redis {
  const r = new Redis(url, { maxRetriesPerRequest: null });
  r.on('error', () => undefined);
  cleanups.push(() => closeRedis(r));
  return r;
}

function configFor(url: string, producer: Partial<Config['producer']>): Config {
  return testConfig({ redis: { url }, streams: { shards: 2 }, producer: { frameSize: 50, ...producer } });
}

function ticks(n: number) {
  return new SyntheticMarket({ symbols: symbolNames(8), seed: 5, source: uniqueName('s') }).next(n);
}

async function totalLength(redis: RedisClient, config: Config): Promise<number> {
  let n = 0;
  for (const k of allStreamKeys(config.streams)) n += await redis.xlen(k);
  return n;
}

describe.skipIf(!hasRedisServer)('producer durability: replica (WAIT n, private primary + replica)', () => {
  it('a flush returns only once the replica holds every tick', async () => {
    const set = await startReplicated(1);
    cleanups.push(set.remove);
    const config = configFor(set.primary.url, { durability: 'replica', durabilityReplicas: 1 });
    const redis = client(set.primary.url);
    const replica = client(set.replicas[0]!.url);
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    for (let i = 0; i < 10; i++) await publisher.publish(ticks(500));
    await publisher.flush();
    expect(publisher.stats.ticks).toBe(5000);
    // Read at once, no polling: WAIT has already confirmed the replica applied every XADD.
    expect(await totalLength(replica, config)).toBe(publisher.stats.frames);
    expect(await totalLength(redis, config)).toBe(publisher.stats.frames);
  });

  it('refuses to start with fewer connected replicas than asked for, saying so', async () => {
    const set = await startReplicated(1);
    cleanups.push(set.remove);
    const redis = client(set.primary.url);
    const config = configFor(set.primary.url, { durability: 'replica', durabilityReplicas: 2 });
    await expect(checkDurability(redis, config.producer)).rejects.toThrow(
      /waits for 2 replica\(s\) \(TICKSTREAM_PRODUCER_REPLICAS\), and the server at 127\.0\.0\.1:\d+ has 1 connected/,
    );
  });

  it('fails the flush (retriable) and counts nothing when the replica stops acknowledging', async () => {
    const set = await startReplicated(1);
    cleanups.push(set.remove);
    const config = configFor(set.primary.url, {
      durability: 'replica',
      durabilityReplicas: 1,
      durabilityTimeoutMs: 200,
    });
    const redis = client(set.primary.url);
    await checkDurability(redis, config.producer);
    await set.replicas[0]!.kill();
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
      durabilityChecked: true,
    });
    await publisher.publish(ticks(200));
    const failure = await publisher.flush().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toMatchObject({ name: 'TickstreamError', retriable: true });
    expect(String((failure as Error).cause)).toMatch(
      /only 0 of 1 replica\(s\) acknowledged the writes within 200 ms/,
    );
    // The XADDs are in the primary, but none was reported as published.
    expect(await totalLength(redis, config)).toBeGreaterThan(0);
    expect(publisher.stats.ticks).toBe(0);
  });

  it('the Kafka bridge commits offsets only once the replica has the ticks', async () => {
    const set = await startReplicated(1);
    cleanups.push(set.remove);
    const config = configFor(set.primary.url, {
      durability: 'replica',
      durabilityReplicas: 1,
      durabilityTimeoutMs: 100,
    });
    const redis = client(set.primary.url);
    const replicaServer = set.replicas[0]!;
    await replicaServer.kill();
    const processor = new KafkaBatchProcessor({
      redis,
      layout: config.streams,
      producer: config.producer,
      mapping: { fieldMap: {}, tsUnit: 'ns' },
      flushEvery: 1000,
      groupId: 'bridge-test',
      consumer: 'c1',
      retry: { baseMs: 5, maxMs: 20 },
      heartbeatMs: 10,
      log: silentLogger(),
    });
    const sent = ticks(300);
    const payload = new StandInBatchPayload('ticks', 0, messagesAt(100, sent.map(encodeKafkaValue)));
    const processing = processor.process(payload);
    processing.catch(() => undefined);
    await waitUntil(() => processor.stats.retries >= 2, 'the bridge to retry while no replica acknowledges');
    // In Redis (not durable as asked): no offset may be committed.
    expect(await totalLength(redis, config)).toBeGreaterThan(0);
    expect(payload.commits).toHaveLength(0);

    await replicaServer.start();
    await processing;
    expect(payload.committed()).toBe('400');
    const replica = client(replicaServer.url);
    const entries: string[][] = [];
    for (const k of allStreamKeys(config.streams))
      for (const [, fields] of (await replica.xrange(k, '-', '+')) as [string, string[]][])
        entries.push(fields);
    // Retried attempts may repeat ticks (the sinks dedupe by identity); none is missing on the replica.
    const n = entries.reduce((sum, f) => sum + Number(f[f.indexOf('n') + 1]), 0);
    expect(n).toBeGreaterThanOrEqual(300);
  });
});

describe.skipIf(!hasRedisServer)('producer durability: fsync (WAITAOF)', () => {
  it.skipIf(hasWaitAof)(
    `refuses to start on Redis older than ${WAITAOF_SINCE.join('.')} (the local redis-server is ${versionText}), saying why`,
    async () => {
      const server = await RedisServer.start({ args: ['--appendonly', 'yes', '--appendfsync', 'everysec'] });
      cleanups.push(() => server.remove());
      const redis = client(server.url);
      const config = configFor(server.url, { durability: 'fsync' });
      await expect(checkDurability(redis, config.producer)).rejects.toThrow(
        `TICKSTREAM_PRODUCER_DURABILITY=fsync needs WAITAOF, which Redis has from 7.2.0; the server at 127.0.0.1:${server.port} is ${versionText}`,
      );
      // The publisher checks too when nobody did, so no tick is sent with a promise it cannot keep.
      const publisher = new Publisher({
        redis,
        layout: config.streams,
        settings: config.producer,
        log: silentLogger(),
      });
      await expect(publisher.publish(ticks(10))).rejects.toThrow(/needs WAITAOF/);
      expect(await totalLength(redis, config)).toBe(0);

      // And the command exits with the configuration error code and the reason.
      const r = await runCli(['produce', 'synthetic', '--count', '100'], {
        REDIS_URL: server.url,
        TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
        TICKSTREAM_PRODUCER_DURABILITY: 'fsync',
      });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(
        `needs WAITAOF, which Redis has from 7.2.0; the server at 127.0.0.1:${server.port}`,
      );
      expect(await totalLength(redis, config)).toBe(0);
    },
  );

  it.skipIf(!hasWaitAof)(
    `waits for the AOF fsync (needs redis-server ≥ ${WAITAOF_SINCE.join('.')}; the local one is ${versionText})`,
    async () => {
      const server = await RedisServer.start({ args: ['--appendonly', 'yes', '--appendfsync', 'everysec'] });
      cleanups.push(() => server.remove());
      const redis = client(server.url);
      const config = configFor(server.url, { durability: 'fsync' });
      await checkDurability(redis, config.producer);
      const publisher = new Publisher({
        redis,
        layout: config.streams,
        settings: config.producer,
        log: silentLogger(),
      });
      for (let i = 0; i < 10; i++) await publisher.publish(ticks(500));
      await publisher.flush();
      expect(publisher.stats.ticks).toBe(5000);
      // Killed at once (no shutdown save): everything reported published is in the AOF it restarts from.
      await server.kill();
      await server.start();
      expect(await totalLength(redis, config)).toBe(publisher.stats.frames);

      const noAof = await RedisServer.start({ args: ['--appendonly', 'no'] });
      cleanups.push(() => noAof.remove());
      await expect(checkDurability(client(noAof.url), config.producer)).rejects.toThrow(
        /needs the append-only file, and the server at 127\.0\.0\.1:\d+ runs without it/,
      );
    },
  );
});
