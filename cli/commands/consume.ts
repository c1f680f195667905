import type { Server } from 'node:http';
import type { Command } from 'commander';
import { consumerName } from '../../shared/config.ts';
import { ConfigError, TickstreamError } from '../../shared/errors.ts';
import { handleSignals, once } from '../../shared/lifecycle.ts';
import { closeRedis, createRedis } from '../../shared/redis.ts';
import { trimStreams } from '../../shared/retention.ts';
import { GroupWorker, workerMetrics } from '../../consumers/worker.ts';
import { serveMetrics } from '../../shared/metrics.ts';
import { SINKS, sinkNames } from '../../consumers/sinks/index.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';

export function registerConsume(program: Command): void {
  program
    .command('consume')
    .description(`run a consumer-group worker for one sink (${sinkNames().join(', ')})`)
    .argument('<sink>', 'sink name')
    .option('--group <name>', 'consumer group (default: the sink name)')
    .option('--consumer <name>', 'consumer name, unique per process (TICKSTREAM_CONSUMER_NAME)')
    .option('--batch <entries>', 'stream entries per read (TICKSTREAM_BATCH_SIZE)', positiveInt('--batch'))
    .action((sink: string, opts: ConsumeOpts) => runCommand(() => consume(sink, opts)));
}

export interface ConsumeOpts {
  group?: string;
  consumer?: string;
  batch?: number;
}

/** Run one sink under the generic group worker until a signal; `tickstream bridge redis-to-kafka` reuses it. */
export async function consume(sinkName: string, opts: ConsumeOpts): Promise<void> {
  const definition = SINKS[sinkName];
  if (definition === undefined) {
    throw new ConfigError(`unknown sink "${sinkName}"; choose one of: ${sinkNames().join(', ')}`);
  }
  const { config, log } = makeRuntime({
    consumer: {
      ...(opts.consumer !== undefined ? { name: opts.consumer } : {}),
      ...(opts.batch !== undefined ? { batchSize: opts.batch } : {}),
    },
  });
  const group = opts.group ?? definition.group;
  const consumer = consumerName(config);
  const redis = createRedis(config, { log, connectionName: `tickstream:${group}:${consumer}` });
  const blocking = createRedis(config, {
    log,
    blocking: true,
    connectionName: `tickstream:${group}:${consumer}:read`,
  });
  let sink: Awaited<ReturnType<typeof definition.create>>;
  try {
    sink = await definition.create({ config, redis, log });
  } catch (err) {
    // Open connections would keep the process alive after the error message.
    await closeRedis(blocking);
    await closeRedis(redis);
    throw err;
  }
  const worker = new GroupWorker({
    redis,
    blocking,
    layout: config.streams,
    group,
    consumer,
    sink,
    settings: config.consumer,
    log,
  });

  let trimTimer: NodeJS.Timeout | undefined;
  const { retention } = config;
  if (retention.maxAgeMs > 0 || retention.maxLen > 0) {
    trimTimer = setInterval(() => {
      trimStreams(redis, config.streams, retention).then(
        (results) => {
          const trimmed = results.reduce((n, r) => n + r.trimmed, 0);
          if (trimmed > 0) log.debug({ trimmed }, 'retention trimmed entries');
        },
        (err: unknown) => log.warn({ err }, 'retention trim failed'),
      );
    }, retention.intervalMs);
  }

  let metrics: Server | undefined;
  const stop = once(async () => {
    metrics?.close();
    if (trimTimer !== undefined) clearInterval(trimTimer);
    await worker.close();
    await closeRedis(blocking);
    await closeRedis(redis);
    // Not a clean leave: the exit code says so (the worker logged what it left and who takes it over).
    if (worker.pendingOnStop !== 0) {
      throw new TickstreamError(
        `stopped with ${worker.pendingOnStop ?? 'an unknown number of'} entries pending on consumer ${consumer}`,
        { retriable: true },
      );
    }
  });
  handleSignals(log, stop, { timeoutMs: config.consumer.shutdownTimeoutMs });
  try {
    if (config.metrics.port > 0) {
      metrics = await serveMetrics(config.metrics.port, workerMetrics(worker, group, sinkName));
    }
    await worker.start();
    await worker.done();
  } catch (err) {
    await stop().catch(() => undefined); // the original failure is the one to report
    throw err;
  }
}
