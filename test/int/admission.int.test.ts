import { afterEach, describe, expect, it } from 'vitest';
import { listDeadLetters } from '../../consumers/deadletters.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import { encodeFrame } from '../../shared/codec.ts';
import type { Config } from '../../shared/config.ts';
import { SinkError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import { nowNs, tickKey, type Tick } from '../../shared/model.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { streamForSymbol } from '../../shared/streams.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';
import { RecordingSink } from '../helpers/sinks.ts';
import { pendingTotal, produceTicks } from '../helpers/streams.ts';

/**
 * A single bad tick never stops a group: the stream-boundary checks of consumers/admission.ts and
 * shared/codec.ts, and the worker's bound on retrying a computation that fails on the data, against real Redis.
 */

const open: RedisClient[] = [];
const workers: GroupWorker[] = [];
const prefixes: string[] = [];

afterEach(async () => {
  for (const w of workers.splice(0)) await w.close().catch(() => undefined);
  const cleaner = open[0];
  if (cleaner !== undefined) for (const p of prefixes.splice(0)) await cleanupPrefix(cleaner, p);
  for (const r of open.splice(0)) await closeRedis(r);
});

function redisFor(config: Config, blocking = false): RedisClient {
  const r = testRedis(config, blocking);
  open.push(r);
  return r;
}

function setup(overrides: Parameters<typeof testConfig>[0] = {}) {
  const config = testConfig(overrides);
  prefixes.push(config.streams.prefix);
  return { config, redis: redisFor(config), group: uniqueName('g') };
}

async function startWorker(
  config: Config,
  group: string,
  sink: RecordingSink,
  blocking: RedisClient = redisFor(config, true),
): Promise<GroupWorker> {
  const worker = new GroupWorker({
    redis: redisFor(config),
    blocking,
    layout: config.streams,
    group,
    consumer: uniqueName('c'),
    sink,
    settings: config.consumer,
    log: silentLogger(),
  });
  workers.push(worker);
  await worker.start();
  return worker;
}

/**
 * What the bars sink did with a trade of 1e308 before: a RangeError computing the bar, wrapped in a SinkError
 * the PostgreSQL classifier called retriable. Counts how often the poison tick was tried.
 */
class ComputingSink extends RecordingSink {
  poisonKey = '';
  tries = 0;
  /** Largest batch flushed, in ticks. */
  largest = 0;
  private batch: Tick[] = [];

  override async write(ticks: readonly Tick[]): Promise<void> {
    this.batch.push(...ticks);
    await super.write(ticks);
  }

  override async flush(): Promise<void> {
    const batch = this.batch;
    this.batch = [];
    this.largest = Math.max(this.largest, batch.length);
    if (batch.some((t) => tickKey(t) === this.poisonKey)) {
      this.tries++;
      // Discard what was staged, as the Sink contract asks of a failed flush.
      await super.flush().catch(() => undefined);
      for (const t of batch) this.stored.delete(tickKey(t));
      throw new SinkError('bars: merge failed: value out of range for a bar: 1e+308', {
        retriable: true,
        cause: new RangeError('value out of range for a bar: 1e+308'),
      });
    }
    await super.flush();
  }
}

describe('a single bad tick never stops the pipeline (real Redis)', () => {
  it('a computation failing on one tick is retried maxDeliveries times, then that tick alone is dead-lettered', async () => {
    const { config, redis, group } = setup({ consumer: { maxDeliveries: 3 } });
    const ticks = await produceTicks(config, redis, 300);
    const sink = new ComputingSink();
    const victim = ticks[101]!;
    sink.poisonKey = tickKey(victim);
    await startWorker(config, group, sink);

    await waitUntil(
      () => sink.stored.size === 299,
      'every other tick stored, the good ones of its batch too',
    );
    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams, { group });
      return l.length === 1 ? l : undefined;
    }, 'the poison tick dead-lettered');
    expect(letters[0]!.kind).toBe('tick');
    expect(letters[0]!.reason).toBe(
      'bars: merge failed: value out of range for a bar: 1e+308 (failed 3 times; not a store outage)',
    );
    expect(sink.stored.has(tickKey(victim))).toBe(false);
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'all acknowledged');
    // Three tries of the whole batch, then one per halving down to the tick: bounded, not forever.
    expect(sink.tries).toBeGreaterThanOrEqual(3);
    expect(sink.tries).toBeLessThan(3 + 12);
  });

  it('a store outage is still retried for as long as it lasts, beyond maxDeliveries', async () => {
    const { config, redis, group } = setup({ consumer: { maxDeliveries: 2 } });
    const sink = new RecordingSink();
    sink.failRetriable = 8;
    const ticks = await produceTicks(config, redis, 100);
    await startWorker(config, group, sink);
    await waitUntil(() => sink.stored.size === ticks.length, 'all stored once the store is back');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'all acknowledged');
    expect(await listDeadLetters(redis, config.streams, { group })).toEqual([]);
  });

  it('dead-letters a tick stamped beyond TICKSTREAM_MAX_FUTURE_MS, naming the reason; the rest pass', async () => {
    const { config, redis, group } = setup({ consumer: { maxFutureMs: 2000 } });
    const market = new SyntheticMarket({ symbols: ['AAA'], seed: 5, source: uniqueName('src') });
    const batch = market.next(3);
    const inHour = nowNs() + 3_600_000_000_000n;
    const future = { ...batch[1]!, ts: inHour } as Tick;
    const slightlyAhead = { ...batch[2]!, ts: nowNs() + 500_000_000n } as Tick;
    await redis.xadd(
      streamForSymbol(config.streams, 'AAA'),
      '*',
      ...encodeFrame([batch[0]!, future, slightlyAhead]),
    );
    const sink = new RecordingSink();
    await startWorker(config, group, sink);

    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams, { group });
      return l.length === 1 ? l : undefined;
    }, 'the future tick dead-lettered');
    expect(letters[0]!.kind).toBe('tick');
    expect(letters[0]!.index).toBe(1);
    expect(letters[0]!.reason).toMatch(
      new RegExp(
        `^timestamp ${inHour} is 3\\d{6} ms ahead of the receiving clock \\(max 2000 ms, TICKSTREAM_MAX_FUTURE_MS\\)$`,
      ),
    );
    await waitUntil(() => sink.stored.size === 2, 'the other two stored');
    expect(sink.stored.has(tickKey(future))).toBe(false);
    expect(sink.stored.has(tickKey(slightlyAhead))).toBe(true);
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'all acknowledged');
  });

  it('dead-letters frames over the tuple or byte cap undecoded, with the reason; other frames pass', async () => {
    const { config, redis, group } = setup({ consumer: { maxFrameTicks: 100, maxFrameBytes: 20_000 } });
    const stream = streamForSymbol(config.streams, 'AAA');
    const market = new SyntheticMarket({ symbols: ['AAA'], seed: 6, source: uniqueName('src') });
    const tooMany = market.next(150);
    await redis.xadd(stream, '*', ...encodeFrame(tooMany));
    const big = ['v', '1', 'n', '1', 'd', `[${' '.repeat(30_000)}]`];
    await redis.xadd(stream, '*', ...big);
    const fine = market.next(100);
    await redis.xadd(stream, '*', ...encodeFrame(fine));
    const sink = new RecordingSink();
    await startWorker(config, group, sink);

    await waitUntil(() => sink.stored.size === 100, 'the frame within the caps stored');
    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams, { group });
      return l.length === 2 ? l : undefined;
    }, 'both oversized frames dead-lettered');
    expect(letters.map((l) => [l.kind, l.reason])).toEqual([
      ['entry', 'frame too large: 150 ticks (max 100, TICKSTREAM_MAX_FRAME_TICKS)'],
      ['entry', 'frame too large: 30002 payload bytes (max 20000, TICKSTREAM_MAX_FRAME_BYTES)'],
    ]);
    expect(new Set(sink.stored.keys())).toEqual(new Set(fine.map(tickKey)));
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'all acknowledged');
  });

  it('bounds a sink batch by bytes as well as by entries', async () => {
    // Frames of 50 ticks are ~5 KB each: a 6 KB budget lets one frame through per batch, whatever COUNT read.
    const { config, redis, group } = setup({ consumer: { batchBytes: 6_000, batchSize: 64 } });
    const ticks = await produceTicks(config, redis, 400, { symbols: ['AAA'] });
    const sink = new ComputingSink();
    const worker = await startWorker(config, group, sink);
    await waitUntil(() => sink.stored.size === ticks.length, 'all stored');
    expect(sink.largest).toBe(50);
    expect(worker.stats.batches).toBeGreaterThanOrEqual(8);
  });

  it('bounds a read by bytes across all shards: COUNT applies to each stream of an XREADGROUP', async () => {
    // Frames of 50 ticks are ~5 KB; 40 KB of budget over 2 shards is 4 frames per shard per read, not 8.
    const { config, redis, group } = setup({
      streams: { shards: 2 },
      consumer: { batchBytes: 40_000, batchSize: 16 },
    });
    const ticks = await produceTicks(config, redis, 8000, { symbols: ['AAA', 'BBB', 'CCC', 'DDD'] });
    const blocking = redisFor(config, true);
    const reads: number[] = [];
    const callBuffer = blocking.callBuffer.bind(blocking);
    blocking.callBuffer = (async (...args: Parameters<typeof callBuffer>) => {
      const reply = await callBuffer(...args);
      if (String(args[0]) === 'XREADGROUP' && Array.isArray(reply)) {
        let bytes = 0;
        for (const [, entries] of reply as [Buffer, [Buffer, Buffer[]][]][])
          for (const [, fields] of entries) for (const f of fields) bytes += f.length;
        reads.push(bytes);
      }
      return reply;
    }) as typeof blocking.callBuffer;
    const sink = new RecordingSink();
    await startWorker(config, group, sink, blocking);
    await waitUntil(() => sink.stored.size === ticks.length, 'all stored');
    // The first read that returned entries knew no entry sizes yet; every later one did.
    const nonEmpty = reads.filter((b) => b > 0);
    const sized = nonEmpty.slice(1);
    expect(sized.length).toBeGreaterThan(5);
    expect(Math.max(...sized)).toBeLessThanOrEqual(40_000 * 1.2);
  });
});
