import {
  Partitioners,
  type ITopicConfig,
  type Message,
  type Offsets,
  type ProducerBatch,
  type RecordMetadata,
} from 'kafkajs';
import type { KafkaAdminLike, KafkaProducerLike } from '../../consumers/sinks/kafka.ts';
import type { IngestBatchPayload } from '../../producers/kafka.ts';

/**
 * Stand-ins for the kafkajs objects the bridge touches, for tests without a broker. Each records what it was
 * asked to do; real-broker behaviour is covered by test/int/kafka.int.test.ts when KAFKA_BROKERS is set.
 */

/**
 * A stand-in kafkajs producer: records sendBatch calls; `gate` holds sends until released; `failWith` fails
 * the next sends. Like a cluster, it places each message in a partition (the message's own, or kafkajs'
 * default partitioner over `partitions`: murmur2 of the key) and can fail *part* of a request: with
 * `failPartitions`, the messages of the other partitions are written and acknowledged by their brokers,
 * then the request fails, as a sendBatch spanning several partition leaders does when one of them is down.
 */
export class StandInProducer implements KafkaProducerLike {
  readonly batches: ProducerBatch[] = [];
  /** Every message written, with its partition, in write order (partially failed requests included). */
  readonly log: { partition: number; message: Message }[] = [];
  /** Partitions of the topic, for messages without an explicit partition. */
  partitions = 3;
  /** Requests touching these partitions write the others' messages, then fail with `error` (`times` requests). */
  failPartitions: { partitions: ReadonlySet<number>; error: unknown; times: number } | undefined;
  private readonly partitioner = Partitioners.DefaultPartitioner();
  connected = false;
  disconnects = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** Errors thrown by the next sendBatch calls, one each. */
  failWith: unknown[] = [];
  /** Fail sends whose messages match, with this error (a broker that refuses one record). */
  refuse: { when: (m: Message) => boolean; error: unknown } | undefined;
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;

  async connect(): Promise<void> {
    this.connected = true;
  }

  async disconnect(): Promise<void> {
    this.connected = false;
    this.disconnects++;
  }

  hold(): void {
    this.gate = new Promise((r) => (this.openGate = r));
  }

  release(): void {
    this.openGate?.();
    this.gate = undefined;
  }

  async sendBatch(batch: ProducerBatch): Promise<RecordMetadata[]> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((r) => setImmediate(r));
      if (this.gate !== undefined) await this.gate;
      const err = this.failWith.shift();
      if (err !== undefined) throw err;
      const messages = batch.topicMessages?.flatMap((t) => t.messages) ?? [];
      if (this.refuse !== undefined && messages.some(this.refuse.when)) throw this.refuse.error;
      const placed = messages.map((message) => ({ partition: this.partitionOf(message), message }));
      const failing = this.failPartitions;
      if (
        failing !== undefined &&
        failing.times > 0 &&
        placed.some((p) => failing.partitions.has(p.partition))
      ) {
        failing.times--;
        for (const p of placed) if (!failing.partitions.has(p.partition)) this.log.push(p);
        throw failing.error;
      }
      this.log.push(...placed);
      this.batches.push(batch);
      return [];
    } finally {
      this.inFlight--;
    }
  }

  /** Every message written, in write order, including those of partially failed requests. */
  messages(): Message[] {
    return this.log.map((p) => p.message);
  }

  partitionOf(message: Message): number {
    const partitionMetadata = Array.from({ length: this.partitions }, (_, partitionId) => ({
      partitionId,
      leader: 0,
      replicas: [],
      isr: [],
      partitionErrorCode: 0,
    }));
    return this.partitioner({ topic: 'standin', partitionMetadata, message });
  }
}

export class StandInAdmin implements KafkaAdminLike {
  readonly created: ITopicConfig[] = [];
  private readonly existing = new Set<string>();
  connected = false;

  async connect(): Promise<void> {
    this.connected = true;
  }

  async disconnect(): Promise<void> {
    this.connected = false;
  }

  /** Partitions of topics that exist already (created elsewhere), by name. */
  readonly partitionsOf = new Map<string, number>();

  async fetchTopicMetadata(options: { topics: string[] }): Promise<{ topics: { partitions: unknown[] }[] }> {
    return {
      topics: options.topics.map((topic) => ({
        partitions: Array.from({
          length:
            this.partitionsOf.get(topic) ?? this.created.find((t) => t.topic === topic)?.numPartitions ?? 0,
        }),
      })),
    };
  }

  async createTopics(options: { topics: ITopicConfig[] }): Promise<boolean> {
    let any = false;
    for (const t of options.topics) {
      if (this.existing.has(t.topic)) continue;
      this.existing.add(t.topic);
      this.created.push(t);
      any = true;
    }
    return any;
  }
}

export interface StandInMessage {
  offset: string;
  value: Buffer | null;
  key?: Buffer | null;
}

/**
 * A stand-in for kafkajs' EachBatchPayload: records resolveOffset and commits, and lets a test stop the
 * consumer (`running = false`) or fail commits.
 */
export class StandInBatchPayload implements IngestBatchPayload {
  readonly batch: { topic: string; partition: number; messages: StandInMessage[] };
  readonly resolved: string[] = [];
  readonly commits: Offsets[] = [];
  heartbeats = 0;
  running = true;
  stale = false;
  /** Called after each commit, e.g. to stop the consumer mid-batch. */
  onCommit: ((payload: StandInBatchPayload) => void) | undefined;
  /**
   * Errors the next heartbeats / commits throw, one each, as the group coordinator answers during a
   * rebalance (REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID): see `revoke`.
   */
  heartbeatErrors: unknown[] = [];
  commitErrors: unknown[] = [];

  constructor(topic: string, partition: number, messages: StandInMessage[]) {
    this.batch = { topic, partition, messages };
  }

  resolveOffset(offset: string): void {
    this.resolved.push(offset);
  }

  async heartbeat(): Promise<void> {
    this.heartbeats++;
    const err = this.heartbeatErrors.shift();
    if (err !== undefined) throw err;
  }

  async commitOffsetsIfNecessary(offsets?: Offsets): Promise<void> {
    const err = this.commitErrors.shift();
    if (err !== undefined) throw err;
    if (offsets !== undefined) this.commits.push(offsets);
    this.onCommit?.(this);
  }

  /**
   * The partition is taken away mid-batch: the batch goes stale and the coordinator answers the next
   * heartbeat and commit with `error`. Its new owner reads again from `committed()` (see `rest`).
   */
  revoke(error: unknown): void {
    this.stale = true;
    this.heartbeatErrors.push(error);
    this.commitErrors.push(error);
  }

  /** What the partition's next owner fetches: the messages from the last committed offset on. */
  rest(): StandInBatchPayload {
    const from = BigInt(this.committed() ?? this.batch.messages[0]?.offset ?? '0');
    return new StandInBatchPayload(
      this.batch.topic,
      this.batch.partition,
      this.batch.messages.filter((m) => BigInt(m.offset) >= from),
    );
  }

  isRunning(): boolean {
    return this.running;
  }

  isStale(): boolean {
    return this.stale;
  }

  /** The last committed offset of this partition ("next offset to read"), or undefined. */
  committed(): string | undefined {
    const last = this.commits[this.commits.length - 1];
    return last?.topics[0]?.partitions[0]?.offset;
  }
}

/** Messages at consecutive offsets from `first`, values JSON-encoded unless already a string or null. */
export function messagesAt(first: number, values: readonly unknown[]): StandInMessage[] {
  return values.map((v, i) => ({
    offset: String(first + i),
    key: null,
    value: v === null ? null : Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)),
  }));
}

/** The broker the real-Kafka tests use: KAFKA_BROKERS, or one started in Docker when a Docker engine answers. */
export const KAFKA_BROKERS = process.env.KAFKA_BROKERS ?? '';

export interface TestBroker {
  brokers: string;
  stop(): Promise<void>;
}

/** Why the real-broker tests were skipped (printed once), when testBroker() answered undefined. */
export let brokerSkipReason = 'set KAFKA_BROKERS, or run where a Docker engine answers';

/**
 * KAFKA_BROKERS when set; otherwise a Redpanda container through testcontainers when a Docker engine is
 * reachable (DOCKER_HOST or the default socket); otherwise undefined, and the real-broker tests are skipped.
 */
export async function testBroker(): Promise<TestBroker | undefined> {
  if (KAFKA_BROKERS !== '') return { brokers: KAFKA_BROKERS, stop: async () => undefined };
  const { existsSync } = await import('node:fs');
  if (process.env.DOCKER_HOST === undefined && !existsSync('/var/run/docker.sock')) return undefined;
  const { createServer } = await import('node:net');
  // Kafka clients connect to the advertised address, so the host port must be known before the broker starts.
  const port = await new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
  const { GenericContainer, Wait, getContainerRuntimeClient } = await import('testcontainers');
  try {
    // The socket may exist while the engine cannot be used (daemon stopped, no permission): skip, saying so.
    await getContainerRuntimeClient();
  } catch (err) {
    brokerSkipReason = `KAFKA_BROKERS is not set and Docker cannot be used: ${err instanceof Error ? err.message : String(err)}`;
    process.stderr.write(`kafka tests skipped: ${brokerSkipReason}\n`);
    return undefined;
  }
  const container = await new GenericContainer('docker.redpanda.com/redpandadata/redpanda:v24.2.7')
    .withExposedPorts({ container: 9092, host: port })
    .withCommand([
      'redpanda',
      'start',
      '--mode',
      'dev-container',
      '--smp',
      '1',
      '--kafka-addr',
      'PLAINTEXT://0.0.0.0:9092',
      '--advertise-kafka-addr',
      `PLAINTEXT://127.0.0.1:${port}`,
    ])
    .withWaitStrategy(Wait.forListeningPorts())
    .withStartupTimeout(120_000)
    .start();
  return {
    brokers: `127.0.0.1:${port}`,
    stop: async () => {
      await container.stop();
    },
  };
}

type Listener = (event: { payload: never }) => void;

/** A stand-in kafkajs consumer: records how it was configured and lets a test deliver batches and crashes. */
export class StandInConsumer {
  readonly events = {
    CRASH: 'consumer.crash',
    GROUP_JOIN: 'consumer.group_join',
    REBALANCING: 'consumer.rebalancing',
  } as const;
  config: Record<string, unknown> | undefined;
  runConfig: Record<string, unknown> | undefined;
  subscribed: unknown;
  connected = false;
  disconnects = 0;
  private readonly listeners = new Map<string, Listener[]>();

  constructor(config: Record<string, unknown>) {
    this.config = config;
  }

  async connect(): Promise<void> {
    this.connected = true;
  }

  async subscribe(subscription: unknown): Promise<void> {
    this.subscribed = subscription;
  }

  async run(config: Record<string, unknown>): Promise<void> {
    this.runConfig = config;
  }

  async disconnect(): Promise<void> {
    this.connected = false;
    this.disconnects++;
  }

  on(event: string, listener: Listener): () => void {
    this.listeners.set(event, [...(this.listeners.get(event) ?? []), listener]);
    return () => undefined;
  }

  emit(event: string, payload: unknown): void {
    for (const l of this.listeners.get(event) ?? []) l({ payload: payload as never });
  }

  /** Hand a batch to the eachBatch handler given to run(). */
  async deliver(payload: StandInBatchPayload): Promise<void> {
    const eachBatch = this.runConfig?.eachBatch as ((p: StandInBatchPayload) => Promise<void>) | undefined;
    if (eachBatch === undefined) throw new Error('run() was not called');
    await eachBatch(payload);
  }
}

/** A stand-in for the Kafka client object: only `consumer()` is used by KafkaIngest. */
export class StandInKafka {
  readonly consumers: StandInConsumer[] = [];
  consumer(config: Record<string, unknown>): StandInConsumer {
    const c = new StandInConsumer(config);
    this.consumers.push(c);
    return c;
  }
}
