import type { Consumer, Kafka, Offsets } from 'kafkajs';
import { KafkaTickDecoder, type KafkaMapping } from '../shared/kafka-codec.ts';
import { describeKafkaError, type KafkaSettings } from '../shared/kafka.ts';
import { TickstreamError, errorMessage } from '../shared/errors.ts';
import { backoffMs, once, sleep } from '../shared/lifecycle.ts';
import type { Logger } from '../shared/logger.ts';
import { exposeCounters } from '../shared/metrics.ts';
import type { Tick } from '../shared/model.ts';
import type { RedisClient } from '../shared/redis.ts';
import { deadLetterKey, type StreamLayout } from '../shared/streams.ts';
import { OffsetTracker } from './kafka-offsets.ts';
import { checkDurability, waitDurable } from './durability.ts';
import {
  Publisher,
  sharedPublisherMetrics,
  type ProducerSettings,
  type SharedPublisherMetrics,
} from './publisher.ts';

/**
 * The Kafka → Redis bridge: a kafkajs consumer group reads tick topics and publishes each tick into its
 * shard stream through the Publisher (same sharding, so per-symbol order within a partition is kept).
 *
 * Offsets are committed by hand, only for what Redis holds (docs/kafka.md, "Offsets"):
 *   fetch batch → for every `flushEvery` messages: decode → publish valid ticks + XADD dead letters →
 *   publisher.flush() (XADD acknowledged, and fsynced or replicated under TICKSTREAM_PRODUCER_DURABILITY)
 *   → resolveOffset + commit the durable prefix (OffsetTracker)
 * A crash anywhere redelivers from the last commit; the repeated ticks have the same identity, so the sinks
 * store nothing new. A message that is not a valid tick is dead-lettered with topic, partition, offset and
 * reason, and its offset is committed like any other: one bad message never stalls its partition.
 *
 * Redis being down does not crash the consumer: the chunk is retried with backoff while heartbeats keep the
 * group membership. Kafka failures go through kafkajs' retries, then a crash, then `restartOnFailure`
 * restarts the consumer, which resumes from the committed offsets.
 */

/** What `process` needs of kafkajs' EachBatchPayload; tests pass a stand-in. */
export interface IngestBatchPayload {
  batch: {
    topic: string;
    partition: number;
    messages: readonly { offset: string; value: Buffer | null; key?: Buffer | null }[];
  };
  resolveOffset(offset: string): void;
  heartbeat(): Promise<void>;
  commitOffsetsIfNecessary(offsets?: Offsets): Promise<void>;
  isRunning(): boolean;
  isStale(): boolean;
}

export interface BatchProcessorOptions {
  redis: RedisClient;
  layout: StreamLayout;
  producer: ProducerSettings;
  mapping: KafkaMapping;
  /** Messages per flush + commit step. */
  flushEvery: number;
  /** Kafka consumer group and this process' name, recorded in dead letters. */
  groupId: string;
  consumer: string;
  retry: { baseMs: number; maxMs: number };
  /** How often to heartbeat while waiting for Redis (kafkajs' own default interval is 3 s). */
  heartbeatMs?: number;
  log: Logger;
}

export interface IngestStats {
  batches: number;
  messages: number;
  ticks: number;
  deadLettered: number;
  commits: number;
  retries: number;
}

/** Dead letters keep at most this much of a message value, so one huge bad message cannot bloat Redis. */
export const MAX_DEAD_VALUE_BYTES = 64 * 1024;

interface Decoded {
  offset: string;
  tick?: Tick;
  reason?: string;
  key: Buffer | null | undefined;
  value: Buffer | null;
}

export class KafkaBatchProcessor {
  readonly stats: IngestStats = {
    batches: 0,
    messages: 0,
    ticks: 0,
    deadLettered: 0,
    commits: 0,
    retries: 0,
  };
  private readonly o: BatchProcessorOptions;
  private readonly decoder: KafkaTickDecoder;
  private readonly dlq: string;
  /** Shared by the per-batch Publishers, so that each does not add a scrape source. */
  private readonly publisherMetrics: SharedPublisherMetrics;
  /** Aborted by stop(): ends a backpressure pause, so that the batch in hand can finish and be committed. */
  private readonly stopping = new AbortController();

  constructor(options: BatchProcessorOptions) {
    this.o = options;
    this.publisherMetrics = sharedPublisherMetrics(options.producer.source);
    this.decoder = new KafkaTickDecoder(options.mapping);
    this.dlq = deadLetterKey(options.layout);
  }

  /**
   * Handle one fetched batch of one partition (kafkajs `eachBatch`, with autoCommit and eachBatchAutoResolve
   * off). Returns early, leaving the rest unresolved for redelivery, when the consumer stops or the partition
   * was seeked; throws when Kafka fails (heartbeat or commit), which kafkajs retries.
   */
  async process(payload: IngestBatchPayload): Promise<void> {
    const { messages } = payload.batch;
    this.stats.batches++;
    for (let start = 0; start < messages.length; start += this.o.flushEvery) {
      if (!payload.isRunning() || payload.isStale()) return;
      const chunk = messages.slice(start, start + this.o.flushEvery);
      if (!(await this.processChunk(payload, chunk))) return;
      if (start + this.o.flushEvery < messages.length) await payload.heartbeat();
    }
  }

  private async processChunk(
    payload: IngestBatchPayload,
    chunk: IngestBatchPayload['batch']['messages'],
  ): Promise<boolean> {
    const tracker = new OffsetTracker();
    const decoded: Decoded[] = [];
    for (const m of chunk) {
      tracker.track(m.offset);
      const r = this.decoder.decode(m.value);
      decoded.push(
        r.ok
          ? { offset: m.offset, tick: r.tick, key: m.key, value: m.value }
          : { offset: m.offset, reason: r.reason, key: m.key, value: m.value },
      );
    }
    this.stats.messages += chunk.length;
    let good = decoded.filter((d) => d.tick !== undefined);
    let bad = decoded.filter((d) => d.reason !== undefined);

    for (let attempt = 1; ; attempt++) {
      const [published, deadLettered] = await this.whileHeartbeating(payload, () =>
        Promise.allSettled([this.publish(good), this.deadLetter(payload, bad)]),
      );
      if (published.status === 'fulfilled') {
        tracker.markDone(good.map((d) => d.offset));
        this.stats.ticks += good.length;
        good = [];
      }
      if (deadLettered.status === 'fulfilled') {
        tracker.markDone(bad.map((d) => d.offset));
        this.stats.deadLettered += bad.length;
        if (bad.length > 0) {
          this.o.log.warn(
            { count: bad.length, first: bad[0]!.reason, partition: payload.batch.partition },
            'dead-lettered Kafka messages',
          );
        }
        bad = [];
      }
      // Commit whatever prefix is durable now, even after a partial failure: less to redeliver later.
      await this.commit(payload, tracker);
      if (good.length === 0 && bad.length === 0) return true;

      const err =
        published.status === 'rejected' ? published.reason : (deadLettered as PromiseRejectedResult).reason;
      this.stats.retries++;
      if (!payload.isRunning() || payload.isStale()) {
        this.o.log.warn(
          { err, uncommitted: tracker.pending().length },
          'stopping while Redis is failing: the uncommitted messages will be redelivered',
        );
        return false;
      }
      const wait = backoffMs(attempt, this.o.retry.baseMs, this.o.retry.maxMs);
      this.o.log.warn({ err, attempt, waitMs: wait }, 'writing to Redis failed: retrying');
      await sleep(wait);
      await payload.heartbeat();
    }
  }

  /** A fresh Publisher per attempt: a failed one stays failed, and no two partitions share a flush. */
  private async publish(items: readonly Decoded[]): Promise<void> {
    if (items.length === 0) return;
    const publisher = new Publisher({
      redis: this.o.redis,
      layout: this.o.layout,
      settings: this.o.producer,
      log: this.o.log,
      // KafkaIngest.start() checked once that the server offers the durability asked for.
      durabilityChecked: true,
      shared: this.publisherMetrics,
      signal: this.stopping.signal,
    });
    await publisher.publish(items.map((d) => d.tick!));
    await publisher.flush();
  }

  /** Called on shutdown, before the consumer disconnects (which waits for the batch in hand). */
  stop(): void {
    this.stopping.abort();
  }

  private async deadLetter(payload: IngestBatchPayload, items: readonly Decoded[]): Promise<void> {
    if (items.length === 0) return;
    const { topic, partition } = payload.batch;
    const pipeline = this.o.redis.pipeline();
    for (const d of items) pipeline.xadd(this.dlq, '*', ...this.deadLetterFields(topic, partition, d));
    const results = (await pipeline.exec()) ?? [];
    const failed = results.find(([e]) => e !== null);
    if (failed !== undefined) {
      throw new TickstreamError('writing Kafka dead letters failed', { retriable: true, cause: failed[0] });
    }
    // Their offsets are committed like any other: only once the dead letters are as durable as the ticks.
    await waitDurable(this.o.redis, this.o.producer);
  }

  /**
   * Same shape as the group worker's dead letters (reason, stream, id, group, consumer, deliveries, kind), so
   * `tickstream dlq list` shows them: stream is "kafka:<topic>/<partition>" and id the offset.
   */
  private deadLetterFields(topic: string, partition: number, d: Decoded): string[] {
    const value = d.value ?? Buffer.alloc(0);
    const truncated = value.length > MAX_DEAD_VALUE_BYTES;
    return [
      'reason',
      d.reason!,
      'stream',
      `kafka:${topic}/${partition}`,
      'id',
      d.offset,
      'group',
      this.o.groupId,
      'consumer',
      this.o.consumer,
      'deliveries',
      '1',
      'kind',
      'kafka',
      'topic',
      topic,
      'partition',
      String(partition),
      'offset',
      d.offset,
      'key',
      d.key?.toString('utf8') ?? '',
      'value',
      (truncated ? value.subarray(0, MAX_DEAD_VALUE_BYTES) : value).toString('utf8'),
      'truncated',
      truncated ? '1' : '0',
    ];
  }

  private async commit(payload: IngestBatchPayload, tracker: OffsetTracker): Promise<void> {
    const next = tracker.toCommit();
    if (next === undefined) return;
    const done = tracker.committable()!;
    const { topic, partition } = payload.batch;
    // resolveOffset moves kafkajs' fetch position too: a retry after an error resumes after the durable prefix.
    payload.resolveOffset(done.toString());
    await payload.commitOffsetsIfNecessary({
      topics: [{ topic, partitions: [{ partition, offset: next }] }],
    });
    tracker.markCommitted(done);
    this.stats.commits++;
  }

  /**
   * Run `fn` while heartbeating on a timer: a slow or unavailable Redis (ioredis queues commands until it
   * reconnects) must not make the group think this member died. Heartbeat errors surface at the next
   * heartbeat or commit made in line.
   */
  private async whileHeartbeating<T>(payload: IngestBatchPayload, fn: () => Promise<T>): Promise<T> {
    const timer = setInterval(() => {
      payload.heartbeat().catch((err: unknown) => this.o.log.debug({ err }, 'background heartbeat failed'));
    }, this.o.heartbeatMs ?? 3000);
    try {
      return await fn();
    } finally {
      clearInterval(timer);
    }
  }
}

export interface KafkaIngestOptions {
  kafka: Kafka;
  settings: KafkaSettings;
  redis: RedisClient;
  layout: StreamLayout;
  producer: ProducerSettings;
  retry: { baseMs: number; maxMs: number };
  consumerName: string;
  log: Logger;
}

/**
 * The consumer-group lifecycle around KafkaBatchProcessor. `start()` joins and consumes in the background;
 * `close()` stops consuming (the chunk in hand is flushed and committed), leaves the group and disconnects.
 */
export class KafkaIngest {
  readonly processor: KafkaBatchProcessor;
  /**
   * Partitions assigned at the last group join, by topic; emptied as soon as a rebalance starts, so that it
   * never shows a previous generation's partitions while the group is being re-formed.
   */
  assignment: Record<string, number[]> = {};
  /** Group joins of this member so far: a new value means a new generation of the group. */
  generation = 0;
  /** Between the start of a rebalance and the join that ends it. */
  rebalancing = false;
  private readonly o: KafkaIngestOptions;
  private readonly consumer: Consumer;
  private readonly log: Logger;
  private readonly finished: Promise<void>;
  private settle!: { resolve: () => void; reject: (err: unknown) => void };

  constructor(options: KafkaIngestOptions) {
    this.o = options;
    const s = options.settings;
    this.log = options.log.child({ component: 'bridge.kafka-to-redis', group: s.groupId });
    this.processor = new KafkaBatchProcessor({
      redis: options.redis,
      layout: options.layout,
      producer: options.producer,
      mapping: { fieldMap: s.fieldMap, tsUnit: s.tsUnit, defaultSource: s.defaultSource },
      flushEvery: s.flushEvery,
      groupId: s.groupId,
      consumer: options.consumerName,
      retry: options.retry,
      log: this.log,
    });
    this.consumer = options.kafka.consumer({
      groupId: s.groupId,
      retry: {
        retries: s.retries,
        initialRetryTime: s.retryInitialMs,
        maxRetryTime: s.retryMaxMs,
        // kafkajs asks only for retriable failures (broker gone, retries exhausted): always come back, from the
        // committed offsets, rather than leave the process alive but idle.
        restartOnFailure: async (err: Error) => {
          this.log.error({ err: describeKafkaError(err) }, 'Kafka consumer crashed: restarting it');
          return true;
        },
      },
    });
    this.finished = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    // A rejection nobody awaits yet must not kill the process before done() is called.
    this.finished.catch(() => undefined);
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => {
      if (payload.restart) return;
      this.log.fatal({ err: payload.error }, 'Kafka consumer crashed and will not restart');
      this.settle.reject(
        new TickstreamError(`Kafka consumer crashed: ${describeKafkaError(payload.error)}`, {
          retriable: false,
          cause: payload.error,
        }),
      );
    });
    this.consumer.on(this.consumer.events.REBALANCING, () => {
      this.rebalancing = true;
      this.assignment = {};
      this.log.info('the consumer group is rebalancing');
    });
    this.consumer.on(this.consumer.events.GROUP_JOIN, ({ payload }) => {
      this.assignment = payload.memberAssignment;
      this.generation++;
      this.rebalancing = false;
      this.log.info(
        { assignment: payload.memberAssignment, generation: this.generation },
        'joined the consumer group',
      );
    });
  }

  get stats(): IngestStats {
    return this.processor.stats;
  }

  async start(): Promise<void> {
    const s = this.o.settings;
    // Refuse to start, saying why, when Redis cannot give the producer durability asked for.
    await checkDurability(this.o.redis, this.o.producer);
    await this.consumer.connect();
    await this.consumer.subscribe({ topics: s.topics, fromBeginning: s.fromBeginning });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: s.concurrency,
      eachBatch: (payload) => this.processor.process(payload),
    });
    this.log.info({ topics: s.topics, brokers: s.brokers }, 'consuming Kafka topics into Redis');
  }

  /** Resolves after close(); rejects if the consumer crashed for good. */
  done(): Promise<void> {
    return this.finished;
  }

  readonly close = once(async () => {
    try {
      // stop() waits for the batch in hand: process() sees isRunning() false after its current chunk, which
      // it flushes and commits first. A Publisher paused for backpressure is released first.
      this.processor.stop();
      await this.consumer.disconnect();
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'Kafka consumer did not disconnect cleanly');
    }
    this.log.info(this.stats, 'Kafka → Redis bridge stopped');
    this.settle.resolve();
  });
}

/** Prometheus counters of the ingest bridge, read from its stats when scraped. */
export function exposeIngestMetrics(ingest: KafkaIngest, groupId: string): void {
  exposeCounters('tickstream_kafka_ingest', { group: groupId }, () => ingest.stats, {
    messages: 'Kafka messages handled',
    ticks: 'Ticks XADDed into the shard streams',
    deadLettered: 'Invalid messages dead-lettered',
    commits: 'Offset commits',
    retries: 'Redis writes retried',
    batches: 'Fetched batches processed',
  });
}
