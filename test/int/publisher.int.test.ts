import { afterEach, describe, expect, it } from 'vitest';
import { decodeFrame } from '../../shared/codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey } from '../../shared/model.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { shardOf, streamKey } from '../../shared/streams.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket, symbolNames } from '../../producers/synthetic.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName } from '../helpers/index.ts';

const open: RedisClient[] = [];
const prefixes: string[] = [];
afterEach(async () => {
  const r = open[0];
  if (r !== undefined) for (const p of prefixes.splice(0)) await cleanupPrefix(r, p);
  for (const c of open.splice(0)) await closeRedis(c);
});

describe('Publisher when some XADDs of a pipeline fail (real Redis)', () => {
  it('reports only the frames Redis took, names the failing stream, and stays failed', async () => {
    const config = testConfig({ streams: { shards: 2 }, producer: { frameSize: 10, lingerMs: 0 } });
    prefixes.push(config.streams.prefix);
    const redis = testRedis(config);
    open.push(redis);
    // Shard 1's key holds a string: every XADD to it fails (WRONGTYPE) while shard 0's succeed.
    const broken = streamKey(config.streams, 1);
    await redis.set(broken, 'not a stream');
    const ticks = new SyntheticMarket({ symbols: symbolNames(12), seed: 4, source: uniqueName('s') }).next(
      400,
    );
    const toShard0 = ticks.filter((t) => shardOf(t.symbol, 2) === 0);
    expect(toShard0.length).toBeGreaterThan(0);
    expect(toShard0.length).toBeLessThan(ticks.length);

    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    let failure: unknown;
    try {
      await publisher.publish(ticks);
      await publisher.flush();
    } catch (err) {
      failure = err;
    }
    expect(failure).toMatchObject({ name: 'TickstreamError', message: `publishing to ${broken} failed` });
    expect(String((failure as Error).cause)).toMatch(/WRONGTYPE/);

    // What the publisher counts as published is exactly what is in Redis: shard 0's frames, whole.
    const entries = (await redis.xrange(streamKey(config.streams, 0), '-', '+')) as [string, string[]][];
    const stored = entries.flatMap(([, fields]) => decodeFrame(fields).ticks);
    expect(publisher.stats.ticks).toBe(stored.length);
    expect(publisher.stats.frames).toBe(entries.length);
    expect(new Set(stored.map(tickKey)).size).toBe(stored.length);
    for (const t of stored) expect(shardOf(t.symbol, 2)).toBe(0);
    expect(await redis.type(broken)).toBe('string');

    // A failed publisher does not take more ticks: the caller must retry with a fresh one (as the Kafka bridge does).
    await expect(publisher.publish(ticks.slice(0, 1))).rejects.toBe(failure);
    await expect(publisher.flush()).rejects.toBe(failure);
  });
});
