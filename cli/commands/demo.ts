import { Option, type Command } from 'commander';
import { consumerName } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';
import { sleep } from '../../shared/lifecycle.ts';
import { RateLine } from '../../shared/progress.ts';
import { closeRedis, createRedis, type RedisClient } from '../../shared/redis.ts';
import { Publisher } from '../../producers/publisher.ts';
import { drive } from '../../producers/run.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { readQuotes } from '../../consumers/sinks/quotes.ts';
import { archiveCounts } from '../../consumers/sinks/archive.ts';
import { closePgPool, createPgPool } from '../../shared/pg.ts';
import { lingerFor, SINKS, sinkNames } from '../../consumers/sinks/index.ts';
import { streamsStatus } from '../../consumers/status.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import { duration, formatDuration, makeRuntime, positiveNumber, runCommand } from '../runtime.ts';
import { parseSymbols } from './produce.ts';
import { quoteRow } from './quote.ts';
import { printTable } from '../table.ts';

/**
 * The main job in one process: a synthetic producer and one consumer-group worker per sink, for a few
 * seconds, then a report of what was produced, what each sink stored, and the resulting quotes.
 */
export const DEMO_SINKS = ['quotes', 'archive'];
const DEMO_DURATION_MS = 5000;

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('run the pipeline end to end for a few seconds on local services and print what it did')
    .addOption(
      new Option('--duration <time>', 'how long to produce (e.g. 500ms, 10s, 2m; a bare number is seconds)')
        .argParser(duration('--duration'))
        .default(DEMO_DURATION_MS, formatDuration(DEMO_DURATION_MS)),
    )
    .option('--rate <ticks/s>', 'producer rate', positiveNumber('--rate'), 20_000)
    .option('--symbols <n|list>', 'symbols', 'AAPL,MSFT,NVDA,AMZN,GOOG,META,TSLA,JPM')
    .option('--sinks <list>', `sinks to run (${sinkNames().join(', ')})`, DEMO_SINKS.join(','))
    .action((opts: DemoOpts) => runCommand(() => demo(opts)));
}

interface DemoOpts {
  duration: number;
  rate: number;
  symbols: string;
  sinks: string;
}

async function demo(opts: DemoOpts): Promise<void> {
  const { config, log } = makeRuntime();
  const sinkList = opts.sinks.split(',').map((s) => s.trim());
  for (const s of sinkList) {
    if (SINKS[s] === undefined)
      throw new ConfigError(`--sinks: unknown sink "${s}"; choose from ${sinkNames().join(', ')}`);
  }
  const symbols = parseSymbols(opts.symbols);
  const redis = createRedis(config, { log, connectionName: 'tickstream:demo' });
  const workers: { name: string; worker: GroupWorker }[] = [];
  const connections: RedisClient[] = [redis];
  try {
    for (const name of sinkList) {
      const def = SINKS[name]!;
      const blocking = createRedis(config, { log, blocking: true });
      connections.push(blocking);
      const sink = await def.create({ config, redis, log });
      const worker = new GroupWorker({
        redis,
        blocking,
        layout: config.streams,
        group: def.group,
        consumer: consumerName(config),
        sink,
        settings: {
          ...config.consumer,
          blockMs: Math.min(config.consumer.blockMs, 200),
          lingerMs: lingerFor(def, config),
        },
        log,
      });
      workers.push({ name, worker });
      await worker.start();
    }

    const publisher = new Publisher({ redis, layout: config.streams, settings: config.producer, log });
    const source = `demo-${Date.now()}`;
    const market = new SyntheticMarket({ symbols, seed: 42, source });
    const rate = new RateLine(log.child({ component: 'producer' }), 'ticks');
    log.info(
      { symbols: symbols.length, rate: opts.rate, durationMs: opts.duration, sinks: sinkList },
      'demo: producing',
    );
    const produced = await drive({
      next: (n) => market.next(n),
      publisher,
      rate: opts.rate,
      durationMs: opts.duration,
      onTicks: (n) => rate.add(n),
    });
    rate.done();

    // Wait until every group has acknowledged everything it was given.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const status = await streamsStatus(redis, config.streams);
      const behind = status.shards.some((s) =>
        s.groups.some(
          (g) => workers.some((w) => SINKS[w.name]!.group === g.group) && (g.lag > 0 || g.pending > 0),
        ),
      );
      if (!behind) break;
      if (Date.now() > deadline) throw new Error('demo: consumers did not catch up within 30 s');
      await sleep(50);
    }

    process.stdout.write(
      `\nProduced ${produced.ticks} ticks for ${symbols.length} symbols in ${(produced.elapsedMs / 1000).toFixed(1)} s ` +
        `(${publisher.stats.frames} stream entries over ${config.streams.shards} shards)\n`,
    );
    printTable(
      workers.map(({ name, worker }) => ({
        sink: name,
        group: SINKS[name]!.group,
        ticks_stored: worker.stats.ticks,
        entries_acked: worker.stats.acked,
        dead_lettered: worker.stats.deadLettered,
      })),
    );
    if (sinkList.includes('quotes')) {
      process.stdout.write('\nLatest quotes (tickstream quote ...)\n');
      const quotes = await readQuotes(redis, config.quotes, symbols);
      printTable(symbols.map((s) => quoteRow(s, quotes.get(s))));
    }
    if (sinkList.includes('archive')) {
      const pool = createPgPool(config.postgres, { log, max: 1, applicationName: 'tickstream:demo' });
      try {
        const counts = await archiveCounts(pool, config.postgres.schema, { source });
        process.stdout.write(
          `\nArchived in PostgreSQL (schema "${config.postgres.schema}", source ${source}): ` +
            `${counts.trades} trades + ${counts.quotes} quotes = ${counts.trades + counts.quotes} rows\n`,
        );
      } finally {
        await closePgPool(pool);
      }
    }
  } finally {
    // Each in its own try: one failing close must not leave the others (and the process) hanging.
    for (const { name, worker } of workers) {
      await worker
        .close()
        .catch((err: unknown) => log.error({ err, sink: name }, 'closing the worker failed'));
    }
    for (const c of connections) await closeRedis(c);
  }
}
