import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, errorMessage } from './errors.ts';
import { QuoteSchema, TradeSchema } from './model.ts';
import { isSecretName, redactText } from './redact.ts';

/**
 * The one configuration schema. Entry points call `loadConfig()` once; everything below receives the typed
 * `Config` (or the slice it needs) and never reads `process.env`.
 *
 * Sources, lowest precedence first: defaults, an optional JSON/YAML file (TICKSTREAM_CONFIG), environment
 * variables, then command-line overrides. Every variable is listed in ENV below and in docs/configuration.md.
 */

/**
 * Numbers are written in plain decimal: "0x10", "1e3", "12abc" or "" are refused rather than guessed at
 * (JavaScript's Number() would take the first two and turn "" into 0).
 */
const decimal = (pattern: RegExp, expected: string) =>
  z.unknown().transform((v, ctx) => {
    if (typeof v === 'number') return v;
    if (typeof v === 'string' && pattern.test(v.trim())) return Number(v.trim());
    ctx.addIssue({ code: 'custom', message: `expected ${expected}` });
    return z.NEVER;
  });
const int = (min: number, def: number, max = Number.MAX_SAFE_INTEGER) =>
  decimal(/^[+-]?\d+$/, 'a decimal integer')
    .pipe(z.number().int().min(min).max(max))
    .default(def);
const num = decimal(/^[+-]?(\d+(\.\d*)?|\.\d+)$/, 'a decimal number');
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

/** A URL of one of the schemes, which must also parse (a bad port is named here, not by the driver later). */
const serviceUrl = (schemes: RegExp, message: string) =>
  z
    .string()
    .regex(schemes, message)
    .refine(
      (v) => URL.canParse(v),
      'not a valid URL (check the host, the port and %-encode special characters)',
    );
const redisUrl = serviceUrl(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').refine(
  (v) => !URL.canParse(v) || /^(\/(\d+)?)?$/.test(new URL(v).pathname),
  'the path must be a database number, e.g. redis://host:6379/0',
);

export const ConfigSchema = z
  .object({
    redis: z
      .object({
        url: redisUrl.default('redis://127.0.0.1:6379'),
        /** When set, connect to a Redis Cluster through these seed nodes ("host:port"). */
        clusterNodes: list.pipe(z.array(z.string().regex(/^[^:\s]+:\d+$/, 'expected host:port'))).default([]),
        /** ACL user and password for every connection (and every Cluster node); the URL's own win if set. */
        username: z.string().min(1).optional(),
        password: z.string().min(1).optional(),
        /** TLS: a private CA (PEM), and a client certificate and key for servers that ask for one. */
        tlsCaFile: z.string().min(1).optional(),
        tlsCertFile: z.string().min(1).optional(),
        tlsKeyFile: z.string().min(1).optional(),
        /** How long a command that runs once (status, quote, ...) waits to connect before giving up. */
        connectTimeoutMs: int(100, 5000, 600_000),
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
        /**
         * After a read that came back short (the streams drained), wait until this long after it began before
         * reading again, so that a group that keeps up reads fewer, larger batches. Unset: the sink's default
         * (0 for `quotes`, whose latency is the point; see consumers/sinks/index.ts).
         */
        lingerMs: decimal(/^[+-]?\d+$/, 'a decimal integer')
          .pipe(z.number().int().min(0).max(10_000))
          .optional(),
        claimIntervalMs: int(10, 5000),
        claimMinIdleMs: int(10, 30_000),
        maxDeliveries: int(1, 5),
        /** Ticks stamped further ahead of the receiving clock than this are dead-lettered at decode. */
        maxFutureMs: int(0, 5000),
        /** Ticks per stream entry (frame) at most; a larger frame is dead-lettered whole, undecoded. */
        maxFrameTicks: int(1, 10_000),
        /** Bytes of a frame's payload at most; a larger frame is dead-lettered whole, undecoded. */
        maxFrameBytes: int(1024, 4 * 1024 * 1024),
        /** Payload bytes decoded and written per sink batch at most (a read is split to stay under it). */
        batchBytes: int(1024, 16 * 1024 * 1024),
        retryBaseMs: int(1, 100),
        retryMaxMs: int(1, 10_000),
        shutdownTimeoutMs: int(100, 30_000),
        /** Consumers with nothing pending and unseen this long are removed from their group; 0 keeps them. */
        removeIdleMs: int(0, 3_600_000),
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
        /** Pause when the slowest group's backlog, summed over the shards, passes this many entries; 0: off. */
        highWater: int(0, 100_000),
        /** Resume when that backlog is back at or under this. */
        lowWater: int(0, 50_000),
        backpressureIntervalMs: int(10, 250),
        /** When a tick counts as published: Redis answered (ack), fsynced to its AOF (fsync), on n replicas. */
        durability: z.enum(['ack', 'fsync', 'replica']).default('ack'),
        /** replica mode: how many replicas must acknowledge (WAIT n). */
        durabilityReplicas: int(1, 1, 64),
        /** How long WAIT / WAITAOF may take before the publish fails (retriable). */
        durabilityTimeoutMs: int(1, 5000),
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
        /** Redis pub/sub channel of bar updates: <channelPrefix><symbol>:<tf>. */
        channelPrefix: z.string().default('bars:'),
        /** Trades older than their clock by more than this are dead-lettered (and their ledger rows pruned). */
        ledgerHorizonMs: int(60_000, 7_200_000),
        pruneIntervalMs: int(1000, 60_000),
        /**
         * Stream entries per read of `consume bars` (TICKSTREAM_BATCH_SIZE for the other sinks): a flush costs
         * one row per (symbol, timeframe) it touches, so the bars group reads more at once than the others.
         */
        batchSize: int(1, 1024, 10_000),
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
        /** Redis pub/sub channel of new indicator rows: <channelPrefix><symbol>:<tf>. */
        channelPrefix: z.string().default('indicators:'),
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
        bbStdDev: num.pipe(z.number().positive().max(100)).default(2),
        atrPeriod: int(1, 14, 1000),
        vwapPeriod: int(1, 20, 1000),
      })
      .strict()
      .prefault({}),
    postgres: z
      .object({
        url: serviceUrl(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').default(
          'postgres://127.0.0.1:5432/test',
        ),
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
        /** The archive takes days from this many days before today (UTC) and dead-letters older ticks. */
        archiveDaysBack: int(0, 1096),
        /** ... and up to this many days after today; ticks beyond are dead-lettered. */
        archiveDaysAhead: int(0, 1),
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
        if (k.saslMechanism !== undefined && (k.saslUsername === undefined || k.saslPassword === undefined)) {
          ctx.addIssue({
            code: 'custom',
            path: ['saslUsername'],
            message: 'SASL needs a username and a password',
          });
        }
      })
      .prefault({}),
    /** Live feeds (`tickstream produce feed`, producers/feeds/, docs/feeds.md). */
    feed: z
      .object({
        /** Drop and reopen a connection that shows no message, ping or pong for this long. */
        staleMs: int(100, 30_000),
        connectTimeoutMs: int(100, 10_000),
        reconnectBaseMs: int(1, 500),
        reconnectMaxMs: int(1, 30_000),
        /** At most one connect per this interval (venues limit connection attempts per IP). */
        minConnectIntervalMs: int(0, 1000),
        /** Spacing of outgoing messages such as subscriptions (venues limit messages per second). */
        minSendIntervalMs: int(0, 250),
        /** Ticks waiting for the publisher before the socket is paused. */
        maxBufferedTicks: int(100, 50_000, 10_000_000),
        /** Run each feed's socket and mapping in a worker thread (false: all on the main thread). */
        threads: bool(true),
        /** Bytes of a malformed message kept in the feed events stream. */
        maxRawBytes: int(64, 4096, 1 << 20),
        /** Approximate length cap of the feed events stream. */
        eventsMaxLen: int(100, 10_000),
        alpacaKeyId: z.string().min(1).optional(),
        alpacaSecretKey: z.string().min(1).optional(),
        alpacaFeed: z.enum(['iex', 'sip', 'crypto']).default('iex'),
      })
      .strict()
      .prefault({}),
    /** `tickstream serve`: the read API, live push and dashboard (server/, docs/serve.md). */
    api: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: int(0, 8080, 65_535),
        /** Bearer token for the admin routes (POST /v1/cache/clear); unset: those routes are off. */
        adminToken: z.string().min(16, 'at least 16 characters').optional(),
        /** Allowed CORS origins ("*" for any); empty: CORS off. */
        corsOrigins: list.default([]),
        /** L1 time to live per kind. */
        quoteTtlMs: int(1, 5000),
        barsTtlMs: int(1, 60_000),
        indicatorsTtlMs: int(1, 60_000),
        historyTtlMs: int(1, 300_000),
        /** L1 entries per kind (least recently used evicted first). */
        cacheMax: int(1, 10_000, 10_000_000),
        /** A Redis / PostgreSQL / QuestDB read slower than this counts as failed (grace: stale or 503). */
        tierTimeoutMs: int(10, 500, 60_000),
        /** Seconds in Retry-After of a 503 (nothing cached, store down). */
        retryAfterS: int(1, 2, 3600),
        /** Symbols whose quotes, bars and indicators are loaded into L1 at start (most active first). */
        warmSymbols: int(0, 50, 10_000),
        maxBatch: int(1, 100, 1000),
        maxLimit: int(1, 1000, 100_000),
        /** Longest from/to range, in bars of the requested timeframe. */
        maxRangeBars: int(1, 5000, 1_000_000),
        /** Live push: a client's socket buffer above this is "backed up" (updates are conflated). */
        wsHighWaterBytes: int(1024, 1_048_576),
        /** A client backed up for longer than this is disconnected. */
        wsStuckMs: int(100, 10_000),
        wsHeartbeatMs: int(100, 15_000),
        maxSubscriptions: int(1, 1000, 100_000),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        /** Serve /metrics, /healthz and /readyz on this port from long-running commands; 0 = off. */
        port: int(0, 0, 65_535),
        /** Address the metrics server binds: loopback unless opened on purpose (compose sets 0.0.0.0). */
        host: z.string().trim().min(1).default('127.0.0.1'),
        /** /readyz fails once a worker has been retrying without a success for longer than this. */
        readyStuckMs: int(1000, 60_000),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z
          .string()
          .trim()
          .toLowerCase()
          .pipe(z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
          .default('info'),
        /** auto: pretty on a terminal, JSON otherwise. */
        format: z
          .string()
          .trim()
          .toLowerCase()
          .pipe(z.enum(['auto', 'json', 'pretty']))
          .default('auto'),
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
  REDIS_USERNAME: 'redis.username',
  REDIS_PASSWORD: 'redis.password',
  REDIS_TLS_CA_FILE: 'redis.tlsCaFile',
  REDIS_TLS_CERT_FILE: 'redis.tlsCertFile',
  REDIS_TLS_KEY_FILE: 'redis.tlsKeyFile',
  TICKSTREAM_REDIS_CONNECT_TIMEOUT_MS: 'redis.connectTimeoutMs',
  TICKSTREAM_STREAM_PREFIX: 'streams.prefix',
  TICKSTREAM_SHARDS: 'streams.shards',
  TICKSTREAM_CONSUMER_NAME: 'consumer.name',
  TICKSTREAM_BATCH_SIZE: 'consumer.batchSize',
  TICKSTREAM_BLOCK_MS: 'consumer.blockMs',
  TICKSTREAM_CONSUMER_LINGER_MS: 'consumer.lingerMs',
  TICKSTREAM_CLAIM_INTERVAL_MS: 'consumer.claimIntervalMs',
  TICKSTREAM_CLAIM_MIN_IDLE_MS: 'consumer.claimMinIdleMs',
  TICKSTREAM_MAX_DELIVERIES: 'consumer.maxDeliveries',
  TICKSTREAM_MAX_FUTURE_MS: 'consumer.maxFutureMs',
  TICKSTREAM_MAX_FRAME_TICKS: 'consumer.maxFrameTicks',
  TICKSTREAM_MAX_FRAME_BYTES: 'consumer.maxFrameBytes',
  TICKSTREAM_BATCH_BYTES: 'consumer.batchBytes',
  TICKSTREAM_RETRY_BASE_MS: 'consumer.retryBaseMs',
  TICKSTREAM_RETRY_MAX_MS: 'consumer.retryMaxMs',
  TICKSTREAM_SHUTDOWN_TIMEOUT_MS: 'consumer.shutdownTimeoutMs',
  TICKSTREAM_CONSUMER_REMOVE_IDLE_MS: 'consumer.removeIdleMs',
  TICKSTREAM_RETENTION_MAX_AGE_MS: 'retention.maxAgeMs',
  TICKSTREAM_RETENTION_MAX_LEN: 'retention.maxLen',
  TICKSTREAM_RETENTION_INTERVAL_MS: 'retention.intervalMs',
  TICKSTREAM_SOURCE: 'producer.source',
  TICKSTREAM_FRAME_SIZE: 'producer.frameSize',
  TICKSTREAM_LINGER_MS: 'producer.lingerMs',
  TICKSTREAM_MAX_IN_FLIGHT: 'producer.maxInFlight',
  TICKSTREAM_HIGH_WATER: 'producer.highWater',
  TICKSTREAM_LOW_WATER: 'producer.lowWater',
  TICKSTREAM_PRODUCER_DURABILITY: 'producer.durability',
  TICKSTREAM_PRODUCER_REPLICAS: 'producer.durabilityReplicas',
  TICKSTREAM_PRODUCER_DURABILITY_TIMEOUT_MS: 'producer.durabilityTimeoutMs',
  TICKSTREAM_QUOTE_KEY_PREFIX: 'quotes.keyPrefix',
  TICKSTREAM_QUOTE_CHANNEL_PREFIX: 'quotes.channelPrefix',
  TICKSTREAM_BARS_TIMEFRAMES: 'bars.timeframes',
  TICKSTREAM_BARS_LATENESS_MS: 'bars.allowedLatenessMs',
  TICKSTREAM_BARS_WATERMARK: 'bars.watermark',
  TICKSTREAM_BARS_KEY_PREFIX: 'bars.keyPrefix',
  TICKSTREAM_BARS_CHANNEL_PREFIX: 'bars.channelPrefix',
  TICKSTREAM_BARS_LEDGER_HORIZON_MS: 'bars.ledgerHorizonMs',
  TICKSTREAM_BARS_PRUNE_INTERVAL_MS: 'bars.pruneIntervalMs',
  TICKSTREAM_BARS_BATCH_SIZE: 'bars.batchSize',
  TICKSTREAM_BARS_QDB_BATCH: 'bars.questdbBatch',
  TICKSTREAM_BARS_QDB_INTERVAL_MS: 'bars.questdbIntervalMs',
  TICKSTREAM_IND_TIMEFRAMES: 'indicators.timeframes',
  TICKSTREAM_IND_QUEUE: 'indicators.queueName',
  TICKSTREAM_IND_BULL_PREFIX: 'indicators.bullPrefix',
  TICKSTREAM_IND_KEY_PREFIX: 'indicators.keyPrefix',
  TICKSTREAM_INDICATORS_CHANNEL_PREFIX: 'indicators.channelPrefix',
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
  TICKSTREAM_ARCHIVE_DAYS_BACK: 'postgres.archiveDaysBack',
  TICKSTREAM_ARCHIVE_DAYS_AHEAD: 'postgres.archiveDaysAhead',
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
  TICKSTREAM_FEED_STALE_MS: 'feed.staleMs',
  TICKSTREAM_FEED_CONNECT_TIMEOUT_MS: 'feed.connectTimeoutMs',
  TICKSTREAM_FEED_RECONNECT_BASE_MS: 'feed.reconnectBaseMs',
  TICKSTREAM_FEED_RECONNECT_MAX_MS: 'feed.reconnectMaxMs',
  TICKSTREAM_FEED_MIN_CONNECT_INTERVAL_MS: 'feed.minConnectIntervalMs',
  TICKSTREAM_FEED_MIN_SEND_INTERVAL_MS: 'feed.minSendIntervalMs',
  TICKSTREAM_FEED_MAX_BUFFERED: 'feed.maxBufferedTicks',
  TICKSTREAM_FEED_MAX_RAW_BYTES: 'feed.maxRawBytes',
  TICKSTREAM_FEED_THREADS: 'feed.threads',
  TICKSTREAM_FEED_EVENTS_MAX_LEN: 'feed.eventsMaxLen',
  APCA_API_KEY_ID: 'feed.alpacaKeyId',
  APCA_API_SECRET_KEY: 'feed.alpacaSecretKey',
  TICKSTREAM_ALPACA_FEED: 'feed.alpacaFeed',
  TICKSTREAM_API_HOST: 'api.host',
  TICKSTREAM_API_PORT: 'api.port',
  TICKSTREAM_API_ADMIN_TOKEN: 'api.adminToken',
  TICKSTREAM_API_CORS_ORIGINS: 'api.corsOrigins',
  TICKSTREAM_API_QUOTE_TTL_MS: 'api.quoteTtlMs',
  TICKSTREAM_API_BARS_TTL_MS: 'api.barsTtlMs',
  TICKSTREAM_API_INDICATORS_TTL_MS: 'api.indicatorsTtlMs',
  TICKSTREAM_API_HISTORY_TTL_MS: 'api.historyTtlMs',
  TICKSTREAM_API_CACHE_MAX: 'api.cacheMax',
  TICKSTREAM_API_TIER_TIMEOUT_MS: 'api.tierTimeoutMs',
  TICKSTREAM_API_RETRY_AFTER_S: 'api.retryAfterS',
  TICKSTREAM_API_WARM_SYMBOLS: 'api.warmSymbols',
  TICKSTREAM_API_MAX_BATCH: 'api.maxBatch',
  TICKSTREAM_API_MAX_LIMIT: 'api.maxLimit',
  TICKSTREAM_API_MAX_RANGE_BARS: 'api.maxRangeBars',
  TICKSTREAM_API_WS_HIGH_WATER_BYTES: 'api.wsHighWaterBytes',
  TICKSTREAM_API_WS_STUCK_MS: 'api.wsStuckMs',
  TICKSTREAM_API_WS_HEARTBEAT_MS: 'api.wsHeartbeatMs',
  TICKSTREAM_API_MAX_SUBSCRIPTIONS: 'api.maxSubscriptions',
  TICKSTREAM_METRICS_PORT: 'metrics.port',
  TICKSTREAM_METRICS_HOST: 'metrics.host',
  TICKSTREAM_READY_STUCK_MS: 'metrics.readyStuckMs',
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

  const where = (path: string) =>
    origin.get(path) ?? PATH_TO_ENV.get(path) ?? (path === '' ? 'configuration' : `key "${path}"`);
  const parsed = ConfigSchema.safeParse(tree);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => {
      const path = issue.path.join('.');
      const value = getPath(tree, path);
      const shown =
        value === undefined || typeof value === 'object'
          ? ''
          : ` (got ${JSON.stringify(shownValue(path, value))})`;
      return `${where(path)}: ${issue.message}${shown}`;
    });
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const producer = parsed.data.producer;
  if (!origin.has('producer.lowWater') && producer.highWater > 0) {
    // The default low-water mark follows a lower high-water mark rather than contradicting it.
    producer.lowWater = Math.min(producer.lowWater, Math.floor(producer.highWater / 2));
  }
  const contradictions = crossCheck(parsed.data, (path) => origin.has(path)).map(
    ([path, other, message]) => `${where(path)} and ${where(other)}: ${message}`,
  );
  if (contradictions.length > 0) {
    throw new ConfigError(`invalid configuration:\n  ${contradictions.join('\n  ')}`);
  }
  return parsed.data;
}

/** A value echoed in an error: credentials masked, a secret variable's value not shown at all. */
function shownValue(path: string, value: unknown): unknown {
  const variable = PATH_TO_ENV.get(path) ?? path;
  if (isSecretName(variable) || isSecretName(path)) return '***';
  return typeof value === 'string' ? redactText(value) : value;
}

/**
 * Settings that are each valid but contradict one another: [path, other path, why]. `given` says whether a
 * path was set explicitly (rather than left at its default).
 */
function crossCheck(c: Config, given: (path: string) => boolean): [string, string, string][] {
  const out: [string, string, string][] = [];
  if (c.producer.highWater > 0 && c.producer.lowWater > c.producer.highWater) {
    out.push([
      'producer.lowWater',
      'producer.highWater',
      `the low-water mark (${c.producer.lowWater}) must not exceed the high-water mark (${c.producer.highWater})`,
    ]);
  }
  if (c.consumer.retryBaseMs > c.consumer.retryMaxMs) {
    out.push([
      'consumer.retryBaseMs',
      'consumer.retryMaxMs',
      `the first backoff (${c.consumer.retryBaseMs} ms) must not exceed the ceiling (${c.consumer.retryMaxMs} ms)`,
    ]);
  }
  const r = c.redis;
  const url = new URL(r.url);
  if (r.clusterNodes.length > 0 && given('redis.url')) {
    // Under Cluster the URL only carries credentials and the scheme (rediss:// = TLS): it must name one of
    // the seed nodes, else the two settings point at different servers and we cannot tell which is meant.
    const hostPort = `${url.hostname}:${url.port === '' ? '6379' : url.port}`;
    if (!r.clusterNodes.includes(hostPort)) {
      out.push([
        'redis.url',
        'redis.clusterNodes',
        `both name servers to connect to (${hostPort} is not one of the cluster nodes); ` +
          'under Cluster leave REDIS_URL unset (credentials in REDIS_USERNAME/REDIS_PASSWORD) or point it at a seed node',
      ]);
    } else if (!/^\/?0?$/.test(url.pathname)) {
      out.push(['redis.url', 'redis.clusterNodes', 'a Redis Cluster has only database 0']);
    }
  }
  if (r.password !== undefined && url.password !== '' && decodeURIComponent(url.password) !== r.password) {
    out.push(['redis.password', 'redis.url', 'two different passwords; give it once']);
  }
  if ((r.tlsCertFile === undefined) !== (r.tlsKeyFile === undefined)) {
    out.push([
      'redis.tlsCertFile',
      'redis.tlsKeyFile',
      'a client certificate needs its key, and the other way round',
    ]);
  }
  const tlsFiles = r.tlsCaFile ?? r.tlsCertFile;
  if (tlsFiles !== undefined && given('redis.url') && url.protocol === 'redis:') {
    out.push([
      'redis.url',
      'redis.tlsCaFile',
      'TLS files are set but the URL is redis:// (plain); use rediss://',
    ]);
  }
  const k = c.kafka;
  if (k.idempotent && k.retries < 1) {
    // kafkajs refuses it when the producer is built: a lost reply is recovered by resending the request.
    out.push([
      'kafka.retries',
      'kafka.idempotent',
      `the idempotent producer needs at least 1 retry (got ${k.retries}); allow retries or turn idempotence off`,
    ]);
  }
  if (k.idempotent && k.maxInFlight > 5) {
    // The broker checks a producer's sequence over its last 5 requests per partition only: more in flight
    // and a resent request can be written twice or out of order.
    out.push([
      'kafka.maxInFlight',
      'kafka.idempotent',
      `at most 5 requests in flight with the idempotent producer (got ${k.maxInFlight}); lower it or turn idempotence off`,
    ]);
  }
  return out;
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
  try {
    mergeInto({}, data as Tree, '', () => undefined);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`TICKSTREAM_CONFIG: ${path}: ${err.message}`);
    throw err;
  }
  return data as Tree;
}

/** Keys that would reach Object.prototype (or a constructor) if merged: refused, never merged. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

function mergeInto(target: Tree, source: Tree, prefix: string, seen: (path: string) => void): void {
  for (const [key, value] of Object.entries(source)) {
    if (value === undefined) continue;
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (FORBIDDEN_KEYS.has(key)) throw new ConfigError(`key "${path}" is not allowed in a configuration`);
    if (!Object.hasOwn(target, key) && key in target) {
      throw new ConfigError(`key "${path}" is not allowed in a configuration`);
    }
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
