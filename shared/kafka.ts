import { Kafka, logLevel, type KafkaConfig, type LogEntry, type logCreator } from 'kafkajs';
import type { Config } from './config.ts';
import { ConfigError, errorMessage } from './errors.ts';
import type { Logger } from './logger.ts';

/**
 * Kafka client factory and error classification, shared by both bridge directions
 * (producers/kafka.ts: Kafka → Redis; consumers/sinks/kafka.ts: Redis → Kafka). Like shared/redis.ts, this is
 * the connection factory: it imports the driver so that callers only pass settings around.
 */
export type KafkaSettings = Config['kafka'];

/**
 * The bridge is off unless KAFKA_BROKERS is set. Also refuses a mirror topic that the ingest side reads:
 * Redis → Kafka → Redis would then copy every tick around forever.
 */
export function requireKafka(config: Pick<Config, 'kafka'>): KafkaSettings {
  const k = config.kafka;
  if (k.brokers.length === 0) {
    throw new ConfigError(
      'the Kafka bridge is off: set KAFKA_BROKERS (host:port[,host:port...]) to the broker addresses to turn it on',
    );
  }
  if (k.topics.includes(k.mirrorTopic)) {
    throw new ConfigError(
      `KAFKA_MIRROR_TOPIC "${k.mirrorTopic}" is also in KAFKA_TOPICS: the two bridge directions would feed ` +
        'each other forever; give the mirror its own topic',
    );
  }
  return k;
}

export function createKafka(settings: KafkaSettings, log: Logger): Kafka {
  const config: KafkaConfig = {
    clientId: settings.clientId,
    brokers: settings.brokers,
    ssl: settings.ssl,
    connectionTimeout: settings.connectionTimeoutMs,
    requestTimeout: settings.requestTimeoutMs,
    retry: {
      retries: settings.retries,
      initialRetryTime: settings.retryInitialMs,
      maxRetryTime: settings.retryMaxMs,
    },
    logLevel: kafkaLogLevel(log.level),
    logCreator: kafkaLogCreator(log.child({ driver: 'kafkajs' })),
  };
  if (settings.saslMechanism !== undefined) {
    // Spelled out per mechanism: kafkajs types SASL options as a union discriminated on `mechanism`.
    const credentials = { username: settings.saslUsername ?? '', password: settings.saslPassword ?? '' };
    config.sasl =
      settings.saslMechanism === 'plain'
        ? { mechanism: 'plain', ...credentials }
        : settings.saslMechanism === 'scram-sha-256'
          ? { mechanism: 'scram-sha-256', ...credentials }
          : { mechanism: 'scram-sha-512', ...credentials };
  }
  return new Kafka(config);
}

function kafkaLogLevel(level: string): logLevel {
  switch (level) {
    case 'trace':
    case 'debug':
      return logLevel.DEBUG;
    case 'info':
      return logLevel.INFO;
    case 'warn':
      return logLevel.WARN;
    case 'silent':
      return logLevel.NOTHING;
    default:
      return logLevel.ERROR;
  }
}

/** Route kafkajs' own logging through pino, so there is one log stream with one format. */
export function kafkaLogCreator(log: Logger): logCreator {
  return () =>
    ({ namespace, level, log: entry }: LogEntry) => {
      const { message, timestamp: _ts, ...extra } = entry;
      const fields = { namespace, ...extra };
      if (level === logLevel.ERROR) log.error(fields, message);
      else if (level === logLevel.WARN) log.warn(fields, message);
      else if (level === logLevel.INFO) log.info(fields, message);
      else log.debug(fields, message);
    };
}

/**
 * Protocol errors that are the record's fault: sending the same bytes again can never succeed. Every other
 * failure (broker unavailable, timeouts, leader changes, and also authorization or configuration problems,
 * which are not the ticks' fault either) leaves the entries pending and is retried.
 */
const RECORD_FAULTS = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD',
  'INVALID_TIMESTAMP',
  'CORRUPT_MESSAGE',
]);

export interface KafkaErrorClass {
  /** Whether our worker should retry (leave pending) rather than dead-letter. */
  retriable: boolean;
  /** kafkajs' own verdict after unwrapping "retries exceeded": can the same request succeed later by itself? */
  transient: boolean;
  /** The protocol error type or error name at the root, for logs. */
  kind: string;
}

interface KafkaLikeError {
  name?: unknown;
  type?: unknown;
  retriable?: unknown;
  cause?: unknown;
  errors?: unknown;
}

export function classifyKafkaError(err: unknown): KafkaErrorClass {
  let e = err as KafkaLikeError | null | undefined;
  // kafkajs wraps the last failure of its own retries in a non-retriable KafkaJSNumberOfRetriesExceeded;
  // what matters is what failed.
  for (let depth = 0; depth < 8; depth++) {
    if (e?.name === 'KafkaJSNumberOfRetriesExceeded' && e.cause !== undefined && e.cause !== e) {
      e = e.cause as KafkaLikeError;
    } else break;
  }
  if (e === null || e === undefined || typeof e !== 'object') {
    return { retriable: true, transient: true, kind: String(e) };
  }
  if (Array.isArray(e.errors) && e.errors.length > 0) {
    const parts = e.errors.map(classifyKafkaError);
    const fault = parts.find((p) => !p.retriable);
    return fault ?? { retriable: true, transient: parts.every((p) => p.transient), kind: parts[0]!.kind };
  }
  const kind = typeof e.type === 'string' ? e.type : typeof e.name === 'string' ? e.name : 'Error';
  if (typeof e.type === 'string' && RECORD_FAULTS.has(e.type)) {
    return { retriable: false, transient: false, kind };
  }
  return { retriable: true, transient: e.retriable !== false, kind };
}

export function describeKafkaError(err: unknown): string {
  const c = classifyKafkaError(err);
  return `${c.kind}: ${errorMessage(err)}`;
}
