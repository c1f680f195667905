import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import type { RedisClient } from '../../shared/redis.ts';
import type { Sink } from '../sink.ts';
import { QuestDbSink } from './questdb.ts';
import { QuotesSink } from './quotes.ts';
import { ArchiveSink } from './archive.ts';
import { createBarsSink } from './bars.ts';
import { createKafkaSink } from './kafka.ts';
import { requireKafka } from '../../shared/kafka.ts';

/**
 * The sinks `tickstream consume <sink>` and `tickstream replay --sink <sink>` can run, by name.
 * A factory receives the process's shared connections; the sink owns only what it opens itself.
 */
export interface SinkDeps {
  config: Config;
  /** A non-blocking Redis connection the sink may use (and must not close). */
  redis: RedisClient;
  log: Logger;
}

export interface SinkDefinition {
  /** Consumer group used when none is given. */
  readonly group: string;
  readonly description: string;
  /** Stores besides Redis whose answer /readyz checks (the sink's own connections are its business). */
  readonly stores?: readonly ('postgres' | 'questdb')[];
  /** Stream entries per read when `--batch` is not given; TICKSTREAM_BATCH_SIZE when undefined. */
  readBatch?(config: Config): number;
  /**
   * TICKSTREAM_CONSUMER_LINGER_MS when it is not set: how long after a short read the next one waits
   * (consumers/worker.ts). Batch sinks pay per batch (a transaction, a request, a row per symbol and
   * timeframe), so while they keep up they read less often and more at once; `quotes` does not wait.
   */
  readonly lingerMs?: number;
  create(deps: SinkDeps): Promise<Sink>;
}

export const SINKS: Record<string, SinkDefinition> = {
  archive: {
    group: 'archive',
    description: 'durable, idempotent archive of trades and quotes in PostgreSQL/TimescaleDB',
    stores: ['postgres'],
    lingerMs: 100,
    create: async ({ config, log }) =>
      new ArchiveSink({ settings: config.postgres, log: log.child({ component: 'sink.archive' }) }),
  },
  quotes: {
    group: 'quotes',
    description: 'latest quote per symbol in Redis hashes, published on pub/sub',
    create: async ({ config, redis, log }) =>
      new QuotesSink({ redis, settings: config.quotes, log: log.child({ component: 'sink.quotes' }) }),
  },
  questdb: {
    group: 'hot',
    description: 'trades and quotes into QuestDB over ILP (QDB_CLIENT_CONF), deduplicated by tick identity',
    stores: ['questdb'],
    lingerMs: 100,
    create: async ({ config, log }) =>
      new QuestDbSink({ settings: config.questdb, log: log.child({ component: 'sink.questdb' }) }),
  },
  kafka: {
    group: 'kafka-mirror',
    description: 'mirror ticks to the Kafka topic KAFKA_MIRROR_TOPIC, keyed by symbol, acks=all',
    create: async ({ config, log }) =>
      createKafkaSink(requireKafka(config), log.child({ component: 'sink.kafka' })),
  },
  bars: {
    group: 'bars',
    description:
      'OHLCV bars (1s/1m/5m/1h) into PostgreSQL, merged exactly once; current bar in Redis bar:<symbol>:<tf>',
    stores: ['postgres'],
    readBatch: (config) => config.bars.batchSize,
    lingerMs: 500,
    create: async ({ config, redis, log }) => createBarsSink({ config, redis, log }),
  },
};

/** The read linger a consumer of this sink uses: TICKSTREAM_CONSUMER_LINGER_MS when set, else the sink's. */
export function lingerFor(definition: SinkDefinition, config: Config): number {
  return config.consumer.lingerMs ?? definition.lingerMs ?? 0;
}

export function sinkNames(): string[] {
  return Object.keys(SINKS);
}
