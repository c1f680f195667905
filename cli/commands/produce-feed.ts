import type { Command } from 'commander';
import { ConfigError } from '../../shared/errors.ts';
import { handleSignals } from '../../shared/lifecycle.ts';
import { RateLine } from '../../shared/progress.ts';
import { redisReady } from '../../shared/probes.ts';
import { closeRedis, createRedis, dropIfDown } from '../../shared/redis.ts';
import { Publisher } from '../../producers/publisher.ts';
import { createMapper, VENUES } from '../../producers/feeds/index.ts';
import { CHANNELS, type Channel } from '../../producers/feeds/mapper.ts';
import { FeedReporter } from '../../producers/feeds/report.ts';
import { FeedSource } from '../../producers/feeds/source.ts';
import { startProbes } from '../probes.ts';
import { duration, makeRuntime, runCommand } from '../runtime.ts';

/**
 * `tickstream produce feed <venue>`: one process per feed connection, publishing what the venue sends
 * through the same Publisher (frames, backpressure) as the other producers. docs/feeds.md.
 */
export function registerProduceFeed(produce: Command): void {
  produce
    .command('feed <venue>')
    .description(`publish a live venue feed (${VENUES.join(', ')}): trades and quotes, reconnecting`)
    .requiredOption(
      '--symbols <list>',
      'comma-separated symbols as the venue names them (BTC-USD, BTCUSDT, BTC/USD, AAPL)',
    )
    .option('--channels <list>', 'trades, quotes or both', 'trades,quotes')
    .option('--url <ws-url>', "the venue's WebSocket endpoint (default: its public one)")
    .option('--name <name>', 'this feed in `status` and the feed events (default: the venue)')
    .option('--duration <time>', 'stop after this long (e.g. 30s, 10m)', duration('--duration'))
    .action((venue: string, opts: FeedOpts) => runCommand(() => produceFeed(venue, opts)));
}

interface FeedOpts {
  symbols: string;
  channels: string;
  url?: string;
  name?: string;
  duration?: number;
}

export function parseChannels(spec: string): Channel[] {
  const out: Channel[] = [];
  for (const c of spec.split(',').map((s) => s.trim())) {
    if (!(CHANNELS as readonly string[]).includes(c))
      throw new ConfigError(`--channels: "${c}" is not one of ${CHANNELS.join(', ')}`);
    if (!out.includes(c as Channel)) out.push(c as Channel);
  }
  if (out.length === 0) throw new ConfigError('--channels: name at least one of trades, quotes');
  return out;
}

function parseFeedSymbols(spec: string): string[] {
  const symbols = [...new Set(spec.split(',').map((s) => s.trim()))].filter((s) => s.length > 0);
  if (symbols.length === 0) throw new ConfigError('--symbols: name at least one symbol');
  return symbols;
}

async function produceFeed(venue: string, opts: FeedOpts): Promise<void> {
  const { config, log: rootLog } = makeRuntime();
  const symbols = parseFeedSymbols(opts.symbols);
  const channels = parseChannels(opts.channels);
  const mapper = createMapper(
    venue,
    { symbols, channels, ...(opts.url === undefined ? {} : { url: opts.url }) },
    {
      alpacaKeyId: config.feed.alpacaKeyId,
      alpacaSecretKey: config.feed.alpacaSecretKey,
      alpacaFeed: config.feed.alpacaFeed,
    },
  );
  const name = opts.name ?? venue;
  const log = rootLog.child({ component: 'feed', feed: name, venue });
  const redis = createRedis(config, { log, connectionName: `tickstream:feed:${name}` });
  const abort = new AbortController();
  const publisher = new Publisher({
    redis,
    layout: config.streams,
    settings: config.producer,
    log: log.child({ component: 'publisher' }),
    signal: abort.signal,
  });
  const reporter = new FeedReporter({
    redis,
    layout: config.streams,
    name,
    eventsMaxLen: config.feed.eventsMaxLen,
    log,
  });
  const source = new FeedSource({
    mapper,
    settings: config.feed,
    log,
    onEvent: (e) => reporter.event(venue, e),
  });
  // /readyz: Redis answers and the venue's socket is open (a feed that is reconnecting is not ready).
  const probes = await startProbes(config, log).catch(async (err: unknown) => {
    await closeRedis(redis);
    throw err;
  });
  probes.setChecks([
    redisReady(redis),
    {
      name: 'feed',
      check: async () => {
        if (!source.stats.connected) throw new Error(`not connected to ${venue}`);
      },
    },
  ]);
  const startedAt = Date.now();
  const report = (stoppedAt?: number) =>
    reporter.report({
      ...(stoppedAt === undefined ? {} : { stoppedAt }),
      ...source.stats,
      venue,
      symbols,
      channels,
      pid: process.pid,
      startedAt,
      updatedAt: Date.now(),
    });
  const reportTimer = setInterval(() => void report(), 1000);
  let deadline: NodeJS.Timeout | undefined;
  // Both stops also end a backpressure pause, or a publisher held by a slow group would never finish.
  const stop = () => {
    abort.abort();
    return source.close();
  };
  if (opts.duration !== undefined) deadline = setTimeout(() => void stop(), opts.duration);
  let finished: Promise<unknown> = Promise.resolve();
  handleSignals(
    log,
    async () => {
      await stop();
      dropIfDown(redis);
      await finished;
    },
    { exitAfterStop: false, timeoutMs: config.consumer.shutdownTimeoutMs },
  );
  const rate = new RateLine(log, 'ticks');
  log.info({ symbols, channels }, 'starting the feed');
  const running = (async () => {
    // A feed worker hands over rows already encoded for our shards; in the main thread, ticks as usual.
    if (source.threaded) {
      for await (const batch of source.encoded(config.streams.shards)) {
        await publisher.publishEncoded(batch);
        rate.add(batch.rows.length);
      }
    } else {
      for await (const batch of source.batches()) {
        await publisher.publish(batch);
        rate.add(batch.length);
      }
    }
    await publisher.flush();
  })();
  finished = running.catch(() => undefined);
  try {
    await running;
    const summary = rate.done();
    log.info(
      {
        messages: source.stats.messages,
        ticks: source.stats.ticks,
        published: publisher.stats.ticks,
        reconnects: source.stats.reconnects,
        gaps: source.stats.gaps,
        malformed: source.stats.malformed,
        duplicates: source.stats.duplicates,
        seconds: summary.seconds,
      },
      'feed stopped',
    );
  } finally {
    rate.done();
    clearInterval(reportTimer);
    if (deadline !== undefined) clearTimeout(deadline);
    abort.abort();
    await source.close();
    await report(Date.now());
    await reporter.flush();
    await probes.close();
    await closeRedis(redis);
  }
}
