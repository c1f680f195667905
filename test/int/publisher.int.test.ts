import { afterEach, describe, expect, it } from 'vitest';
import { decodeFrame, encodeTick } from '../../shared/codec.ts';
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

describe('Publisher.publishEncoded (real Redis)', () => {
  it('puts rows and ticks into the same frames, in order per shard, cut at the frame size', async () => {
    const config = testConfig({ streams: { shards: 2 }, producer: { frameSize: 7, lingerMs: 50 } });
    prefixes.push(config.streams.prefix);
    const redis = testRedis(config);
    open.push(redis);
    const ticks = new SyntheticMarket({ symbols: symbolNames(6), seed: 9, source: uniqueName('s') }).next(
      100,
    );
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    // Alternating: ticks, then the same kind of batch already encoded, then ticks again.
    for (let i = 0; i < ticks.length; i += 10) {
      const part = ticks.slice(i, i + 10);
      if ((i / 10) % 2 === 0) await publisher.publish(part);
      else
        await publisher.publishEncoded({
          rows: part.map(encodeTick),
          shards: Uint16Array.from(part.map((t) => shardOf(t.symbol, 2))),
          shardCount: 2,
        });
    }
    await publisher.flush();
    for (const shard of [0, 1]) {
      const entries = (await redis.xrange(streamKey(config.streams, shard), '-', '+')) as [
        string,
        string[],
      ][];
      expect(entries.flatMap(([, f]) => decodeFrame(f).ticks)).toEqual(
        ticks.filter((t) => shardOf(t.symbol, 2) === shard),
      );
      expect(entries.every(([, f]) => Number(f[3]) <= 7)).toBe(true);
    }
    await expect(
      publisher.publishEncoded({ rows: [], shards: new Uint16Array(0), shardCount: 3 }),
    ).rejects.toThrow(/sharded 3 ways, the streams 2/);
  });
});
