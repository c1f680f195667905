import type { Command } from 'commander';
import { ConfigError } from '../../shared/errors.ts';
import { handleSignals } from '../../shared/lifecycle.ts';
import { redisReady } from '../../shared/probes.ts';
import { RateLine } from '../../shared/progress.ts';
import { closeRedis, createRedis, dropIfDown } from '../../shared/redis.ts';
import { checkDurability } from '../../producers/durability.ts';
import { Publisher } from '../../producers/publisher.ts';
import { drive } from '../../producers/run.ts';
import { SyntheticMarket, symbolNames } from '../../producers/synthetic.ts';
import { startProbes } from '../probes.ts';
import { duration, makeRuntime, positiveInt, positiveNumber, runCommand } from '../runtime.ts';

export function registerProduce(program: Command): Command {
  const produce = program.command('produce').description('push ticks into the shard streams');
  produce
    .command('synthetic')
    .description('generate a seedable synthetic market (GBM prices, quotes and trades)')
    .option('--symbols <n|list>', 'number of symbols (1-100000), or a comma-separated list', '50')
    .option('--rate <ticks/s>', 'target rate (default: as fast as possible)', positiveNumber('--rate'))
    .option('--count <n>', 'stop after this many ticks', positiveInt('--count'))
    .option(
      '--duration <time>',
      'stop after this long (e.g. 500ms, 10s, 2m; a bare number is seconds)',
      duration('--duration'),
    )
    .option('--seed <n>', 'random seed', positiveInt('--seed'), 42)
    .option('--source <name>', 'source name carried by every tick (TICKSTREAM_SOURCE)')
    .action((opts: SyntheticOpts) => runCommand(() => produceSynthetic(opts)));
  return produce;
}

interface SyntheticOpts {
  symbols: string;
  rate?: number;
  count?: number;
  duration?: number;
  seed: number;
  source?: string;
}

export const MAX_SYNTHETIC_SYMBOLS = 100_000;

/** `--symbols`: a count of generated names (SYM0000, ...), or a comma-separated list. */
export function parseSymbols(spec: string, flag = '--symbols'): string[] {
  const t = spec.trim();
  if (/^\d+$/.test(t)) {
    const n = Number(t);
    if (n < 1 || n > MAX_SYNTHETIC_SYMBOLS) {
      throw new ConfigError(`${flag}: between 1 and ${MAX_SYNTHETIC_SYMBOLS} symbols (got "${spec}")`);
    }
    return symbolNames(n);
  }
  const list = t
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (list.length === 0) throw new ConfigError(`${flag}: give a number of symbols or a list (got "${spec}")`);
  const bad = list.find((s) => s.length > 64);
  if (bad !== undefined) throw new ConfigError(`${flag}: a symbol is at most 64 characters (got "${bad}")`);
  return list;
}

async function produceSynthetic(opts: SyntheticOpts): Promise<void> {
  const { config, log } = makeRuntime(
    opts.source === undefined ? undefined : { producer: { source: opts.source } },
  );
  // Every check before the connection, whose retries would otherwise keep a failed command alive.
  const market = new SyntheticMarket({
    symbols: parseSymbols(opts.symbols),
    seed: opts.seed,
    source: config.producer.source,
  });
  const redis = createRedis(config, { log, connectionName: 'tickstream:producer' });
  try {
    await checkDurability(redis, config.producer);
  } catch (err) {
    await closeRedis(redis);
    throw err;
  }
  const abort = new AbortController();
  const publisher = new Publisher({
    redis,
    layout: config.streams,
    settings: config.producer,
    log: log.child({ component: 'publisher' }),
    signal: abort.signal,
  });
  // Serve before the first XADD, so a run that cannot reach Redis is seen as alive but not ready.
  const probes = await startProbes(config, log).catch(async (err: unknown) => {
    await closeRedis(redis);
    throw err;
  });
  probes.setChecks([redisReady(redis)]);
  let finished: Promise<unknown> = Promise.resolve();
  // The stop waits for the run to flush, so the forced-exit timeout stays armed while it does.
  handleSignals(
    log,
    async () => {
      abort.abort();
      dropIfDown(redis);
      await finished;
    },
    { exitAfterStop: false, timeoutMs: config.consumer.shutdownTimeoutMs },
  );
  const rate = new RateLine(log.child({ component: 'producer' }), 'ticks', opts.count);
  log.info(
    {
      symbols: opts.symbols,
      rate: opts.rate ?? 'max',
      count: opts.count,
      durationMs: opts.duration,
      shards: config.streams.shards,
    },
    'producing synthetic ticks',
  );
  const running = drive({
    next: (n) => market.next(n),
    publisher,
    ...(opts.rate !== undefined ? { rate: opts.rate } : {}),
    ...(opts.count !== undefined ? { count: opts.count } : {}),
    ...(opts.duration !== undefined ? { durationMs: opts.duration } : {}),
    signal: abort.signal,
    onTicks: (n) => rate.add(n),
  });
  finished = running.catch(() => undefined);
  try {
    const result = await running;
    const summary = rate.done();
    log.info(
      {
        ticks: result.ticks,
        frames: publisher.stats.frames,
        seconds: summary.seconds,
        ticksPerSecond: summary.perSecond,
        pausedMs: publisher.stats.pausedMs,
      },
      'produced',
    );
  } finally {
    rate.done();
    await probes.close();
    await closeRedis(redis);
  }
}
