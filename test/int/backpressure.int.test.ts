import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../shared/config.ts';
import { groupBacklogs } from '../../shared/backlog.ts';
import { silentLogger } from '../../shared/logger.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys, streamKey } from '../../shared/streams.ts';
import { Publisher, sharedPublisherMetrics } from '../../producers/publisher.ts';
import { drive } from '../../producers/run.ts';
import { SyntheticMarket, symbolNames } from '../../producers/synthetic.ts';
import { finished, startCli, stopChildren } from '../helpers/cli.ts';
import { cleanupPrefix, REDIS_URL, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

/**
 * Backpressure, asserted from the publisher's own state (`paused`, `backlog`, `stats`) rather than from how
 * long the stream stays the same length.
 */
const open: RedisClient[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await stopChildren();
  for (const c of cleanups.splice(0).reverse()) await c();
  for (const r of open.splice(0)) await closeRedis(r);
});

function setup(producer: Config['producer'] | Partial<Config['producer']>, shards: number) {
  const config = testConfig({ streams: { shards }, producer: { lingerMs: 0, ...producer } });
  const redis = testRedis(config);
  open.push(redis);
  cleanups.push(() => cleanupPrefix(redis, config.streams.prefix));
  return { config, redis, keys: allStreamKeys(config.streams) };
}

async function createGroup(redis: RedisClient, keys: readonly string[]): Promise<string> {
  const group = uniqueName('g');
  for (const k of keys) await redis.call('XGROUP', 'CREATE', k, group, '0', 'MKSTREAM');
  return group;
}

async function totalLength(redis: RedisClient, keys: readonly string[]): Promise<number> {
  let n = 0;
  for (const k of keys) n += await redis.xlen(k);
  return n;
}

/** Read up to `count` entries of `group` over the shards (shard by shard); acknowledge them when `ack`. */
async function consume(
  redis: RedisClient,
  keys: readonly string[],
  group: string,
  count: number,
  ack: boolean,
): Promise<number> {
  let done = 0;
  for (const k of keys) {
    if (done >= count) break;
    const reply = (await redis.call(
      'XREADGROUP',
      'GROUP',
      group,
      'c',
      'COUNT',
      String(count - done),
      'STREAMS',
      k,
      '>',
    )) as [string, [string][]][] | null;
    const ids = reply?.[0]?.[1].map(([id]) => id) ?? [];
    if (ack && ids.length > 0) await redis.xack(k, group, ...ids);
    done += ids.length;
  }
  return done;
}

async function ackPending(redis: RedisClient, keys: readonly string[], group: string): Promise<void> {
  for (const k of keys) {
    const pending = (await redis.call('XPENDING', k, group, '-', '+', '10000')) as [string][];
    if (pending.length > 0) await redis.xack(k, group, ...pending.map(([id]) => id));
  }
}

/** Publish one tick per call (one frame each with frameSize 1) for many symbols, in the background. */
function produceInBackground(publisher: Publisher, ticks: number, symbols = 40) {
  const market = new SyntheticMarket({ symbols: symbolNames(symbols), seed: 3, source: uniqueName('s') });
  let done = false;
  const running = (async () => {
    for (let i = 0; i < ticks; i++) await publisher.publish(market.next(1));
    await publisher.flush();
    done = true;
  })();
  running.catch(() => undefined);
  return { running, isDone: () => done };
}

/** Wait until the publisher has measured the backlog `n` more times (each check sees the current state). */
async function checksPass(publisher: Publisher, n: number): Promise<void> {
  const target = publisher.stats.backlogChecks + n;
  await waitUntil(() => publisher.stats.backlogChecks >= target, `${n} more backlog checks`);
}

describe('producer backpressure (real Redis)', () => {
  it('bounds the slowest group’s total backlog over several shards, not each shard', async () => {
    const highWater = 40;
    const { config, redis, keys } = setup(
      { highWater, lowWater: 10, backpressureIntervalMs: 10, frameSize: 1 },
      4,
    );
    const group = await createGroup(redis, keys);
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const run = produceInBackground(publisher, 1000);
    await waitUntil(() => publisher.paused, 'the producer to pause');
    // Every frame sent before the pause has been answered once flush-free publishing stops growing in flight.
    await checksPass(publisher, 2);
    expect(run.isDone()).toBe(false);
    const total = await totalLength(redis, keys);
    // One entry per frame, so the stream lengths are the group's backlog: the whole of it is bounded by the
    // mark (a frame may be counted in flight when the mark is crossed), spread over the shards.
    expect(total).toBeLessThanOrEqual(highWater + 1);
    const lengths = await Promise.all(keys.map((k) => redis.xlen(k)));
    expect(lengths.filter((n) => n > 0).length).toBeGreaterThan(1);
    expect(publisher.backlog).toEqual({ entries: total, group });
    const [backlog] = await groupBacklogs(redis, keys);
    expect(backlog).toMatchObject({ group, entries: total, pending: 0 });

    // Drain everything, repeatedly, until the producer finishes: nothing lost on the way.
    while (!run.isDone()) {
      await consume(redis, keys, group, 10_000, true);
      await new Promise((r) => setTimeout(r, 20));
    }
    await run.running;
    expect(await totalLength(redis, keys)).toBe(1000);
    expect(publisher.stats.maxBacklog).toBeLessThanOrEqual(highWater + 1);
    expect(publisher.stats.pauses).toBeGreaterThan(1);
  });

  it('resumes only once the backlog is at or under LOW_WATER (hysteresis)', async () => {
    const { config, redis, keys } = setup(
      { highWater: 20, lowWater: 5, backpressureIntervalMs: 10, frameSize: 1 },
      2,
    );
    const group = await createGroup(redis, keys);
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const run = produceInBackground(publisher, 300);
    await waitUntil(() => publisher.paused, 'the producer to pause');
    await checksPass(publisher, 1);
    const atPause = await totalLength(redis, keys);
    expect(atPause).toBeGreaterThan(10);
    expect(atPause).toBeLessThanOrEqual(21);

    // Under the high-water mark but above the low one: still paused, whatever the number of checks.
    await consume(redis, keys, group, atPause - 10, true);
    await checksPass(publisher, 3);
    expect(publisher.paused).toBe(true);
    expect(publisher.backlog.entries).toBe(10);
    expect(await totalLength(redis, keys)).toBe(atPause);

    // At the low-water mark: it resumes.
    await consume(redis, keys, group, 5, true);
    // It may pause again at once (nobody else consumes), so look at what it did, not at `paused`.
    await waitUntil(async () => (await totalLength(redis, keys)) > atPause, 'the producer to resume');

    while (!run.isDone()) {
      await consume(redis, keys, group, 10_000, true);
      await new Promise((r) => setTimeout(r, 20));
    }
    await run.running;
    expect(await totalLength(redis, keys)).toBe(300);
  });

  it('counts delivered but unacknowledged (pending) entries in the backlog', async () => {
    const { config, redis, keys } = setup(
      { highWater: 20, lowWater: 5, backpressureIntervalMs: 10, frameSize: 1 },
      2,
    );
    const group = await createGroup(redis, keys);
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const run = produceInBackground(publisher, 200);
    await waitUntil(() => publisher.paused, 'the producer to pause');
    await checksPass(publisher, 1);
    const atPause = await totalLength(redis, keys);

    // Everything delivered, nothing acknowledged: Redis' lag is 0, yet the group still owes every entry.
    expect(await consume(redis, keys, group, 10_000, false)).toBe(atPause);
    await checksPass(publisher, 3);
    expect(publisher.paused).toBe(true);
    expect(publisher.backlog.entries).toBe(atPause);
    const [backlog] = await groupBacklogs(redis, keys);
    expect(backlog).toMatchObject({ entries: atPause, pending: atPause });

    await ackPending(redis, keys, group);
    await waitUntil(
      async () => (await totalLength(redis, keys)) > atPause,
      'the producer to resume once the entries are acknowledged',
    );
    while (!run.isDone()) {
      await consume(redis, keys, group, 10_000, true);
      await new Promise((r) => setTimeout(r, 20));
    }
    await run.running;
    expect(await totalLength(redis, keys)).toBe(200);
  });

  it('is not held back by streams without consumer groups', async () => {
    const { config, redis, keys } = setup(
      { highWater: 5, lowWater: 1, backpressureIntervalMs: 10, frameSize: 1 },
      3,
    );
    // A group on another prefix's streams must not count either.
    const other = testConfig({ streams: { shards: 3 } });
    cleanups.push(() => cleanupPrefix(redis, other.streams.prefix));
    const otherGroup = await createGroup(redis, allStreamKeys(other.streams));
    await redis.xadd(streamKey(other.streams, 0), '*', 'x', '1');
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const run = produceInBackground(publisher, 200);
    await run.running;
    expect(await totalLength(redis, keys)).toBe(200);
    expect(publisher.stats.pauses).toBe(0);
    expect(publisher.stats.backlogChecks).toBeGreaterThan(0);
    expect(publisher.backlog.entries).toBe(0);
    expect((await groupBacklogs(redis, allStreamKeys(other.streams)))[0]).toMatchObject({
      group: otherGroup,
      entries: 1,
    });
  });

  it('Publishers sharing their state (the Kafka bridge, one per batch) measure the backlog once per interval, and all pause', async () => {
    const { config, redis, keys } = setup(
      { highWater: 50, lowWater: 10, backpressureIntervalMs: 60_000, frameSize: 1 },
      2,
    );
    await createGroup(redis, keys);
    const shared = sharedPublisherMetrics(config.producer.source);
    const market = new SyntheticMarket({ symbols: symbolNames(20), seed: 4, source: uniqueName('src') });
    for (let i = 0; i < 5; i++) {
      const publisher = new Publisher({
        redis,
        layout: config.streams,
        settings: config.producer,
        log: silentLogger(),
        shared,
      });
      await publisher.publish(market.next(5));
      await publisher.flush();
    }
    // One measurement for the five: a Publisher of its own would have measured on its first publish.
    expect(shared.stats.backlogChecks).toBe(1);
    expect(await totalLength(redis, keys)).toBe(25);
    // Frames sent since count against the high-water mark in a later Publisher too: this one pauses at once,
    // measuring again, and a stop request ends the pause.
    const stop = new AbortController();
    const last = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
      shared,
      signal: stop.signal,
    });
    const publishing = last.publish(market.next(40));
    await waitUntil(() => last.paused, 'the new Publisher paused on the shared backlog');
    expect(shared.stats.backlogChecks).toBeGreaterThanOrEqual(2);
    stop.abort();
    await publishing;
  });

  it('a stop request ends a backpressure pause', async () => {
    const { config, redis, keys } = setup(
      { highWater: 5, lowWater: 1, backpressureIntervalMs: 10, frameSize: 1 },
      1,
    );
    await createGroup(redis, keys);
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
    await waitUntil(() => publisher.paused, 'the producer to pause');
    abort.abort();
    await producing; // returns although nobody consumed
    expect(publisher.paused).toBe(false);
    expect(await totalLength(redis, keys)).toBeLessThanOrEqual(6);
  });

  it('a run’s duration ends it while backpressure holds it', async () => {
    const { config, redis, keys } = setup(
      { highWater: 10, lowWater: 2, backpressureIntervalMs: 10, frameSize: 1 },
      2,
    );
    await createGroup(redis, keys);
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const market = new SyntheticMarket({ symbols: symbolNames(10), seed: 4, source: uniqueName('s') });
    const result = await drive({ next: (n) => market.next(n), publisher, durationMs: 500 });
    // Nobody consumed: without the deadline ending the pause this would never return.
    expect(publisher.stats.pauses).toBeGreaterThan(0);
    expect(publisher.paused).toBe(false);
    expect(result.elapsedMs).toBeGreaterThanOrEqual(500);
    expect(await totalLength(redis, keys)).toBe(publisher.stats.frames);
  });

  it('`produce synthetic --duration` exits on time while paused (process)', async () => {
    const config = testConfig({ streams: { shards: 2 } });
    const redis = testRedis(config);
    open.push(redis);
    cleanups.push(() => cleanupPrefix(redis, config.streams.prefix));
    const keys = allStreamKeys(config.streams);
    await createGroup(redis, keys);
    const child = startCli(['produce', 'synthetic', '--symbols', '20', '--duration', '1s'], {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
      TICKSTREAM_SHARDS: '2',
      TICKSTREAM_HIGH_WATER: '8',
      TICKSTREAM_LOW_WATER: '2',
      TICKSTREAM_FRAME_SIZE: '16',
      TICKSTREAM_SOURCE: uniqueName('s'),
    });
    // A paused producer that ignored its deadline would run until this generous bound and fail the test.
    const r = await finished(child, 30_000);
    expect(r.code, r.stderr).toBe(0);
    const log = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; pausedMs?: number });
    expect(
      log.some((l) => l.msg === 'consumers are behind: pausing the producer'),
      r.stderr,
    ).toBe(true);
    expect(log.find((l) => l.msg === 'produced')?.pausedMs).toBeGreaterThan(0);
    // The deadline stops the pause inside a publish call of 1,024 ticks; the rest of that call is still sent
    // (nothing handed to the publisher is dropped): at most 64 frames of 16, plus one partial frame per shard.
    expect(await totalLength(redis, keys)).toBeLessThanOrEqual(8 + 1 + 64 + 2);
  });
});
