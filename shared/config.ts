import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, errorMessage } from './errors.ts';
import { QuoteSchema, TradeSchema } from './model.ts';

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

/** Tick model field → field name in foreign Kafka messages: "symbol=sym,ts=time", or an object in the file. */
const TICK_FIELDS = new Set([...Object.keys(TradeSchema.shape), ...Object.keys(QuoteSchema.shape)]);
const kafkaFieldMap = z
  .unknown()
  .transform((v, ctx) => {
    if (typeof v !== 'string') return v;
    const out: Record<string, string> = {};
    for (const pair of splitList(v)) {
      const eq = pair.indexOf('=');
      if (eq <= 0 || eq === pair.length - 1) {
        ctx.addIssue({ code: 'custom', message: `expected field=name pairs, got "${pair}"` });
        return z.NEVER;
      }
      out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
    }
    return out;
  })
  .pipe(
    z.record(z.string(), z.string().min(1)).refine((m) => Object.keys(m).every((k) => TICK_FIELDS.has(k)), {
      message: `keys must be tick fields: ${[...TICK_FIELDS].join(', ')}`,
    }),
  );

/** A PostgreSQL interval such as "7 days" or "12 hours", or "off". */
const pgInterval = z
  .string()
  .trim()
  .toLowerCase()
  .regex(
    /^(off|\d+ ?(minute|hour|day|week|month|year)s?)$/,
    'expected an interval like "7 days", "12 hours", "1 month", or "off"',
  );

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
        lingerMs: int(0, 1),
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
    /** OHLCV bars (consumers/bars, docs/bars-and-indicators.md). */
    bars: z
      .object({
        timeframes: list
          .pipe(z.array(z.enum(['1s', '1m', '5m', '1h'])).min(1))
          .default(['1s', '1m', '5m', '1h']),
        /** A bar closes once its clock (newest exchange time seen) is this far past the bar's end. */
        allowedLatenessMs: int(0, 2000),
        /** Whose newest trade advances a bar's clock: its own symbol's, or any symbol's of its stream shard. */
        watermark: z.enum(['symbol', 'shard']).default('symbol'),
        /** Redis hash of the current bar: <keyPrefix><symbol>:<tf>. */
        keyPrefix: z.string().default('bar:'),
        /** Trades older than their clock by more than this are dead-lettered (and their ledger rows pruned). */
        ledgerHorizonMs: int(60_000, 7_200_000),
        pruneIntervalMs: int(1000, 60_000),
        /** Closed bars per ILP request from the QuestDB outbox (when QDB_CLIENT_CONF is set). */
        questdbBatch: int(1, 2000, 100_000),
        /** Longest wait between outbox pushes: the idle sweep, and the backoff ceiling after a failure. */
        questdbIntervalMs: int(100, 5000, 3_600_000),
      })
      .strict()
      .prefault({}),
    /** Indicator jobs (consumers/indicators, docs/bars-and-indicators.md). */
    indicators: z
      .object({
        timeframes: list.pipe(z.array(z.enum(['1s', '1m', '5m', '1h'])).min(1)).default(['1m', '5m', '1h']),
        queueName: z
          .string()
          .regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits and _ . - only')
          .default('indicators'),
        /** BullMQ key prefix; under Redis Cluster wrap it in a hash tag, e.g. "{tickstream}". */
        bullPrefix: z.string().min(1).default('tickstream:bull'),
        /** Redis hash of the latest values: <keyPrefix><symbol>:<tf>. */
        keyPrefix: z.string().default('ind:'),
        /** Buckets per computation window; every value of a bar is a function of the window ending at it. */
        window: int(2, 200, 10_000),
        /** Closed bars per symbol (newest first) computed by each job; older ones were done by earlier jobs. */
        recentBars: int(1, 3, 1000),
        /** Symbols with a trade (wall clock) within this are active; 0: every symbol with bars. */
        activeWindowMs: int(0, 3_600_000),
        /** Symbols per chunk: the job yields to the event loop (lock renewal) between chunks. */
        chunkSymbols: int(1, 250, 100_000),
        /** Missing buckets: carry the previous close forward as a flat bar, or restart the series after a gap. */
        gaps: z.enum(['carry', 'reset']).default('carry'),
        attempts: int(1, 5, 100),
        backoffMs: int(1, 1000),
        keepCompleted: int(0, 100),
        keepFailed: int(0, 1000),
        concurrency: int(1, 1, 64),
        lockDurationMs: int(1000, 30_000),
        stalledIntervalMs: int(500, 30_000),
        smaPeriod: int(1, 20, 1000),
        emaPeriod: int(1, 20, 1000),
        rsiPeriod: int(1, 14, 1000),
        macdFast: int(1, 12, 1000),
        macdSlow: int(1, 26, 1000),
        macdSignal: int(1, 9, 1000),
        bbPeriod: int(1, 20, 1000),
        bbStdDev: z.coerce.number().positive().max(100).default(2),
        atrPeriod: int(1, 14, 1000),
        vwapPeriod: int(1, 20, 1000),
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
        connectTimeoutMs: int(100, 5000),
        /** Server-side statement_timeout for every pooled connection; 0 leaves the server's default. */
        statementTimeoutMs: int(0, 60_000),
        /** auto: TimescaleDB when the extension is available, else native partitioning. Decided at migrate. */
        timescale: z.enum(['auto', 'on', 'off']).default('auto'),
        /** Plain PostgreSQL: daily partitions created ahead of the wall clock. */
        partitionsAhead: int(0, 3, 366),
        /** TimescaleDB compression policy (a PostgreSQL interval), or "off". */
        compressAfter: pgInterval.default('7 days'),
        /** Drop archived days older than this (a PostgreSQL interval), or "off" to keep everything. */
        retention: pgInterval.default('off'),
        /** TimescaleDB: decompress the compressed chunks a batch writes into (the policy recompresses them). */
        backfillDecompress: bool(false),
      })
      .strict()
      .prefault({}),
    questdb: z
      .object({
        /** QuestDB's own client configuration string, passed to Sender.fromConfig unchanged. */
        clientConf: z.string().optional(),
        /** HTTP endpoint for DDL and queries; derived from clientConf's addr when absent. */
        httpUrl: z.url().optional(),
        /** Prepended to the QuestDB tables' names (`trades`, `quotes`, `bars`), e.g. to keep test runs apart. */
        tablePrefix: z
          .string()
          .regex(
            /^([A-Za-z_][A-Za-z0-9_]*)?$/,
            'a SQL identifier prefix: letters, digits and _, not starting with a digit',
          )
          .max(64)
          .default(''),
        /** Designated timestamp type: auto = TIMESTAMP_NS where the server has it (9.1+), else TIMESTAMP. */
        timestamp: z.enum(['auto', 'ns', 'us']).default('auto'),
        /** Timeout of one /exec request (DDL, status, `tickstream sql`). */
        requestTimeoutMs: int(100, 10_000),
        /** How long the hot writer keeps retrying its table setup while QuestDB is unreachable. */
        startTimeoutMs: int(0, 60_000),
        /**
         * How long one ILP flush may wait for QuestDB's answer before the batch is retried; the client's own
         * request_timeout/retry_timeout in QDB_CLIENT_CONF win when set.
         */
        flushTimeoutMs: int(100, 5_000),
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
        /** Redis → Kafka: the topic ticks are mirrored to; created with `partitions` partitions if missing. */
        mirrorTopic: z.string().min(1).default('tickstream.ticks'),
        /** Replication factor of a topic the bridge creates; -1 lets the broker decide. */
        replicationFactor: int(-1, -1, 32),
        /** Kafka → Redis: where a new consumer group starts (true: earliest retained offset, false: latest). */
        fromBeginning: bool(true),
        /** Kafka → Redis: model field → field name in the messages ("symbol=sym,ts=time"); docs/kafka.md. */
        fieldMap: kafkaFieldMap.default({}),
        /** Kafka → Redis: unit of `ts` in the messages; converted exactly to nanoseconds. */
        tsUnit: z.enum(['ns', 'us', 'ms', 's']).default('ns'),
        /** Kafka → Redis: `source` for messages that carry none. */
        defaultSource: z.string().min(1).max(64).optional(),
        /** Kafka → Redis: messages per XADD flush + offset commit within one fetched batch. */
        flushEvery: int(1, 2000, 1_000_000),
        /** Kafka → Redis: partitions processed at the same time by one process. */
        concurrency: int(1, 1, 64),
        /** Redis → Kafka: messages per sendBatch request. */
        sendBatchSize: int(1, 1000, 100_000),
        /** Redis → Kafka: sendBatch requests in flight; at most 5 with the idempotent producer. */
        maxInFlight: int(1, 5, 100),
        idempotent: bool(true),
        ssl: bool(false),
        saslMechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).optional(),
        saslUsername: z.string().optional(),
        saslPassword: z.string().optional(),
        connectionTimeoutMs: int(100, 3000),
        requestTimeoutMs: int(100, 30_000),
        /** kafkajs retry settings for every request, and the consumer's restart delay after a crash. */
        retries: int(0, 8, 1000),
        retryInitialMs: int(1, 300),
        retryMaxMs: int(1, 30_000),
      })
      .strict()
      .superRefine((k, ctx) => {
        if (k.idempotent && k.maxInFlight > 5) {
          ctx.addIssue({
            code: 'custom',
            path: ['maxInFlight'],
            message: 'at most 5 with the idempotent producer',
          });
        }
        if (k.saslMechanism !== undefined && (k.saslUsername === undefined || k.saslPassword === undefined)) {
          ctx.addIssue({
            code: 'custom',
            path: ['saslUsername'],
            message: 'SASL needs a username and a password',
          });
        }
      })
      .prefault({}),
    metrics: z
      .object({
        /** Serve Prometheus metrics on this port from long-running commands; 0 = off. */
        port: int(0, 0, 65_535),
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
  TICKSTREAM_BARS_TIMEFRAMES: 'bars.timeframes',
  TICKSTREAM_BARS_LATENESS_MS: 'bars.allowedLatenessMs',
  TICKSTREAM_BARS_WATERMARK: 'bars.watermark',
  TICKSTREAM_BARS_KEY_PREFIX: 'bars.keyPrefix',
  TICKSTREAM_BARS_LEDGER_HORIZON_MS: 'bars.ledgerHorizonMs',
  TICKSTREAM_BARS_PRUNE_INTERVAL_MS: 'bars.pruneIntervalMs',
  TICKSTREAM_BARS_QDB_BATCH: 'bars.questdbBatch',
  TICKSTREAM_BARS_QDB_INTERVAL_MS: 'bars.questdbIntervalMs',
  TICKSTREAM_IND_TIMEFRAMES: 'indicators.timeframes',
  TICKSTREAM_IND_QUEUE: 'indicators.queueName',
  TICKSTREAM_IND_BULL_PREFIX: 'indicators.bullPrefix',
  TICKSTREAM_IND_KEY_PREFIX: 'indicators.keyPrefix',
  TICKSTREAM_IND_WINDOW: 'indicators.window',
  TICKSTREAM_IND_RECENT_BARS: 'indicators.recentBars',
  TICKSTREAM_IND_ACTIVE_WINDOW_MS: 'indicators.activeWindowMs',
  TICKSTREAM_IND_CHUNK_SYMBOLS: 'indicators.chunkSymbols',
  TICKSTREAM_IND_GAPS: 'indicators.gaps',
  TICKSTREAM_IND_ATTEMPTS: 'indicators.attempts',
  TICKSTREAM_IND_BACKOFF_MS: 'indicators.backoffMs',
  TICKSTREAM_IND_KEEP_COMPLETED: 'indicators.keepCompleted',
  TICKSTREAM_IND_KEEP_FAILED: 'indicators.keepFailed',
  TICKSTREAM_IND_CONCURRENCY: 'indicators.concurrency',
  TICKSTREAM_IND_LOCK_MS: 'indicators.lockDurationMs',
  TICKSTREAM_IND_STALLED_MS: 'indicators.stalledIntervalMs',
  TICKSTREAM_IND_SMA: 'indicators.smaPeriod',
  TICKSTREAM_IND_EMA: 'indicators.emaPeriod',
  TICKSTREAM_IND_RSI: 'indicators.rsiPeriod',
  TICKSTREAM_IND_MACD_FAST: 'indicators.macdFast',
  TICKSTREAM_IND_MACD_SLOW: 'indicators.macdSlow',
  TICKSTREAM_IND_MACD_SIGNAL: 'indicators.macdSignal',
  TICKSTREAM_IND_BB_PERIOD: 'indicators.bbPeriod',
  TICKSTREAM_IND_BB_STDDEV: 'indicators.bbStdDev',
  TICKSTREAM_IND_ATR: 'indicators.atrPeriod',
  TICKSTREAM_IND_VWAP: 'indicators.vwapPeriod',
  DATABASE_URL: 'postgres.url',
  TICKSTREAM_PG_SCHEMA: 'postgres.schema',
  TICKSTREAM_PG_POOL_SIZE: 'postgres.poolSize',
  TICKSTREAM_PG_MIGRATE_ON_START: 'postgres.migrateOnStart',
  TICKSTREAM_PG_CONNECT_TIMEOUT_MS: 'postgres.connectTimeoutMs',
  TICKSTREAM_PG_STATEMENT_TIMEOUT_MS: 'postgres.statementTimeoutMs',
  TICKSTREAM_PG_TIMESCALE: 'postgres.timescale',
  TICKSTREAM_PG_PARTITIONS_AHEAD: 'postgres.partitionsAhead',
  TICKSTREAM_PG_COMPRESS_AFTER: 'postgres.compressAfter',
  TICKSTREAM_PG_RETENTION: 'postgres.retention',
  TICKSTREAM_PG_BACKFILL_DECOMPRESS: 'postgres.backfillDecompress',
  QDB_CLIENT_CONF: 'questdb.clientConf',
  QDB_HTTP_URL: 'questdb.httpUrl',
  TICKSTREAM_QDB_TABLE_PREFIX: 'questdb.tablePrefix',
  TICKSTREAM_QDB_TIMESTAMP: 'questdb.timestamp',
  TICKSTREAM_QDB_TIMEOUT_MS: 'questdb.requestTimeoutMs',
  TICKSTREAM_QDB_START_TIMEOUT_MS: 'questdb.startTimeoutMs',
  TICKSTREAM_QDB_FLUSH_TIMEOUT_MS: 'questdb.flushTimeoutMs',
  KAFKA_BROKERS: 'kafka.brokers',
  KAFKA_CLIENT_ID: 'kafka.clientId',
  KAFKA_TOPICS: 'kafka.topics',
  KAFKA_GROUP_ID: 'kafka.groupId',
  KAFKA_PARTITIONS: 'kafka.partitions',
  KAFKA_MIRROR_TOPIC: 'kafka.mirrorTopic',
  KAFKA_REPLICATION_FACTOR: 'kafka.replicationFactor',
  KAFKA_FROM_BEGINNING: 'kafka.fromBeginning',
  KAFKA_FIELD_MAP: 'kafka.fieldMap',
  KAFKA_TS_UNIT: 'kafka.tsUnit',
  KAFKA_DEFAULT_SOURCE: 'kafka.defaultSource',
  KAFKA_FLUSH_EVERY: 'kafka.flushEvery',
  KAFKA_CONCURRENCY: 'kafka.concurrency',
  KAFKA_SEND_BATCH_SIZE: 'kafka.sendBatchSize',
  KAFKA_MAX_IN_FLIGHT: 'kafka.maxInFlight',
  KAFKA_IDEMPOTENT: 'kafka.idempotent',
  KAFKA_SSL: 'kafka.ssl',
  KAFKA_SASL_MECHANISM: 'kafka.saslMechanism',
  KAFKA_SASL_USERNAME: 'kafka.saslUsername',
  KAFKA_SASL_PASSWORD: 'kafka.saslPassword',
  KAFKA_CONNECTION_TIMEOUT_MS: 'kafka.connectionTimeoutMs',
  KAFKA_REQUEST_TIMEOUT_MS: 'kafka.requestTimeoutMs',
  KAFKA_RETRIES: 'kafka.retries',
  KAFKA_RETRY_INITIAL_MS: 'kafka.retryInitialMs',
  KAFKA_RETRY_MAX_MS: 'kafka.retryMaxMs',
  TICKSTREAM_METRICS_PORT: 'metrics.port',
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
