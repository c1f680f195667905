import { createServer as createTcpServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { CoinbaseMapper } from '../../producers/feeds/coinbase.ts';
import { BinanceMapper } from '../../producers/feeds/binance.ts';
import type { FeedEvent } from '../../producers/feeds/mapper.ts';
import { FeedSource, type FeedSettings } from '../../producers/feeds/source.ts';
import { Publisher } from '../../producers/publisher.ts';
import { decodeFrame } from '../../shared/codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey, type Tick } from '../../shared/model.ts';
import { closeRedis } from '../../shared/redis.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { fastFeedSettings, FeedStandIn, feedFixture } from '../helpers/feed-standin.ts';
import { cleanupPrefix, testConfig, testRedis, waitUntil } from '../helpers/index.ts';

// FeedSource against stand-in venue servers (test/helpers/feed-standin.ts) replaying documented messages,
// with the feed in a worker thread (the default) and on the main thread (TICKSTREAM_FEED_THREADS=false): the
// same behaviour either way. test/int/feeds-worker.int.test.ts has what is particular to the worker.
const coinbase = feedFixture('coinbase');

const fastSettings: FeedSettings = { ...fastFeedSettings, staleMs: 600 };

function match(tradeId: number, product = 'BTC-USD'): Record<string, unknown> {
  const micros = String(100_000 + tradeId).padStart(6, '0');
  return {
    ...coinbase.match,
    trade_id: tradeId,
    product_id: product,
    time: `2026-11-30T08:19:27.${micros}Z`,
  };
}

/** A Coinbase stand-in: confirms the subscription, then replays trades `from..to` on every connection. */
function coinbaseScript(replay: (peer: WebSocket, index: number) => void) {
  return (peer: WebSocket, message: unknown, index: number) => {
    if ((message as { type?: string }).type !== 'subscribe') return;
    peer.send(JSON.stringify(coinbase.subscriptions));
    replay(peer, index);
  };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function collect(source: FeedSource, until: (ticks: Tick[]) => boolean): Promise<Tick[]> {
  const got: Tick[] = [];
  for await (const batch of source.batches()) {
    got.push(...batch);
    if (until(got)) break;
  }
  return got;
}

describe.each([
  { mode: 'feed worker thread', threads: true },
  { mode: 'main thread', threads: false },
])('FeedSource against a stand-in venue ($mode)', ({ threads }) => {
  const fast: FeedSettings = { ...fastSettings, threads };

  it('resubscribes after a dropped connection; the replayed trades are dropped, the missed ones reported', async () => {
    const events: FeedEvent[] = [];
    const standIn = await FeedStandIn.start({
      onMessage: coinbaseScript((peer, index) => {
        // First connection: trades 1..5, then the network fails. Second: 3..8 again (a venue replaying
        // its recent trades) and then 12 (9..11 were lost while we were away).
        const ids = index === 0 ? [1, 2, 3, 4, 5] : [3, 4, 5, 6, 7, 8, 12];
        for (const id of ids) peer.send(JSON.stringify(match(id)));
        if (index === 0) setTimeout(() => peer.terminate(), 50);
      }),
    });
    cleanups.push(() => standIn.close());
    const source = new FeedSource({
      mapper: new CoinbaseMapper({ symbols: ['BTC-USD'], channels: ['trades'], url: standIn.url }),
      settings: fast,
      log: silentLogger(),
      onEvent: (e) => events.push(e),
    });
    cleanups.push(() => source.close());
    const ticks = await collect(source, (t) => t.some((x) => x.seq === 12));
    expect(ticks.map((t) => t.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 12]);
    expect(standIn.connections).toBe(2);
    // Both connections subscribed to the same thing.
    expect(standIn.received[1]).toEqual(standIn.received[0]);
    expect(source.stats.reconnects).toBe(1);
    expect(source.stats.duplicates).toBe(3);
    expect(events).toEqual([{ kind: 'gap', symbol: 'BTC-USD', detail: '3 trade ids missing before 12' }]);
  });

  it('keeps going after malformed and unknown messages, and keeps the raw text bounded', async () => {
    const events: FeedEvent[] = [];
    const standIn = await FeedStandIn.start({
      onMessage: coinbaseScript((peer) => {
        peer.send(JSON.stringify(match(1)));
        peer.send('{"type":"match", this is not json' + 'x'.repeat(500));
        peer.send(JSON.stringify(coinbase.unknown));
        peer.send(JSON.stringify({ ...match(2), price: '-' }));
        peer.send(JSON.stringify(match(3)));
      }),
    });
    cleanups.push(() => standIn.close());
    const source = new FeedSource({
      mapper: new CoinbaseMapper({ symbols: ['BTC-USD'], channels: ['trades'], url: standIn.url }),
      settings: fast,
      log: silentLogger(),
      onEvent: (e) => events.push(e),
    });
    cleanups.push(() => source.close());
    const ticks = await collect(source, (t) => t.some((x) => x.seq === 3));
    expect(ticks.map((t) => t.seq)).toEqual([1, 3]);
    expect(source.stats.malformed).toBe(2);
    const malformed = events.filter((e) => e.kind === 'malformed');
    expect(malformed.map((e) => e.detail)).toEqual(['not JSON', 'field "price": expected a decimal number']);
    expect(malformed[0]!.raw).toBe(`{"type":"match", this is not json${'x'.repeat(31)}…`);
    expect(malformed[1]!.raw!.startsWith('{"type":"match"')).toBe(true);
    // Trade 2 never made it into a tick, so 3 follows a gap of one.
    expect(events.filter((e) => e.kind === 'gap')).toHaveLength(1);
  });

  it('keeps a message that is not valid UTF-8 as malformed, on the same connection; a real U+FFFD passes', async () => {
    const events: FeedEvent[] = [];
    const standIn = await FeedStandIn.start({
      onMessage: coinbaseScript((peer) => {
        peer.send(JSON.stringify(match(1)));
        // A text frame whose product id holds the bytes FF FE: no UTF-8 decoder may turn them into a symbol.
        const bad = JSON.stringify(match(2)).replace('"BTC-USD"', '"BTC-USD\u0000"');
        const at = Buffer.from(bad).indexOf(0);
        const bytes = Buffer.from(bad);
        peer.send(Buffer.concat([bytes.subarray(0, at), Buffer.from([0xff, 0xfe]), bytes.subarray(at + 1)]), {
          binary: false,
        });
        // Valid UTF-8 that happens to contain U+FFFD (in a field the mapper does not use) is an ordinary trade.
        peer.send(JSON.stringify({ ...match(3), maker_order_id: 'id-\uFFFD' }));
      }),
    });
    cleanups.push(() => standIn.close());
    const source = new FeedSource({
      mapper: new CoinbaseMapper({ symbols: ['BTC-USD'], channels: ['trades'], url: standIn.url }),
      settings: fast,
      log: silentLogger(),
      onEvent: (e) => events.push(e),
    });
    cleanups.push(() => source.close());
    const ticks = await collect(source, (t) => t.some((x) => x.seq === 3));
    expect(ticks.map((t) => [t.seq, t.symbol])).toEqual([
      [1, 'BTC-USD'],
      [3, 'BTC-USD'],
    ]);
    expect(source.stats.malformed).toBe(1);
    const malformed = events.filter((e) => e.kind === 'malformed');
    expect(malformed.map((e) => e.detail)).toEqual(['not valid UTF-8']);
    expect(malformed[0]!.raw!.startsWith('{"type":"match","trade_id":2,')).toBe(true);
    expect(standIn.connections).toBe(1);
    expect(source.stats.reconnects).toBe(0);
  });

  it('drops a connection whose server stops answering pings, and reconnects', async () => {
    let connections = 0;
    const standIn = await FeedStandIn.start({
      autoPong: false,
      onMessage: coinbaseScript((peer, index) => {
        connections = index + 1;
        peer.send(JSON.stringify(match(index + 1)));
        // Then silence: no messages, no pongs.
      }),
    });
    cleanups.push(() => standIn.close());
    const source = new FeedSource({
      mapper: new CoinbaseMapper({ symbols: ['BTC-USD'], channels: ['trades'], url: standIn.url }),
      settings: { ...fast, staleMs: 300 },
      log: silentLogger(),
    });
    cleanups.push(() => source.close());
    const ticks = await collect(source, (t) => t.length >= 2);
    expect(ticks.map((t) => t.seq)).toEqual([1, 2]);
    expect(connections).toBe(2);
    expect(source.stats.reconnects).toBeGreaterThanOrEqual(1);
  });

  it('a venue that never answers the handshake is retried, and close() while connecting ends the feed', async () => {
    const attempts: Socket[] = [];
    const server = createTcpServer((socket) => {
      attempts.push(socket); // accepts TCP, never answers the upgrade
      socket.on('error', () => socket.destroy());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(async () => {
      for (const a of attempts) a.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    });
    const port = (server.address() as { port: number }).port;
    const source = new FeedSource({
      mapper: new CoinbaseMapper({
        symbols: ['BTC-USD'],
        channels: ['trades'],
        url: `ws://127.0.0.1:${port}`,
      }),
      settings: { ...fast, connectTimeoutMs: 150 },
      log: silentLogger(),
    });
    const consumed = collect(source, () => false);
    await waitUntil(() => attempts.length >= 2, 'a second attempt after the handshake timed out');
    await waitUntil(() => attempts.length >= 3, 'a third attempt, to close while it connects');
    await source.close();
    expect(await consumed).toEqual([]);
    expect(source.stats.connected).toBe(false);
    expect(source.stats.reconnects).toBeGreaterThanOrEqual(2);
    expect(source.stats.connects).toBeGreaterThanOrEqual(3);
  });

  it('ends with a non-retriable error when the venue refuses the subscription', async () => {
    const standIn = await FeedStandIn.start({
      onMessage: (peer) => peer.send(JSON.stringify(coinbase.error)),
    });
    cleanups.push(() => standIn.close());
    const source = new FeedSource({
      mapper: new CoinbaseMapper({ symbols: ['NOPE-USD'], channels: ['trades'], url: standIn.url }),
      settings: fast,
      log: silentLogger(),
    });
    await expect(collect(source, () => false)).rejects.toMatchObject({
      name: 'FeedError',
      retriable: false,
      message: 'Coinbase refused the subscription: Failed to subscribe NOPE-USD is not a valid product',
    });
    expect(standIn.connections).toBe(1);
  });

  it('pauses the socket while the publisher lags, holding memory to the buffer bound', async () => {
    const total = 20_000;
    const standIn = await FeedStandIn.start({
      onConnection: (peer) => {
        // A fast venue: everything at once (ws buffers it on our side of the socket only while we read).
        let u = 0;
        const burst = () => {
          for (let i = 0; i < 500 && u < total; i++) {
            u++;
            peer.send(
              JSON.stringify({
                stream: 'btcusdt@bookTicker',
                data: { u, s: 'BTCUSDT', b: '1.0', B: '2', a: '1.1', A: '3' },
              }),
            );
          }
          if (u < total) setImmediate(burst);
        };
        burst();
      },
    });
    cleanups.push(() => standIn.close());
    const maxBufferedTicks = 200;
    const source = new FeedSource({
      mapper: new BinanceMapper({ symbols: ['BTCUSDT'], channels: ['quotes'], url: standIn.url }),
      settings: { ...fast, maxBufferedTicks, staleMs: 2000 },
      log: silentLogger(),
    });
    cleanups.push(() => source.close());
    let largest = 0;
    let got = 0;
    for await (const batch of source.batches()) {
      largest = Math.max(largest, batch.length);
      got += batch.length;
      // A slow publisher: a little wait per batch.
      await new Promise((r) => setTimeout(r, 2));
      if (got >= total) break;
    }
    expect(got).toBe(total);
    // What piles up while paused is what the socket had already read when the pause took effect: bounded
    // by the buffer plus one read's worth, never the whole burst.
    expect(largest).toBeLessThan(total / 4);
    expect(source.stats.reconnects).toBe(0);
  });
});

describe.each([
  { mode: 'feed worker thread', threads: true },
  { mode: 'main thread', threads: false },
])('FeedSource → Publisher → Redis ($mode)', ({ threads }) => {
  const fast: FeedSettings = { ...fastSettings, threads };

  it('publishes each trade once across a reconnect that replays them', async () => {
    const config = testConfig();
    const r = testRedis(config);
    cleanups.push(async () => {
      await cleanupPrefix(r, config.streams.prefix);
      await closeRedis(r);
    });
    const standIn = await FeedStandIn.start({
      onMessage: coinbaseScript((peer, index) => {
        const ids = index === 0 ? [1, 2, 3, 4] : [1, 2, 3, 4, 5, 6];
        for (const id of ids) {
          peer.send(JSON.stringify(match(id, 'BTC-USD')));
          peer.send(JSON.stringify(match(id, 'ETH-USD')));
        }
        if (index === 0) setTimeout(() => peer.terminate(), 50);
      }),
    });
    cleanups.push(() => standIn.close());
    const source = new FeedSource({
      mapper: new CoinbaseMapper({ symbols: ['BTC-USD', 'ETH-USD'], channels: ['trades'], url: standIn.url }),
      settings: fast,
      log: silentLogger(),
    });
    cleanups.push(() => source.close());
    const publisher = new Publisher({
      redis: r,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    let published = 0;
    for await (const batch of source.batches()) {
      await publisher.publish(batch);
      published += batch.length;
      if (published >= 12) break;
    }
    await publisher.flush();
    const stored: Tick[] = [];
    for (const key of allStreamKeys(config.streams)) {
      for (const [, fields] of (await r.xrange(key, '-', '+')) as [string, string[]][]) {
        const frame = decodeFrame(fields);
        stored.push(...frame.ticks);
      }
    }
    expect(stored).toHaveLength(12);
    expect(new Set(stored.map(tickKey)).size).toBe(12);
    await waitUntil(() => standIn.connections === 2, 'the reconnect');
  });
});
