import type { Command } from 'commander';
import { consumerName } from '../../shared/config.ts';
import { ConfigError, TickstreamError } from '../../shared/errors.ts';
import { handleSignals, once } from '../../shared/lifecycle.ts';
import { closeRedis, createRedis, dropIfDown, type RedisClient } from '../../shared/redis.ts';
import { trimStreams } from '../../shared/retention.ts';
import type { StreamLayout } from '../../shared/streams.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import { groupBacklog } from '../../consumers/status.ts';
import { scrapedCounter, scrapedGauge } from '../../shared/metrics.ts';
import { groupReady, redisReady } from '../../shared/probes.ts';
import { deadLetterKey } from '../../shared/streams.ts';
import { lingerFor, SINKS, sinkNames } from '../../consumers/sinks/index.ts';
import { startProbes, storeChecks } from '../probes.ts';
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
  const runtime = makeRuntime({
    consumer: {
      ...(opts.consumer !== undefined ? { name: opts.consumer } : {}),
      ...(opts.batch !== undefined ? { batchSize: opts.batch } : {}),
    },
  });
  const { log } = runtime;
  const readBatch = opts.batch === undefined ? definition.readBatch?.(runtime.config) : undefined;
  const config = {
    ...runtime.config,
    consumer: {
      ...runtime.config.consumer,
      ...(readBatch === undefined ? {} : { batchSize: readBatch }),
      lingerMs: lingerFor(definition, runtime.config),
    },
  };
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

  const stores = storeChecks(config, definition.stores ?? [], log);
  let probes: Awaited<ReturnType<typeof startProbes>> | undefined;
  const stop = once(async () => {
    await probes?.close();
    if (trimTimer !== undefined) clearInterval(trimTimer);
    dropIfDown(redis, blocking);
    await worker.close();
    await stores.close();
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
    probes = await startProbes(config, log);
    probes.setChecks([
      redisReady(redis),
      groupReady(redis, config.streams, group),
      ...stores.checks,
      worker.retryState.check('worker', config.metrics.readyStuckMs),
    ]);
    exposeGroupGauges(redis, config.streams, group);
    await worker.start();
    await worker.done();
  } catch (err) {
    await stop().catch(() => undefined); // the original failure is the one to report
    throw err;
  }
}

/** Lag and pending of this process's group per shard, and the dead-letter stream's length, read when scraped. */
export function exposeGroupGauges(redis: RedisClient, layout: StreamLayout, group: string): void {
  scrapedGauge(
    'tickstream_group_lag',
    'Entries not yet delivered to the group, per shard stream (absent when Redis cannot tell)',
    ['group', 'stream'],
    async () =>
      (await groupBacklog(redis, layout, group)).flatMap((b) =>
        b.lag === null ? [] : [{ labels: { group, stream: b.stream }, value: b.lag }],
      ),
  );
  scrapedGauge(
    'tickstream_group_pending',
    'Entries delivered to the group but not yet acknowledged, per shard stream',
    ['group', 'stream'],
    async () =>
      (await groupBacklog(redis, layout, group)).map((b) => ({
        labels: { group, stream: b.stream },
        value: b.pending,
      })),
  );
  scrapedCounter(
    'tickstream_group_entries_read_total',
    "Entries the group has read from each shard stream (Redis' entries-read): its rate is the group's throughput per shard",
    ['group', 'stream'],
    async () =>
      (await groupBacklog(redis, layout, group)).flatMap((b) =>
        b.entriesRead === null ? [] : [{ labels: { group, stream: b.stream }, value: b.entriesRead }],
      ),
  );
  scrapedGauge(
    'tickstream_dead_letters',
    'Entries in the dead-letter stream (all groups)',
    ['stream'],
    async () => [
      { labels: { stream: deadLetterKey(layout) }, value: await redis.xlen(deadLetterKey(layout)) },
    ],
  );
}
