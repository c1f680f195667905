import {
  Partitioners,
  type ITopicConfig,
  type Message,
  type PartitionMetadata,
  type ProducerBatch,
  type RecordMetadata,
} from 'kafkajs';
import { SinkError } from '../../shared/errors.ts';
import { encodeKafkaValue } from '../../shared/kafka-codec.ts';
import {
  classifyKafkaError,
  createKafka,
  describeKafkaError,
  type KafkaSettings,
} from '../../shared/kafka.ts';
import { backoffMs, once, sleep } from '../../shared/lifecycle.ts';
import type { Logger } from '../../shared/logger.ts';
import { tickKey, type Tick } from '../../shared/model.ts';
import type { Sink } from '../sink.ts';

/** Attempts inside one flush for retriable send failures, before the worker retries the whole batch. */
export const FLUSH_ATTEMPTS = 3;

/**
 * Redis → Kafka mirror: every tick becomes one message on `topic`, keyed by symbol (so one partition carries
 * one symbol in order), the value the model as JSON (shared/kafka-codec.ts).
 *
 * - `flush()` resolves only once Kafka acknowledged every message with acks=-1 (all in-sync replicas), so the
 *   group worker's XACK follows the broker's acknowledgement. The producer is idempotent: its own retries of
 *   a request are not duplicated by the broker.
 * - Sends are batched (`sendBatchSize` messages per request) with at most `maxInFlight` requests in flight.
 *   The sink computes each message's partition itself (kafkajs' default partitioner: murmur2 of the key over
 *   the topic's partitions) and every request carries one partition only: a produce request to one
 *   partition is acknowledged or refused as a whole, so a failed request never leaves part of itself written
 *   for a retry to duplicate. Partitions are spread over that many lanes and each lane sends in order, so
 *   concurrent requests never carry the same symbol and cannot reorder it.
 * - Kafka is not an idempotent store: a batch redelivered after a crash between the acknowledgement and the
 *   XACK is produced twice. Readers of the topic dedupe by tick identity (source, symbol, ts, seq), as the
 *   Kafka → Redis bridge and every tickstream sink do.
 * - Errors: a record the broker can never accept (message too large, invalid record) is not retriable and the
 *   worker dead-letters that tick; anything else (broker unavailable, timeouts, leader changes, and also
 *   authorization or topic configuration problems, which are not the ticks' fault) is retriable: the entries
 *   stay pending and are retried.
 * - The topic is created on start if missing, with `partitions` partitions.
 */

/** The parts of a kafkajs Producer the sink uses; tests pass a stand-in. */
export interface KafkaProducerLike {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  sendBatch(batch: ProducerBatch): Promise<RecordMetadata[]>;
}

export interface KafkaAdminLike {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  createTopics(options: { topics: ITopicConfig[]; waitForLeaders?: boolean }): Promise<boolean>;
  fetchTopicMetadata(options: { topics: string[] }): Promise<{ topics: { partitions: unknown[] }[] }>;
}

export interface KafkaSinkOptions {
  producer: KafkaProducerLike;
  /** Creates the topic on start when given. */
  admin?: KafkaAdminLike;
  topic: string;
  partitions: number;
  replicationFactor: number;
  sendBatchSize: number;
  maxInFlight: number;
  log: Logger;
}

export interface KafkaSinkStats {
  messages: number;
  requests: number;
  flushes: number;
}

export class KafkaSink implements Sink {
  readonly name = 'kafka';
  readonly stats: KafkaSinkStats = { messages: 0, requests: 0, flushes: 0 };
  private readonly o: KafkaSinkOptions;
  private staged: Message[] = [];
  private stagedKeys: string[] = [];
  /**
   * Ticks Kafka acknowledged during a flush that failed as a whole: the worker writes the same batch again,
   * and these are left out of it, so that a partial failure does not put them in the topic twice.
   */
  private acknowledged = new Set<string>();
  private started = false;
  /** The topic's partition count: from the broker when an admin client is given, else `partitions`. */
  private partitionCount: number;
  private readonly partitioner = Partitioners.DefaultPartitioner();
  private partitionMetadata: PartitionMetadata[] = [];

  constructor(options: KafkaSinkOptions) {
    this.o = options;
    this.partitionCount = options.partitions;
    this.setPartitions(options.partitions);
  }

  private setPartitions(n: number): void {
    this.partitionCount = n;
    this.partitionMetadata = Array.from({ length: n }, (_, partitionId) => ({
      partitionId,
      leader: 0,
      replicas: [],
      isr: [],
      partitionErrorCode: 0,
    }));
  }

  async start(): Promise<void> {
    if (this.started) return;
    const { admin, topic, partitions, replicationFactor } = this.o;
    if (admin !== undefined) {
      try {
        await admin.connect();
        const created = await admin.createTopics({
          topics: [{ topic, numPartitions: partitions, replicationFactor }],
          waitForLeaders: true,
        });
        if (created) this.o.log.info({ topic, partitions }, 'created the Kafka topic');
        // An existing topic may have another partition count than configured: partition as the broker has it.
        const meta = await admin.fetchTopicMetadata({ topics: [topic] });
        const n = meta.topics[0]?.partitions.length ?? 0;
        if (n > 0) this.setPartitions(n);
      } catch (err) {
        throw new SinkError(`cannot create Kafka topic "${topic}": ${describeKafkaError(err)}`, {
          retriable: true,
          cause: err,
        });
      } finally {
        await admin.disconnect().catch(() => undefined);
      }
    }
    await this.o.producer.connect();
    this.started = true;
  }

  async write(ticks: readonly Tick[]): Promise<void> {
    for (const t of ticks) {
      const key = tickKey(t);
      if (this.acknowledged.has(key)) continue;
      this.stagedKeys.push(key);
      const message: Message = { key: t.symbol, value: encodeKafkaValue(t) };
      message.partition = this.partitioner({
        topic: this.o.topic,
        partitionMetadata: this.partitionMetadata,
        message,
      });
      this.staged.push(message);
    }
  }

  async flush(): Promise<void> {
    const messages = this.staged;
    const keys = this.stagedKeys;
    this.staged = [];
    this.stagedKeys = [];
    if (messages.length === 0) {
      this.acknowledged.clear();
      return;
    }
    const keyOf = new Map<Message, string>(messages.map((m, i) => [m, keys[i]!]));
    const { sendBatchSize, maxInFlight } = this.o;
    const laneCount = Math.max(
      1,
      Math.min(maxInFlight, this.partitionCount, Math.ceil(messages.length / sendBatchSize)),
    );
    // A lane is a list of one-partition requests; a partition belongs to one lane (its order is kept).
    const byPartition = new Map<number, Message[]>();
    for (const m of messages) {
      const list = byPartition.get(m.partition!);
      if (list === undefined) byPartition.set(m.partition!, [m]);
      else list.push(m);
    }
    const lanes: Message[][][] = Array.from({ length: laneCount }, () => []);
    for (const [partition, list] of byPartition) {
      const lane = lanes[partition % laneCount]!;
      for (let i = 0; i < list.length; i += sendBatchSize) lane.push(list.slice(i, i + sendBatchSize));
    }
    // Progress per lane survives a failed attempt: a retry inside this flush resumes each lane where it
    // stopped, so lanes Kafka already acknowledged are not produced again (only a retry of the whole batch by
    // the worker, after the last attempt here, resends them).
    const sent = lanes.map(() => 0);
    for (let attempt = 1; ; attempt++) {
      const results = await Promise.allSettled(lanes.map((lane, i) => this.sendLane(lane, sent, i)));
      const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failures.length === 0) break;
      // One lane's record fault decides: the worker then narrows the batch down to the tick at fault.
      const causes = failures.map((f) => f.reason as unknown);
      const fault = causes.find((c) => !classifyKafkaError(c).retriable);
      if (fault === undefined && attempt < FLUSH_ATTEMPTS) {
        await sleep(backoffMs(attempt, 100, 2000));
        continue;
      }
      const cause = fault ?? causes[0];
      const c = classifyKafkaError(cause);
      this.acknowledged.clear();
      lanes.forEach((lane, i) => {
        for (const chunk of lane.slice(0, sent[i]!))
          for (const m of chunk) this.acknowledged.add(keyOf.get(m)!);
      });
      throw new SinkError(
        `Kafka send failed (${failures.length}/${lanes.length} lanes): ${describeKafkaError(cause)}`,
        { retriable: c.retriable, cause },
      );
    }
    this.acknowledged.clear();
    this.stats.flushes++;
  }

  private async sendLane(lane: Message[][], sent: number[], index: number): Promise<void> {
    for (let i = sent[index]!; i < lane.length; i++) {
      const messages = lane[i]!;
      await this.o.producer.sendBatch({ acks: -1, topicMessages: [{ topic: this.o.topic, messages }] });
      sent[index] = i + 1;
      this.stats.requests++;
      this.stats.messages += messages.length;
    }
  }

  readonly close = once(async () => {
    try {
      if (this.started) await this.flush();
    } finally {
      await this.o.producer.disconnect();
    }
  });
}

/** The sink against real brokers: an idempotent kafkajs producer (acks=-1) and an admin client for the topic. */
export function createKafkaSink(settings: KafkaSettings, log: Logger): KafkaSink {
  const kafka = createKafka(settings, log);
  const producer = kafka.producer({
    idempotent: settings.idempotent,
    maxInFlightRequests: settings.maxInFlight,
    allowAutoTopicCreation: false,
    // Bounded, although kafkajs warns that this "may invalidate EoS guarantees": with endless retries a broker
    // outage would hang flush() (and a graceful stop) forever. A send that gives up fails the flush; the
    // entries stay pending and the worker retries the batch, so the cost is a possible duplicate, which the
    // tick identity absorbs downstream.
    retry: {
      retries: settings.retries,
      initialRetryTime: settings.retryInitialMs,
      maxRetryTime: settings.retryMaxMs,
    },
  });
  return new KafkaSink({
    producer,
    admin: kafka.admin(),
    topic: settings.mirrorTopic,
    partitions: settings.partitions,
    replicationFactor: settings.replicationFactor,
    sendBatchSize: settings.sendBatchSize,
    maxInFlight: settings.maxInFlight,
    log,
  });
}
