import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { closeRedis } from '../../shared/redis.ts';
import { feedEventsKey } from '../../producers/feeds/report.ts';
import { FeedStandIn } from '../helpers/feed-standin.ts';
import { finished, runCli, startCli, stopChildren } from '../helpers/cli.ts';
import { cleanupPrefix, REDIS_URL, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

// Feed stand-in (Coinbase protocol) → `tickstream produce feed` → `tickstream consume quotes` → `quote`.
const coinbase = JSON.parse(
  readFileSync(join(import.meta.dirname, '..', 'fixtures', 'feeds', 'coinbase.json'), 'utf8'),
) as Record<string, Record<string, unknown>>;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await stopChildren();
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe('tickstream produce feed (processes, stand-in venue, real Redis)', () => {
  it("streams a venue's quotes into the projector; SIGTERM unsubscribes and exits 0; status shows the feed", async () => {
    const config = testConfig();
    const redis = testRedis(config);
    const prefix = config.streams.prefix;
    cleanups.push(async () => {
      await cleanupPrefix(redis, prefix);
      await closeRedis(redis);
    });
    const tickers = [
      { best_bid: '400.10', best_ask: '400.30', sequence: 100 },
      { best_bid: '400.20', best_ask: '400.40', sequence: 101 },
      { best_bid: '400.23', best_ask: '400.25', sequence: 102 },
    ];
    const standIn = await FeedStandIn.start({
      onMessage: (peer, message) => {
        const m = message as { type?: string };
        if (m.type !== 'subscribe') return;
        peer.send(JSON.stringify(coinbase.subscriptions));
        tickers.forEach((t, i) =>
          peer.send(JSON.stringify({ ...coinbase.ticker, ...t, time: `2026-11-30T08:19:2${i}.000000001Z` })),
        );
        peer.send('not json at all');
      },
    });
    cleanups.push(() => standIn.close());
    const env = {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: prefix,
      TICKSTREAM_SHARDS: '2',
      TICKSTREAM_QUOTE_KEY_PREFIX: `${prefix}:quote:`,
      TICKSTREAM_QUOTE_CHANNEL_PREFIX: `${prefix}:quotes:`,
      TICKSTREAM_BLOCK_MS: '100',
    };
    const consumer = startCli(['consume', 'quotes', '--group', uniqueName('quotes')], env);
    const feed = startCli(
      ['produce', 'feed', 'coinbase', '--symbols', 'BTC-USD', '--channels', 'quotes', '--url', standIn.url],
      env,
    );

    await waitUntil(
      async () => (await redis.hget(`${prefix}:quote:BTC-USD`, 'bid')) === '400.23',
      'the newest quote projected',
      { timeoutMs: 45_000 },
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\nfeed: ${feed.out.stderr}\nconsumer: ${consumer.out.stderr}`);
    });
    const quote = await runCli(['quote', 'BTC-USD'], env);
    expect(quote.code, quote.stderr).toBe(0);
    expect(quote.stdout).toMatch(/^BTC-USD\s+400\.23\s+0\.46688654\s+400\.25\s+1\.5663704/m);

    // The malformed message was kept for diagnosis, raw, and the feed went on.
    const events = (await redis.xrange(feedEventsKey(config.streams), '-', '+')) as [string, string[]][];
    const fields = events.map(([, f]) =>
      Object.fromEntries(f.flatMap((v, i) => (i % 2 === 0 ? [[v, f[i + 1]]] : []))),
    );
    expect(fields).toEqual([
      expect.objectContaining({
        kind: 'malformed',
        venue: 'coinbase',
        detail: 'not JSON',
        raw: 'not json at all',
      }),
    ]);

    feed.kill('SIGTERM');
    const stopped = await finished(feed);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stderr).toMatch(/"msg":"feed stopped"/);
    // The graceful stop unsubscribed before closing.
    await waitUntil(
      () => standIn.received[0]?.some((m) => (m as { type?: string }).type === 'unsubscribe'),
      'the unsubscribe message',
    );

    const status = await runCli(['status', '--json'], env);
    expect(status.code, status.stderr).toBe(0);
    const feeds = (JSON.parse(status.stdout) as { sections: Record<string, Record<string, unknown>[]> })
      .sections['Live feeds'];
    expect(feeds).toEqual([
      expect.objectContaining({
        feed: 'coinbase',
        venue: 'coinbase',
        state: 'stopped',
        ticks: 3,
        malformed: 1,
      }),
    ]);
    consumer.kill('SIGTERM');
    expect((await finished(consumer)).code).toBe(0);
  });

  it('refuses an unknown venue and a bad channel with exit code 2', async () => {
    const a = await runCli(['produce', 'feed', 'nasdaq', '--symbols', 'AAPL'], { REDIS_URL });
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/unknown venue "nasdaq"/);
    const b = await runCli(['produce', 'feed', 'binance', '--symbols', 'BTCUSDT', '--channels', 'book'], {
      REDIS_URL,
    });
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/--channels: "book" is not one of trades, quotes/);
  });
});
