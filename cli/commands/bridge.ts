import type { Command } from 'commander';
import { consumerName } from '../../shared/config.ts';
import { createKafka, requireKafka } from '../../shared/kafka.ts';
import { handleSignals, once } from '../../shared/lifecycle.ts';
import { closeRedis, createRedis, dropIfDown } from '../../shared/redis.ts';
import { redisReady } from '../../shared/probes.ts';
import { exposeIngestMetrics, KafkaIngest } from '../../producers/kafka.ts';
import { SINKS } from '../../consumers/sinks/index.ts';
import { startProbes } from '../probes.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';
import { consume } from './consume.ts';

/**
 * `tickstream bridge kafka-to-redis | redis-to-kafka` (docs/kafka.md). Both are off unless KAFKA_BROKERS is
 * set. The Redis → Kafka direction is the generic group worker running the `kafka` sink, exactly as
 * `tickstream consume kafka` would.
 */
export function registerBridge(program: Command): void {
  const bridge = program
    .command('bridge')
    .description('Kafka bridge in either direction (needs KAFKA_BROKERS)');
  bridge
    .command('kafka-to-redis')
    .description('consume Kafka topics of ticks into the shard streams; offsets committed after XADD')
    .option('--topics <list>', 'comma-separated topics to read (KAFKA_TOPICS)')
    .option('--group <id>', 'Kafka consumer group (KAFKA_GROUP_ID)')
    .option('--consumer <name>', 'name recorded in dead letters (TICKSTREAM_CONSUMER_NAME)')
    .action((opts: KafkaToRedisOpts) => runCommand(() => kafkaToRedis(opts)));
  bridge
    .command('redis-to-kafka')
    .description(
      `mirror the shard streams to KAFKA_MIRROR_TOPIC (consumer group "${SINKS.kafka?.group ?? 'kafka-mirror'}"); XACK after Kafka acknowledged`,
    )
    .option('--group <name>', 'Redis consumer group (default: kafka-mirror)')
    .option('--consumer <name>', 'consumer name, unique per process (TICKSTREAM_CONSUMER_NAME)')
    .option('--batch <entries>', 'stream entries per read (TICKSTREAM_BATCH_SIZE)', positiveInt('--batch'))
    .action((opts: RedisToKafkaOpts) => runCommand(() => redisToKafka(opts)));
}

interface KafkaToRedisOpts {
  topics?: string;
  group?: string;
  consumer?: string;
}

interface RedisToKafkaOpts {
  group?: string;
  consumer?: string;
  batch?: number;
}

const STATS_EVERY_MS = 10_000;

async function kafkaToRedis(opts: KafkaToRedisOpts): Promise<void> {
  const { config, log } = makeRuntime({
    kafka: {
      ...(opts.topics !== undefined ? { topics: opts.topics } : {}),
      ...(opts.group !== undefined ? { groupId: opts.group } : {}),
    },
    ...(opts.consumer !== undefined ? { consumer: { name: opts.consumer } } : {}),
  });
  const settings = requireKafka(config);
  const redis = createRedis(config, { log, connectionName: 'tickstream:bridge:kafka-to-redis' });
  const ingest = new KafkaIngest({
    kafka: createKafka(settings, log),
    settings,
    redis,
    layout: config.streams,
    producer: config.producer,
    retry: { baseMs: config.consumer.retryBaseMs, maxMs: config.consumer.retryMaxMs },
    consumerName: consumerName(config),
    log,
  });
  let last = -1;
  const statsTimer = setInterval(() => {
    if (ingest.stats.messages === last) return;
    last = ingest.stats.messages;
    log.info(ingest.stats, 'kafka-to-redis progress');
  }, STATS_EVERY_MS);
  statsTimer.unref();
  let probes: Awaited<ReturnType<typeof startProbes>> | undefined;
  const stop = once(async () => {
    await probes?.close();
    clearInterval(statsTimer);
    dropIfDown(redis);
    await ingest.close();
    await closeRedis(redis);
  });
  handleSignals(log, stop, { timeoutMs: config.consumer.shutdownTimeoutMs });
  try {
    probes = await startProbes(config, log);
    exposeIngestMetrics(ingest, settings.groupId);
    probes.setChecks([redisReady(redis)]);
    await ingest.start();
    await ingest.done();
  } catch (err) {
    await stop();
    throw err;
  }
}

async function redisToKafka(opts: RedisToKafkaOpts): Promise<void> {
  // Fail on a missing KAFKA_BROKERS before any connection is opened.
  requireKafka(makeRuntime().config);
  await consume('kafka', opts);
}
