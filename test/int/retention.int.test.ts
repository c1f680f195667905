import { afterEach, describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame } from '../../shared/codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { trimStream, trimStreams } from '../../shared/retention.ts';
import { streamKey } from '../../shared/streams.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { runCli, startCli, stopChildren } from '../helpers/cli.ts';
import { cleanupPrefix, REDIS_URL, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

// Whatever a test's outcome: its processes killed and waited for, its keys deleted, its connections closed.
const open: RedisClient[] = [];
const prefixes: string[] = [];
afterEach(async () => {
  await stopChildren();
  const cleaner = open[0];
  if (cleaner !== undefined) for (const p of prefixes.splice(0)) await cleanupPrefix(cleaner, p);
  for (const r of open.splice(0)) await closeRedis(r);
});

function setup(overrides: Parameters<typeof testConfig>[0] = {}) {
  const config = testConfig(overrides);
  prefixes.push(config.streams.prefix);
  const redis = testRedis(config);
  open.push(redis);
  return { config, redis };
}

const frame = encodeFrame(new SyntheticMarket({ symbols: ['A'], seed: 1, source: 's' }).next(1));

async function fill(redis: RedisClient, stream: string, ids: string[]) {
  for (const id of ids) await redis.xadd(stream, id, ...frame);
}

describe('retention (real Redis)', () => {
  it('trims by age but never past an entry a group has not acknowledged', async () => {
    const { config, redis } = setup();
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
  });

  it('trims by size when every group is done, and does nothing when no bound applies', async () => {
    const { config, redis } = setup({ streams: { shards: 1 } });
    const stream = streamKey(config.streams, 0);
    await fill(redis, stream, ['1-0', '2-0', '3-0', '4-0', '5-0', '6-0']);
    const r = await trimStreams(redis, config.streams, { maxAgeMs: 0, maxLen: 2, intervalMs: 1000 });
    expect(r[0]).toMatchObject({ trimmed: 4, minId: '4-1' });
    expect(await redis.xlen(stream)).toBe(2);
    const none = await trimStreams(redis, config.streams, { maxAgeMs: 0, maxLen: 0, intervalMs: 1000 });
    expect(none[0]!.trimmed).toBe(0);
  });

  it('keeps every unacknowledged tick of a produced run through repeated trims', async () => {
    const { config, redis } = setup({ streams: { shards: 2 } });
    const keys = [streamKey(config.streams, 0), streamKey(config.streams, 1)];
    const group = uniqueName('g');
    for (const k of keys) await redis.call('XGROUP', 'CREATE', k, group, '0', 'MKSTREAM');
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: { ...config.producer, frameSize: 10 },
      log: silentLogger(),
    });
    const produced = new SyntheticMarket({ symbols: ['A', 'B', 'C'], seed: 2, source: 's' }).next(1000);
    await publisher.publish(produced);
    await publisher.flush();
    const settings = { maxAgeMs: 1, maxLen: 1, intervalMs: 1000 };
    const far = Date.now() + 3_600_000;

    // Nothing read yet: every entry is still needed, nothing may go however old or many they are.
    const first = await trimStreams(redis, config.streams, settings, far);
    expect(first.reduce((n, x) => n + x.trimmed, 0)).toBe(0);

    // Rounds of: read a few entries per shard, acknowledge only some, trim. Each round trims what is done and
    // nothing the group still owes; the entries left pending are acknowledged in the next round.
    const seen: string[] = [];
    let pending: [string, string][] = [];
    let trimmedRounds = 0;
    for (let round = 0; round < 50; round++) {
      for (const [k, id] of pending) await redis.xack(k, group, id);
      pending = [];
      let read = 0;
      for (const k of keys) {
        const reply = (await redis.call(
          'XREADGROUP',
          'GROUP',
          group,
          'c',
          'COUNT',
          '4',
          'STREAMS',
          k,
          '>',
        )) as [string, [string, string[]][]][] | null;
        const entries = reply?.[0]?.[1] ?? [];
        read += entries.length;
        entries.forEach(([id, fields], i) => {
          for (const t of decodeFrame(fields).ticks) seen.push(`${t.source}/${t.seq}`);
          if (i < 2) pending.push([k, id]);
        });
        const acked = entries.slice(2).map(([id]) => id);
        if (acked.length > 0) await redis.xack(k, group, ...acked);
      }
      const results = await trimStreams(redis, config.streams, settings, far);
      if (results.some((r) => r.trimmed > 0)) trimmedRounds++;
      // Every entry still pending survived the trim, and the group is named as the one holding it back.
      for (const [k, id] of pending) expect((await redis.xrange(k, id, id)).length).toBe(1);
      for (const r of results) {
        if (pending.some(([k]) => k === r.stream)) expect(r.heldBackBy).toBe(group);
      }
      if (read === 0) break;
    }
    expect(trimmedRounds).toBeGreaterThan(5);
    // Every tick was delivered exactly once: none was trimmed before the group read it.
    expect(seen.length).toBe(produced.length);
    expect(new Set(seen).size).toBe(produced.length);
  });
});

describe('retention in the commands (processes, real Redis)', () => {
  async function readSome(
    redis: RedisClient,
    stream: string,
    group: string,
    count: number,
  ): Promise<string[]> {
    const reply = (await redis.call(
      'XREADGROUP',
      'GROUP',
      group,
      'c',
      'COUNT',
      String(count),
      'STREAMS',
      stream,
      '>',
    )) as [string, [string][]][] | null;
    return reply?.[0]?.[1].map(([id]) => id) ?? [];
  }

  it('`tickstream trim` trims and names the group that held it back', async () => {
    const { config, redis } = setup({ streams: { shards: 2 } });
    const [s0, s1] = [streamKey(config.streams, 0), streamKey(config.streams, 1)];
    await fill(redis, s0, ['1-0', '2-0', '3-0', '4-0', '5-0', '6-0']);
    await fill(redis, s1, ['1-0', '2-0', '3-0']);
    const slow = uniqueName('slow');
    await redis.call('XGROUP', 'CREATE', s0, slow, '0');
    await redis.call('XGROUP', 'CREATE', s1, slow, '0');
    // s0: 1-0 acknowledged, 2-0 and 3-0 pending. s1: everything read and acknowledged.
    await readSome(redis, s0, slow, 3);
    await redis.xack(s0, slow, '1-0');
    await redis.xack(s1, slow, ...(await readSome(redis, s1, slow, 10)));

    const r = await runCli(['trim', '--max-len', '1'], {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
      TICKSTREAM_SHARDS: '2',
    });
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout
      .trim()
      .split('\n')
      .slice(2)
      .map((l) => l.split(/\s+/));
    expect(rows).toEqual([
      [s0, '6', '1', '2-0', slow],
      [s1, '3', '2', '2-1', '-'],
    ]);
    expect((await redis.xrange(s0, '-', '+')).map(([id]) => id)).toEqual(['2-0', '3-0', '4-0', '5-0', '6-0']);
    expect((await redis.xrange(s1, '-', '+')).map(([id]) => id)).toEqual(['3-0']);
  });

  it('`tickstream consume` trims on its interval, never past another group’s pending entries', async () => {
    const { config, redis } = setup({ streams: { shards: 1 } });
    const stream = streamKey(config.streams, 0);
    const slow = uniqueName('slow');
    await redis.call('XGROUP', 'CREATE', stream, slow, '0', 'MKSTREAM');
    await redis.call('XGROUP', 'CREATE', stream, 'quotes', '0');
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: { ...config.producer, frameSize: 5 },
      log: silentLogger(),
    });
    await publisher.publish(
      new SyntheticMarket({ symbols: ['A', 'B'], seed: 6, source: uniqueName('s') }).next(200),
    );
    await publisher.flush();
    expect(await redis.xlen(stream)).toBe(40);
    // The slow group holds the 4th entry onwards: 3 read and acknowledged, then 2 read and left pending.
    await redis.xack(stream, slow, ...(await readSome(redis, stream, slow, 3)));
    const pending = await readSome(redis, stream, slow, 2);

    startCli(['consume', 'quotes'], {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
      TICKSTREAM_SHARDS: '1',
      TICKSTREAM_QUOTE_KEY_PREFIX: config.quotes.keyPrefix,
      TICKSTREAM_QUOTE_CHANNEL_PREFIX: config.quotes.channelPrefix,
      TICKSTREAM_RETENTION_MAX_LEN: '1',
      TICKSTREAM_RETENTION_INTERVAL_MS: '100',
    });
    // The quotes group reads and acknowledges everything; the trim stops at the slow group's oldest pending.
    await waitUntil(
      async () => (await redis.xrange(stream, '-', '+', 'COUNT', 1))[0]?.[0] === pending[0],
      'a trim up to the slow group',
    );
    expect(await redis.xlen(stream)).toBe(37);
    for (const id of pending) expect(await redis.xrange(stream, id, id)).toHaveLength(1);

    // Once the slow group is done, a later pass of the interval trims down to the size bound.
    await redis.xack(stream, slow, ...pending, ...(await readSome(redis, stream, slow, 100)));
    await waitUntil(async () => (await redis.xlen(stream)) === 1, 'a later trim down to one entry');
  });
});
