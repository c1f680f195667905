import { afterEach, describe, expect, it } from 'vitest';
import { encodeFrame } from '../../shared/codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { trimStream, trimStreams } from '../../shared/retention.ts';
import { streamKey } from '../../shared/streams.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

const open: RedisClient[] = [];
afterEach(async () => {
  for (const r of open.splice(0)) await closeRedis(r);
});

const frame = encodeFrame(new SyntheticMarket({ symbols: ['A'], seed: 1, source: 's' }).next(1));

async function fill(redis: RedisClient, stream: string, ids: string[]) {
  for (const id of ids) await redis.xadd(stream, id, ...frame);
}

describe('retention (real Redis)', () => {
  it('trims by age but never past an entry a group has not acknowledged', async () => {
    const config = testConfig();
    const redis = testRedis(config);
    open.push(redis);
    const stream = streamKey(config.streams, 0);
    await fill(redis, stream, ['1000-0', '2000-0', '3000-0', '4000-0', '5000-0']);
    const slow = uniqueName('slow');
    const fast = uniqueName('fast');
    await redis.call('XGROUP', 'CREATE', stream, slow, '0');
    await redis.call('XGROUP', 'CREATE', stream, fast, '0');
    // fast read and acked everything; slow read two entries and acked only the first.
    const all = (await redis.call(
      'XREADGROUP',
      'GROUP',
      fast,
      'c',
      'COUNT',
      '10',
      'STREAMS',
      stream,
      '>',
    )) as [string, [string][]][];
    await redis.xack(stream, fast, ...all[0]![1].map(([id]) => id));
    await redis.call('XREADGROUP', 'GROUP', slow, 'c', 'COUNT', '2', 'STREAMS', stream, '>');
    await redis.xack(stream, slow, '1000-0');

    // Age bound says: drop everything before 4500 ms. slow still needs 2000-0 (pending) onwards.
    const r = await trimStream(redis, stream, { maxAgeMs: 500, maxLen: 0, intervalMs: 1000 }, 5000);
    expect(r).toMatchObject({ trimmed: 1, minId: '2000-0', heldBackBy: slow });
    expect((await redis.xrange(stream, '-', '+')).map(([id]) => id)).toEqual([
      '2000-0',
      '3000-0',
      '4000-0',
      '5000-0',
    ]);

    // slow acks 2000-0 but has not read 3000-0 yet: the bound is the entry after its last delivered id.
    await redis.xack(stream, slow, '2000-0');
    const r2 = await trimStream(redis, stream, { maxAgeMs: 500, maxLen: 0, intervalMs: 1000 }, 5000);
    expect(r2).toMatchObject({ trimmed: 1, minId: '2000-1', heldBackBy: slow });
    expect((await redis.xrange(stream, '-', '+')).map(([id]) => id)).toEqual(['3000-0', '4000-0', '5000-0']);
    await cleanupPrefix(redis, config.streams.prefix);
  });

  it('trims by size when every group is done, and does nothing when no bound applies', async () => {
    const config = testConfig({ streams: { shards: 1 } });
    const redis = testRedis(config);
    open.push(redis);
    const stream = streamKey(config.streams, 0);
    await fill(redis, stream, ['1-0', '2-0', '3-0', '4-0', '5-0', '6-0']);
    const r = await trimStreams(redis, config.streams, { maxAgeMs: 0, maxLen: 2, intervalMs: 1000 });
    expect(r[0]).toMatchObject({ trimmed: 4, minId: '4-1' });
    expect(await redis.xlen(stream)).toBe(2);
    const none = await trimStreams(redis, config.streams, { maxAgeMs: 0, maxLen: 0, intervalMs: 1000 });
    expect(none[0]!.trimmed).toBe(0);
    await cleanupPrefix(redis, config.streams.prefix);
  });

  it('keeps every unacknowledged tick of a produced run through repeated trims', async () => {
    const config = testConfig({ streams: { shards: 2 } });
    const redis = testRedis(config);
    open.push(redis);
    const group = uniqueName('g');
    for (const s of [0, 1])
      await redis.call('XGROUP', 'CREATE', streamKey(config.streams, s), group, '0', 'MKSTREAM');
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: { ...config.producer, frameSize: 10 },
      log: silentLogger(),
    });
    await publisher.publish(
      new SyntheticMarket({ symbols: ['A', 'B', 'C'], seed: 2, source: 's' }).next(1000),
    );
    await publisher.flush();
    const before =
      (await redis.xlen(streamKey(config.streams, 0))) + (await redis.xlen(streamKey(config.streams, 1)));
    // Everything is older than "now + 1 h" and beyond maxLen 1, but nothing was read: nothing may go.
    const r = await trimStreams(
      redis,
      config.streams,
      { maxAgeMs: 1, maxLen: 1, intervalMs: 1000 },
      Date.now() + 3_600_000,
    );
    expect(r.reduce((n, x) => n + x.trimmed, 0)).toBe(0);
    const after =
      (await redis.xlen(streamKey(config.streams, 0))) + (await redis.xlen(streamKey(config.streams, 1)));
    expect(after).toBe(before);
    await cleanupPrefix(redis, config.streams.prefix);
  });
});

describe('producer backpressure (real Redis)', () => {
  it('a stop request ends a backpressure pause', async () => {
    const config = testConfig({
      streams: { shards: 1 },
      producer: { highWater: 5, lowWater: 1, backpressureIntervalMs: 10, frameSize: 1, lingerMs: 0 },
    });
    const redis = testRedis(config);
    open.push(redis);
    const stream = streamKey(config.streams, 0);
    await redis.call('XGROUP', 'CREATE', stream, uniqueName('g'), '0', 'MKSTREAM');
    const abort = new AbortController();
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
      signal: abort.signal,
    });
    const market = new SyntheticMarket({ symbols: ['A'], seed: 3, source: 's' });
    const producing = (async () => {
      for (let i = 0; i < 100 && !abort.signal.aborted; i++) await publisher.publish(market.next(1));
      await publisher.flush();
    })();
    await waitUntil(async () => {
      const len = await redis.xlen(stream);
      await new Promise((r) => setTimeout(r, 50));
      return len === (await redis.xlen(stream)) && len >= 5;
    }, 'the producer to pause');
    abort.abort();
    await producing; // returns although nobody consumed
    expect(await redis.xlen(stream)).toBeLessThan(100);
    await cleanupPrefix(redis, config.streams.prefix);
  });

  it('pauses when the slowest group lags past the high-water mark and resumes when it drains', async () => {
    const config = testConfig({
      streams: { shards: 1 },
      producer: { highWater: 20, lowWater: 5, backpressureIntervalMs: 10, frameSize: 1, lingerMs: 0 },
    });
    const redis = testRedis(config);
    open.push(redis);
    const stream = streamKey(config.streams, 0);
    const group = uniqueName('g');
    await redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM');
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const market = new SyntheticMarket({ symbols: ['A'], seed: 3, source: 's' });
    let done = false;
    const producing = (async () => {
      for (let i = 0; i < 500; i++) await publisher.publish(market.next(1));
      await publisher.flush();
      done = true;
    })();
    // Wait for the producer to stall: the stream stops growing while nobody consumes.
    let last = -1;
    for (;;) {
      await new Promise((r) => setTimeout(r, 100));
      const len = await redis.xlen(stream);
      if (len === last) break;
      last = len;
    }
    expect(done).toBe(false);
    // Paused at the high-water mark (20), give or take the frames in flight when it was crossed.
    expect(last).toBeGreaterThanOrEqual(20);
    expect(last).toBeLessThan(30);
    // Consume and ack everything so far: the producer resumes and finishes.
    const drain = async () => {
      const reply = (await redis.call(
        'XREADGROUP',
        'GROUP',
        group,
        'c',
        'COUNT',
        '1000',
        'STREAMS',
        stream,
        '>',
      )) as [string, [string][]][] | null;
      const ids = reply?.[0]?.[1].map(([id]) => id) ?? [];
      if (ids.length > 0) await redis.xack(stream, group, ...ids);
    };
    while (!done) {
      await drain();
      await new Promise((r) => setTimeout(r, 20));
    }
    await producing;
    expect(await redis.xlen(stream)).toBe(500);
    expect(publisher.stats.pausedMs).toBeGreaterThan(0);
    await cleanupPrefix(redis, config.streams.prefix);
  });
});
