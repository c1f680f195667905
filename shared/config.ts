import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, errorMessage } from './errors.ts';

/**
 * The one configuration schema. Entry points call `loadConfig()` once; everything below receives the typed
 * `Config` (or the slice it needs) and never reads `process.env`.
 *
 * Sources, lowest precedence first: defaults, an optional JSON/YAML file (TICKSTREAM_CONFIG), environment
 * variables, then command-line overrides. Every variable is listed in ENV below and in docs/configuration.md.
 */

const int = (min: number, def: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(def);
const bool = (def: boolean) => z.union([z.boolean(), z.stringbool()]).default(def);
const list = z.union([z.array(z.string()), z.string().transform(splitList)]);

function splitList(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
}

const redisUrl = z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL');

export const ConfigSchema = z
  .object({
    redis: z
      .object({
        url: redisUrl.default('redis://127.0.0.1:6379'),
        /** When set, connect to a Redis Cluster through these seed nodes ("host:port"). */
        clusterNodes: list.pipe(z.array(z.string().regex(/^[^:\s]+:\d+$/, 'expected host:port'))).default([]),
      })
      .strict()
      .prefault({}),
    streams: z
      .object({
        prefix: z
          .string()
          .regex(/^[A-Za-z0-9_.:-]+$/, 'letters, digits and _ . : - only')
          .default('ticks'),
        shards: int(1, 4, 1024),
      })
      .strict()
      .prefault({}),
    consumer: z
      .object({
        name: z.string().min(1).optional(),
        /** Stream entries (frames) per XREADGROUP. */
        batchSize: int(1, 64, 10_000),
        blockMs: int(1, 1000),
        claimIntervalMs: int(10, 5000),
        claimMinIdleMs: int(10, 30_000),
        maxDeliveries: int(1, 5),
        retryBaseMs: int(1, 100),
        retryMaxMs: int(1, 10_000),
        shutdownTimeoutMs: int(100, 30_000),
      })
      .strict()
      .prefault({}),
    retention: z
      .object({
        /** Trim entries older than this; 0 disables the age bound. */
        maxAgeMs: int(0, 0),
        /** Keep at most about this many entries per shard; 0 disables the size bound. */
        maxLen: int(0, 0),
        intervalMs: int(100, 10_000),
      })
      .strict()
      .prefault({}),
    producer: z
      .object({
        source: z.string().min(1).max(64).default('synthetic'),
        /** Ticks per stream entry. */
        frameSize: int(1, 256, 10_000),
        /** How long a partly filled frame may wait for more ticks. */
        lingerMs: int(0, 2),
        /** Frames sent but not yet acknowledged by Redis. */
        maxInFlight: int(1, 64, 10_000),
        /** Pause when the slowest group lags by more than this many entries; 0 disables backpressure. */
        highWater: int(0, 100_000),
        /** Resume when the lag is back under this. */
        lowWater: int(0, 50_000),
        backpressureIntervalMs: int(10, 250),
      })
      .strict()
      .prefault({}),
    quotes: z
      .object({
        keyPrefix: z.string().default('quote:'),
        channelPrefix: z.string().default('quotes:'),
      })
      .strict()
      .prefault({}),
    postgres: z
      .object({
        url: z
          .string()
          .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
          .default('postgres://127.0.0.1:5432/test'),
        schema: z
          .string()
          .regex(/^[a-z_][a-z0-9_]*$/, 'lower-case SQL identifier')
          .default('tickstream'),
        poolSize: int(1, 4, 100),
        migrateOnStart: bool(true),
      })
      .strict()
      .prefault({}),
    questdb: z
      .object({
        /** QuestDB's own client configuration string, passed to Sender.fromConfig unchanged. */
        clientConf: z.string().optional(),
        /** HTTP endpoint for DDL and queries; derived from clientConf's addr when absent. */
        httpUrl: z.url().optional(),
      })
      .strict()
      .prefault({}),
    kafka: z
      .object({
        brokers: list.default([]),
        clientId: z.string().default('tickstream'),
        topics: list.default(['ticks']),
        groupId: z.string().default('tickstream-bridge'),
        partitions: int(1, 6),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
        /** auto: pretty on a terminal, JSON otherwise. */
        format: z.enum(['auto', 'json', 'pretty']).default('auto'),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type Config = z.output<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

/** Environment variable → config path. The single list of variables we read. */
export const ENV: Readonly<Record<string, string>> = {
  REDIS_URL: 'redis.url',
  REDIS_CLUSTER_NODES: 'redis.clusterNodes',
  TICKSTREAM_STREAM_PREFIX: 'streams.prefix',
  TICKSTREAM_SHARDS: 'streams.shards',
  TICKSTREAM_CONSUMER_NAME: 'consumer.name',
  TICKSTREAM_BATCH_SIZE: 'consumer.batchSize',
  TICKSTREAM_BLOCK_MS: 'consumer.blockMs',
  TICKSTREAM_CLAIM_INTERVAL_MS: 'consumer.claimIntervalMs',
  TICKSTREAM_CLAIM_MIN_IDLE_MS: 'consumer.claimMinIdleMs',
  TICKSTREAM_MAX_DELIVERIES: 'consumer.maxDeliveries',
  TICKSTREAM_RETRY_BASE_MS: 'consumer.retryBaseMs',
  TICKSTREAM_RETRY_MAX_MS: 'consumer.retryMaxMs',
  TICKSTREAM_SHUTDOWN_TIMEOUT_MS: 'consumer.shutdownTimeoutMs',
  TICKSTREAM_RETENTION_MAX_AGE_MS: 'retention.maxAgeMs',
  TICKSTREAM_RETENTION_MAX_LEN: 'retention.maxLen',
  TICKSTREAM_RETENTION_INTERVAL_MS: 'retention.intervalMs',
  TICKSTREAM_SOURCE: 'producer.source',
  TICKSTREAM_FRAME_SIZE: 'producer.frameSize',
  TICKSTREAM_LINGER_MS: 'producer.lingerMs',
  TICKSTREAM_MAX_IN_FLIGHT: 'producer.maxInFlight',
  TICKSTREAM_HIGH_WATER: 'producer.highWater',
  TICKSTREAM_LOW_WATER: 'producer.lowWater',
  TICKSTREAM_QUOTE_KEY_PREFIX: 'quotes.keyPrefix',
  TICKSTREAM_QUOTE_CHANNEL_PREFIX: 'quotes.channelPrefix',
  DATABASE_URL: 'postgres.url',
  TICKSTREAM_PG_SCHEMA: 'postgres.schema',
  TICKSTREAM_PG_POOL_SIZE: 'postgres.poolSize',
  TICKSTREAM_PG_MIGRATE_ON_START: 'postgres.migrateOnStart',
  QDB_CLIENT_CONF: 'questdb.clientConf',
  QDB_HTTP_URL: 'questdb.httpUrl',
  KAFKA_BROKERS: 'kafka.brokers',
  KAFKA_CLIENT_ID: 'kafka.clientId',
  KAFKA_TOPICS: 'kafka.topics',
  KAFKA_GROUP_ID: 'kafka.groupId',
  KAFKA_PARTITIONS: 'kafka.partitions',
  LOG_LEVEL: 'log.level',
  LOG_FORMAT: 'log.format',
};

const PATH_TO_ENV = new Map(Object.entries(ENV).map(([k, v]) => [v, k]));

type Tree = { [key: string]: unknown };

export interface LoadOptions {
  env?: Readonly<Record<string, string | undefined>>;
  /** Values that beat everything else (command-line flags). */
  overrides?: ConfigInput;
}

/** Parse the configuration once, at the edge. Throws ConfigError naming each bad variable or key. */
export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env;
  const origin = new Map<string, string>();
  const tree: Tree = {};

  const file = env.TICKSTREAM_CONFIG;
  if (file !== undefined && file !== '') {
    const fromFile = readConfigFile(file);
    mergeInto(tree, fromFile, '', (path) => origin.set(path, `config file ${file}, key "${path}"`));
  }

  const unknown = Object.keys(env).filter(
    (k) => k.startsWith('TICKSTREAM_') && k !== 'TICKSTREAM_CONFIG' && !(k in ENV),
  );
  if (unknown.length > 0) {
    throw new ConfigError(
      `unknown configuration variable${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (see docs/configuration.md)`,
    );
  }
  for (const [variable, path] of Object.entries(ENV)) {
    const value = env[variable];
    if (value === undefined || value === '') continue;
    setPath(tree, path, value);
    origin.set(path, variable);
  }
  if (options.overrides !== undefined) {
    mergeInto(tree, options.overrides as Tree, '', (path) => origin.set(path, `option ${path}`));
  }

  const parsed = ConfigSchema.safeParse(tree);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const path = issue.path.join('.');
      const where =
        origin.get(path) ?? PATH_TO_ENV.get(path) ?? (path === '' ? 'configuration' : `key "${path}"`);
      const value = getPath(tree, path);
      const shown = value === undefined || typeof value === 'object' ? '' : ` (got ${JSON.stringify(value)})`;
      return `${where}: ${issue.message}${shown}`;
    });
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return parsed.data;
}

/** A unique consumer name, so that several processes can share one group. */
export function consumerName(config: Config): string {
  return config.consumer.name ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

function readConfigFile(path: string): Tree {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`TICKSTREAM_CONFIG: cannot read ${path}: ${errorMessage(err)}`, err);
  }
  let data: unknown;
  try {
    data = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new ConfigError(
      `TICKSTREAM_CONFIG: ${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${errorMessage(err)}`,
      err,
    );
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError(`TICKSTREAM_CONFIG: ${path} must hold an object of sections (redis, streams, ...)`);
  }
  return data as Tree;
}

function mergeInto(target: Tree, source: Tree, prefix: string, seen: (path: string) => void): void {
  for (const [key, value] of Object.entries(source)) {
    if (value === undefined) continue;
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const child = (target[key] ??= {}) as Tree;
      mergeInto(child, value as Tree, path, seen);
    } else {
      target[key] = value;
      seen(path);
    }
  }
}

function setPath(tree: Tree, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = tree;
  for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Tree;
  node[parts[parts.length - 1]!] = value;
}

function getPath(tree: Tree, path: string): unknown {
  let node: unknown = tree;
  for (const part of path.split('.')) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Tree)[part];
  }
  return node;
}
