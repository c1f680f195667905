import { register } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { BinanceMapper } from '../../producers/feeds/binance.ts';
import { CoinbaseMapper } from '../../producers/feeds/coinbase.ts';
import type { FeedEvent } from '../../producers/feeds/mapper.ts';
import { FeedSource, type FeedSettings } from '../../producers/feeds/source.ts';
import { Publisher } from '../../producers/publisher.ts';
import { decodeFrame } from '../../shared/codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Tick } from '../../shared/model.ts';
import { closeRedis } from '../../shared/redis.ts';
import { shardOf, streamKey } from '../../shared/streams.ts';
import { CrashingMapper } from '../helpers/crashing-mapper.ts';
import { fastFeedSettings, FeedStandIn, feedFixture } from '../helpers/feed-standin.ts';
import { cleanupPrefix, testConfig, testRedis, waitUntil } from '../helpers/index.ts';

// What is particular to a feed in a worker thread (TICKSTREAM_FEED_THREADS, the default): the hand-over to
// the main thread, its metrics, backpressure across threads, shutdown and a failing worker.
// test/int/feeds.int.test.ts runs the behaviour common to both modes.
const coinbase = feedFixture('coinbase');

const fast: FeedSettings = { ...fastFeedSettings, threads: true };

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

const SYMBOLS = ['BTCUSDT', 'ETHUSDT', 'SOLUSDT'];

/** Binance trade `i` (0-based): symbols in turn, trade ids consecutive per symbol. */
function binanceTrade(i: number): string {
  const s = SYMBOLS[i % SYMBOLS.length]!;
  return JSON.stringify({
    stream: `${s.toLowerCase()}@trade`,
    data: {
      e: 'trade',
      E: 1,
      s,
      t: Math.floor(i / SYMBOLS.length) + 1,
      p: (100 + i / 100).toFixed(2),
      q: '0.5',
      T: 1_796_026_767_000_000 + i,
      m: i % 2 === 0,
    },
  });
}

function binance(url: string): BinanceMapper {
  return new BinanceMapper({ symbols: SYMBOLS, channels: ['trades'], url });
}

/** A metric's value for `labels` (a counter, or a histogram's `_count` series). */
async function metric(name: string, labels: Record<string, string>, series = name): Promise<number> {
  const m = register.getSingleMetric(name);
  if (m === undefined) return 0;
  const { values } = await m.get();
  const v = values.find(
    (x) =>
      (x as { metricName?: string }).metricName === (series === name ? undefined : series) &&
      Object.entries(labels).every(([k, l]) => (x.labels as Record<string, unknown>)[k] === l),
  );
  return v?.value ?? 0;
}

async function startStandIn(o: Parameters<typeof FeedStandIn.start>[0]): Promise<FeedStandIn> {
  const standIn = await FeedStandIn.start(o);
  cleanups.push(() => standIn.close());
  return standIn;
}

function source(o: ConstructorParameters<typeof FeedSource>[0]): FeedSource {
  const s = new FeedSource(o);
  cleanups.push(() => s.close());
  return s;
}

describe('FeedSource in a feed worker thread', () => {
  it('hands over every tick in order, counted in stats and in the main thread metrics', async () => {
    const total = 3000;
    const standIn = await startStandIn({
      onConnection: (peer) => {
        for (let i = 0; i < total; i++) {
          peer.send(binanceTrade(i));
          if (i === 1000) peer.send('{"stream": not json');
        }
      },
    });
    const events: FeedEvent[] = [];
    const feed = source({
      mapper: binance(standIn.url),
      settings: fast,
      log: silentLogger(),
      onEvent: (e) => events.push(e),
    });
    expect(feed.threaded).toBe(true);
    const venue = { venue: 'binance' };
    const before = {
      messages: await metric('tickstream_feed_messages_total', venue),
      trades: await metric('tickstream_feed_ticks_total', { ...venue, type: 'trade' }),
      malformed: await metric('tickstream_feed_malformed_total', venue),
      lag: await metric('tickstream_feed_lag_seconds', venue, 'tickstream_feed_lag_seconds_count'),
    };
    const got: Tick[] = [];
    for await (const batch of feed.batches()) {
      got.push(...batch);
      if (got.length >= total) break;
    }
    expect(got.map((t) => `${t.symbol}:${t.seq}`)).toEqual(
      Array.from({ length: total }, (_, i) => `${SYMBOLS[i % 3]}:${Math.floor(i / 3) + 1}`),
    );
    expect(got[0]).toEqual({
      type: 'trade',
      source: 'binance',
      symbol: 'BTCUSDT',
      ts: 1_796_026_767_000_000_000n,
      seq: 1,
      venue: 'binance',
      price: 100,
      size: 0.5,
      side: 'sell',
    });
    expect(feed.stats).toMatchObject({ messages: total + 1, ticks: total, malformed: 1, connected: true });
    expect(events).toEqual([{ kind: 'malformed', detail: 'not JSON', raw: '{"stream": not json' }]);
    expect(await metric('tickstream_feed_messages_total', venue)).toBe(before.messages + total + 1);
    expect(await metric('tickstream_feed_ticks_total', { ...venue, type: 'trade' })).toBe(
      before.trades + total,
    );
    expect(await metric('tickstream_feed_malformed_total', venue)).toBe(before.malformed + 1);
    // Every trade carries its exchange time: each was observed once, in the worker, and added here.
    expect(await metric('tickstream_feed_lag_seconds', venue, 'tickstream_feed_lag_seconds_count')).toBe(
      before.lag + total,
    );
  });

  it('hands the Publisher rows it stores as a main-thread feed would: each in its shard, in order', async () => {
    const config = testConfig();
    const redis = testRedis(config);
    cleanups.push(async () => {
      await cleanupPrefix(redis, config.streams.prefix);
      await closeRedis(redis);
    });
    const total = 600;
    const standIn = await startStandIn({
      onConnection: (peer) => {
        for (let i = 0; i < total; i++) peer.send(binanceTrade(i));
      },
    });
    const expected: Tick[] = [];
    const here = source({
      mapper: binance(standIn.url),
      settings: { ...fast, threads: false },
      log: silentLogger(),
    });
    for await (const batch of here.batches()) {
      expected.push(...batch);
      if (expected.length >= total) break;
    }
    await here.close();

    const feed = source({ mapper: binance(standIn.url), settings: fast, log: silentLogger() });
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: { ...config.producer, frameSize: 64 },
      log: silentLogger(),
    });
    let published = 0;
    for await (const batch of feed.encoded(config.streams.shards)) {
      expect(batch.shardCount).toBe(config.streams.shards);
      await publisher.publishEncoded(batch);
      published += batch.rows.length;
      if (published >= total) break;
    }
    await publisher.flush();
    for (let shard = 0; shard < config.streams.shards; shard++) {
      const entries = (await redis.xrange(streamKey(config.streams, shard), '-', '+')) as [
        string,
        string[],
      ][];
      const stored = entries.flatMap(([, fields]) => decodeFrame(fields).ticks);
      expect(stored).toEqual(expected.filter((t) => shardOf(t.symbol, config.streams.shards) === shard));
      expect(entries.every(([, f]) => Number(f[3]) <= 64)).toBe(true);
    }
  });

  it("pauses the worker's socket while ticks wait, and resumes it once they are taken", async () => {
    const total = 20_000;
    // ~1 KB a message: far more than the socket buffers on both sides hold.
    const pad = 'x'.repeat(1000);
    let peer: WebSocket | undefined;
    const standIn = await startStandIn({
      onConnection: (p) => {
        peer = p;
        for (let u = 1; u <= total; u++)
          p.send(
            JSON.stringify({
              stream: 'btcusdt@bookTicker',
              data: { u, s: 'BTCUSDT', b: '1.0', B: '2', a: '1.1', A: '3', pad },
            }),
          );
      },
    });
    const maxBufferedTicks = 500;
    const feed = source({
      mapper: new BinanceMapper({ symbols: ['BTCUSDT'], channels: ['quotes'], url: standIn.url }),
      settings: { ...fast, maxBufferedTicks },
      log: silentLogger(),
    });
    let got = 0;
    let held = false;
    for await (const batch of feed.batches()) {
      got += batch.length;
      if (!held) {
        held = true;
        // Take nothing for a while: the worker must stop reading. Polled until the count of messages it
        // read holds still while the stand-in still has most of the burst unsent.
        let last = -1;
        let still = 0;
        await waitUntil(() => {
          const now = feed.stats.messages;
          still = now === last ? still + 1 : 0;
          last = now;
          return still >= 8 && (peer?.bufferedAmount ?? 0) > 0;
        }, 'the worker socket paused');
        const waiting = feed.stats.ticks - got;
        // Paused at the bound; what was taken since (the first batch) may have brought it under, not to half.
        expect(waiting).toBeGreaterThanOrEqual(maxBufferedTicks / 2);
        // The bound, plus what was read before the pause reached the worker.
        expect(waiting).toBeLessThan(maxBufferedTicks + 500);
        expect(feed.stats.messages).toBeLessThan(total / 2);
      }
      if (got >= total) break;
    }
    expect(got).toBe(total);
    expect(feed.stats.reconnects).toBe(0);
  });

  it('close() while the socket is paused still ends promptly (the close handshake is read)', async () => {
    const pad = 'x'.repeat(1000);
    const standIn = await startStandIn({
      onConnection: (p) => {
        for (let u = 1; u <= 20_000; u++)
          p.send(
            JSON.stringify({
              stream: 'btcusdt@bookTicker',
              data: { u, s: 'BTCUSDT', b: '1', B: '2', a: '1.1', A: '3', pad },
            }),
          );
      },
    });
    const feed = source({
      mapper: new BinanceMapper({ symbols: ['BTCUSDT'], channels: ['quotes'], url: standIn.url }),
      settings: { ...fast, maxBufferedTicks: 200 },
      log: silentLogger(),
    });
    const batches = feed.batches()[Symbol.asyncIterator]();
    await batches.next();
    // Nothing more taken: the worker pauses at the bound.
    await waitUntil(() => feed.stats.ticks >= 200, 'the bound reached');
    const started = Date.now();
    const closed = feed.close();
    for (let r = await batches.next(); r.done !== true; r = await batches.next());
    await closed;
    // ws would otherwise wait 30 s for a close frame it never reads.
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('close() unsubscribes, closes the socket, hands over what was received, and the worker ends', async () => {
    const count = 50;
    const standIn = await startStandIn({
      onMessage: (peer, message) => {
        if ((message as { type?: string }).type !== 'subscribe') return;
        peer.send(JSON.stringify(coinbase.subscriptions));
        for (let id = 1; id <= count; id++)
          peer.send(
            JSON.stringify({
              ...coinbase.match,
              trade_id: id,
              time: `2026-11-30T08:19:27.${String(100_000 + id)}Z`,
            }),
          );
      },
    });
    const feed = source({
      mapper: new CoinbaseMapper({ symbols: ['BTC-USD'], channels: ['trades'], url: standIn.url }),
      settings: fast,
      log: silentLogger(),
    });
    const batches = feed.batches()[Symbol.asyncIterator]();
    const got: Tick[] = [...((await batches.next()).value as Tick[])];
    await waitUntil(() => feed.stats.ticks === count, 'every trade read by the worker');
    const closed = feed.close();
    // The iteration ends by itself once everything received has been yielded.
    for (let r = await batches.next(); r.done !== true; r = await batches.next()) got.push(...r.value);
    await closed;
    expect(got.map((t) => t.seq)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    expect(standIn.received[0]).toContainEqual(expect.objectContaining({ type: 'unsubscribe' }));
    await waitUntil(() => standIn.peers[0]?.readyState === 3, 'the socket closed');
    expect(feed.stats.connected).toBe(false);
  });

  it('a worker that fails ends the iteration with an error', async () => {
    const standIn = await startStandIn({
      onConnection: (peer) => peer.send(JSON.stringify({ crash: true })),
    });
    const feed = source({
      mapper: new CrashingMapper({ url: standIn.url }),
      settings: fast,
      log: silentLogger(),
    });
    expect(feed.threaded).toBe(true);
    const consume = async () => {
      for await (const batch of feed.batches()) void batch;
    };
    await expect(consume()).rejects.toMatchObject({
      name: 'FeedError',
      retriable: false,
      message: 'the feed worker failed: a bug in the mapper',
    });
  });
});
