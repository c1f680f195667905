import { randomBytes } from 'node:crypto';
import type { Kafka, Message, ProducerBatch, RecordMetadata } from 'kafkajs';
import { createKafkaSink, KafkaSink } from '../consumers/sinks/kafka.ts';
import { GroupWorker } from '../consumers/worker.ts';
import { loadConfig, type Config } from '../shared/config.ts';
import { createKafka } from '../shared/kafka.ts';
import { encodeKafkaValue, KafkaTickDecoder } from '../shared/kafka-codec.ts';
import { silentLogger } from '../shared/logger.ts';
import { tickToJson, type Tick } from '../shared/model.ts';
import { closeRedis, createRedis, type RedisClient, deleteByPrefix } from '../shared/redis.ts';
import { KafkaBatchProcessor, KafkaIngest, type IngestBatchPayload } from '../producers/kafka.ts';
import { Publisher } from '../producers/publisher.ts';
import { SyntheticMarket, symbolNames } from '../producers/synthetic.ts';
import { measurement, type BenchReport, type Measurement } from './lib.ts';

/**
 * Kafka bridge benchmark (issue 6).
 *
 * With KAFKA_BROKERS set, on the real broker and the same messages:
 *   - Redis → Kafka: the mirror (group worker + Kafka sink, XACK after acks=-1) vs kafkajs alone producing the
 *     same values (sendBatch, acks=-1, idempotent, same batch size and in-flight bound);
 *   - Kafka → Redis: the ingest bridge (decode, XADD, manual commits) vs a kafkajs consumer that only counts.
 *   Target: the bridge at >= 70% of kafkajs alone.
 * Always (no broker needed), the client-side cost of the bridge path without the network to Kafka:
 *   - decoding + validating messages vs a bare JSON.parse of the same bytes;
 *   - the ingest path (decode + validate + Publisher XADD into the real Redis + offset bookkeeping, fed by a
 *     stand-in payload) vs the least a bridge could do: JSON.parse, trust the fields, Publisher XADD;
 *   - the sink's encoding and batching into a no-op producer vs a bare JSON.stringify per tick.
 */
const TICKS = 100_000;
const BROKER_TICKS = 100_000;
const KAFKA_BATCH = 5_000; // about what one kafkajs fetch of 1 MiB per partition holds
const REPS = 3;
/** Runs of each real-broker measurement: medians of five, with min and max, since one run can flip a verdict. */
const BROKER_REPS = 5;
/** The worker's default read (64 entries of 256-tick frames): what one mirror flush carries. */
const MIRROR_BATCH = 16_384;

export default async function bridgeBench(): Promise<BenchReport> {
  const base = loadConfig({ overrides: { log: { level: 'silent' } } });
  const ticks = new SyntheticMarket({ symbols: symbolNames(200), seed: 6, source: 'bench' }).next(TICKS);
  const values = ticks.map((t) => Buffer.from(encodeKafkaValue(t)));
  const measurements: Measurement[] = [];
  const summary: Record<string, string | number> = {};
  const notes: string[] = [];

  // 1. decoding
  const decoder = new KafkaTickDecoder({ fieldMap: {}, tsUnit: 'ns' });
  const mapped = new KafkaTickDecoder({
    fieldMap: { symbol: 'sym', price: 'px' },
    tsUnit: 'ns',
  });
  const mappedValues = values.map((v) => {
    const o = JSON.parse(v.toString()) as Record<string, unknown>;
    if ('symbol' in o) {
      o.sym = o.symbol;
      delete o.symbol;
    }
    if ('price' in o) {
      o.px = o.price;
      delete o.price;
    }
    return Buffer.from(JSON.stringify(o));
  });
  const parse: number[] = [];
  const decode: number[] = [];
  const decodeMapped: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    parse.push(rate(TICKS, () => values.forEach((v) => JSON.parse(v.toString('utf8')))));
    decode.push(rate(TICKS, () => values.forEach((v) => check(decoder.decode(v).ok))));
    decodeMapped.push(rate(TICKS, () => mappedValues.forEach((v) => check(mapped.decode(v).ok))));
  }
  const mDecode = measurement('decode + validate Kafka messages (model)', 'msgs/s', decode);
  const mMapped = measurement('decode + validate with a field mapping', 'msgs/s', decodeMapped);
  const mParse = measurement('baseline: JSON.parse of the same messages', 'msgs/s', parse);
  measurements.push(mDecode, mMapped, mParse);
  summary['decode / JSON.parse'] = pct(mDecode.value / mParse.value);

  // 2. Kafka → Redis client path, real Redis
  const redis = createRedis(base, { log: silentLogger() });
  try {
    const ingest: number[] = [];
    const publishOnly: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      const config = withPrefix(base, `bench:bridge:${process.pid}:${rep}`);
      ingest.push(await rateAsync(TICKS, () => ingestRun(config, redis, values)));
      await deleteByPrefix(redis, config.streams.prefix);
      publishOnly.push(await rateAsync(TICKS, () => naiveIngestRun(config, redis, values)));
      await deleteByPrefix(redis, config.streams.prefix);
    }
    const mIngest = measurement('Kafka → Redis path, no broker (decode, XADD, commits)', 'ticks/s', ingest);
    const mPublish = measurement(
      'baseline: JSON.parse + Publisher, unvalidated, no offsets',
      'ticks/s',
      publishOnly,
    );
    measurements.push(mIngest, mPublish);
    summary['ingest path / unvalidated JSON.parse + Publisher'] = pct(mIngest.value / mPublish.value);
  } finally {
    await closeRedis(redis);
  }

  // 3. Redis → Kafka client side: the sink into a producer that acknowledges at once
  const sinkRates: number[] = [];
  const stringify: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    sinkRates.push(await rateAsync(TICKS, () => sinkRun(base, ticks)));
    stringify.push(rate(TICKS, () => ticks.forEach((t) => JSON.stringify(tickToJson(t)))));
  }
  const mSink = measurement('Redis → Kafka sink, no broker (encode, batch, lanes)', 'ticks/s', sinkRates);
  const mStringify = measurement('baseline: JSON.stringify per tick', 'ticks/s', stringify);
  measurements.push(mSink, mStringify);
  summary['sink / JSON.stringify'] = pct(mSink.value / mStringify.value);

  // 4. the real broker
  if (base.kafka.brokers.length === 0) {
    summary['real broker (target >= 70% of kafkajs alone)'] = 'SKIPPED: set KAFKA_BROKERS to measure';
    notes.push(
      'real-broker part skipped: KAFKA_BROKERS is not set; the figures above are client-side only (no network to Kafka)',
    );
  } else {
    const broker = await brokerBench(base);
    measurements.push(...broker.measurements);
    Object.assign(summary, broker.summary);
    notes.push(...broker.notes);
  }
  notes.push(
    `${TICKS} synthetic ticks over 200 symbols, ${(values.reduce((n, v) => n + v.length, 0) / TICKS) | 0} bytes per message on average`,
  );
  return { name: 'bridge', measurements, summary, notes };
}

function check(ok: boolean): void {
  if (!ok) throw new Error('benchmark message did not decode');
}

function pct(r: number): string {
  return `${(r * 100).toFixed(0)}%`;
}

function rate(n: number, fn: () => void): number {
  const t0 = performance.now();
  fn();
  return n / ((performance.now() - t0) / 1000);
}

async function rateAsync(n: number, fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return n / ((performance.now() - t0) / 1000);
}

function withPrefix(base: Config, prefix: string, kafka: Partial<Config['kafka']> = {}): Config {
  return {
    ...base,
    streams: { ...base.streams, prefix },
    producer: { ...base.producer, highWater: 0 },
    kafka: { ...base.kafka, ...kafka },
  };
}

/** The ingest bridge's per-batch work, fed by a payload that commits instantly (no broker). */
async function ingestRun(config: Config, redis: RedisClient, values: readonly Buffer[]): Promise<void> {
  const processor = new KafkaBatchProcessor({
    redis,
    layout: config.streams,
    producer: config.producer,
    mapping: { fieldMap: {}, tsUnit: 'ns' },
    flushEvery: config.kafka.flushEvery,
    groupId: 'bench',
    consumer: 'bench',
    retry: { baseMs: 10, maxMs: 100 },
    log: silentLogger(),
  });
  for (let i = 0; i < values.length; i += KAFKA_BATCH) {
    const messages = values.slice(i, i + KAFKA_BATCH).map((value, j) => ({ offset: String(i + j), value }));
    const payload: IngestBatchPayload = {
      batch: { topic: 'bench', partition: 0, messages },
      resolveOffset: () => undefined,
      heartbeat: async () => undefined,
      commitOffsetsIfNecessary: async () => undefined,
      isRunning: () => true,
      isStale: () => false,
    };
    await processor.process(payload);
  }
  if (processor.stats.ticks !== values.length) throw new Error(`ingest published ${processor.stats.ticks}`);
}

/** The least a bridge could do: parse, trust the fields, publish and flush in the same steps. */
async function naiveIngestRun(config: Config, redis: RedisClient, values: readonly Buffer[]): Promise<void> {
  for (let i = 0; i < values.length; i += config.kafka.flushEvery) {
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const ticks = values.slice(i, i + config.kafka.flushEvery).map((v) => {
      const o = JSON.parse(v.toString('utf8')) as Record<string, unknown>;
      return { ...o, ts: BigInt(o.ts as string) } as unknown as Tick;
    });
    await publisher.publish(ticks);
    await publisher.flush();
  }
}

class NoopProducer {
  async connect(): Promise<void> {}
  async disconnect(): Promise<void> {}
  async sendBatch(_batch: ProducerBatch): Promise<RecordMetadata[]> {
    return [];
  }
}

/** The sink as the worker drives it: 16k-tick batches (64 entries x 256-tick frames), write then flush. */
async function sinkRun(config: Config, ticks: readonly Tick[]): Promise<void> {
  const sink = new KafkaSink({
    producer: new NoopProducer(),
    topic: 'bench',
    partitions: config.kafka.partitions,
    replicationFactor: -1,
    sendBatchSize: config.kafka.sendBatchSize,
    maxInFlight: config.kafka.maxInFlight,
    log: silentLogger(),
  });
  await sink.start();
  for (let i = 0; i < ticks.length; i += 16_384) {
    await sink.write(ticks.slice(i, i + 16_384));
    await sink.flush();
  }
  await sink.close();
}

async function brokerBench(
  base: Config,
): Promise<{ measurements: Measurement[]; summary: Record<string, string>; notes: string[] }> {
  const log = silentLogger();
  const kafka = createKafka(base.kafka, log);
  const admin = kafka.admin();
  await admin.connect();
  const redis = createRedis(base, { log });
  const ticks = new SyntheticMarket({ symbols: symbolNames(200), seed: 8, source: 'bench-kafka' }).next(
    BROKER_TICKS,
  );
  const messages: Message[] = ticks.map((t) => ({ key: t.symbol, value: encodeKafkaValue(t) }));
  const topics: string[] = [];
  const groups: string[] = [];
  const fresh = (what: string) => `bench.${what}.${randomBytes(4).toString('hex')}`;
  const produceAlone: number[] = [];
  const mirror: number[] = [];
  const consumeAlone: number[] = [];
  const ingest: number[] = [];
  const sinkOnly: number[] = [];
  try {
    for (let rep = 0; rep < BROKER_REPS; rep++) {
      // Redis → Kafka
      const aloneTopic = fresh('alone');
      topics.push(aloneTopic);
      await admin.createTopics({
        topics: [{ topic: aloneTopic, numPartitions: base.kafka.partitions }],
        waitForLeaders: true,
      });
      produceAlone.push(
        await rateAsync(BROKER_TICKS, () => produceWithKafkajs(kafka, base, aloneTopic, messages)),
      );

      const mirrorTopic = fresh('mirror');
      topics.push(mirrorTopic);
      const config = withPrefix(base, `bench:bridge:kafka:${process.pid}:${rep}`, { mirrorTopic });
      const publisher = new Publisher({ redis, layout: config.streams, settings: config.producer, log });
      await publisher.publish(ticks);
      await publisher.flush();
      mirror.push(await mirrorRun(config, ticks.length));
      await deleteByPrefix(redis, config.streams.prefix);

      // The sink alone on the same batches, without Redis: what the worker's read → flush → XACK cycle costs.
      const sinkTopic = fresh('sink');
      topics.push(sinkTopic);
      sinkOnly.push(await sinkOnlyRun(withPrefix(base, 'bench:unused', { mirrorTopic: sinkTopic }), ticks));

      // Kafka → Redis, both reading the topic kafkajs alone just filled
      const aloneGroup = fresh('count');
      groups.push(aloneGroup);
      consumeAlone.push(await consumeWithKafkajs(kafka, aloneGroup, aloneTopic, BROKER_TICKS));
      const ingestGroup = fresh('ingest');
      groups.push(ingestGroup);
      const ingestConfig = withPrefix(base, `bench:bridge:ingest:${process.pid}:${rep}`, {
        topics: [aloneTopic],
        groupId: ingestGroup,
        fromBeginning: true,
      });
      ingest.push(await ingestBrokerRun(kafka, ingestConfig, redis, BROKER_TICKS));
      await deleteByPrefix(redis, ingestConfig.streams.prefix);
    }
  } finally {
    await admin.deleteGroups(groups).catch(() => undefined);
    await admin.deleteTopics({ topics }).catch(() => undefined);
    await admin.disconnect();
    await closeRedis(redis);
  }
  const mMirror = measurement('Redis → Kafka bridge (worker + sink, XACK after acks=-1)', 'ticks/s', mirror);
  const mProduce = measurement('baseline: kafkajs alone producing the same messages', 'msgs/s', produceAlone);
  const mIngest = measurement('Kafka → Redis bridge (decode, XADD, commit)', 'ticks/s', ingest);
  const mConsume = measurement('baseline: kafkajs alone consuming the same messages', 'msgs/s', consumeAlone);
  const mSinkOnly = measurement(
    `Kafka sink alone, ${MIRROR_BATCH}-tick flushes, no Redis (where the mirror's time goes)`,
    'ticks/s',
    sinkOnly,
  );
  const r1 = mMirror.value / mProduce.value;
  const r2 = mIngest.value / mConsume.value;
  const spread = (m: Measurement) =>
    `median ${Math.round(m.value)}, min ${Math.round(Math.min(...m.runs))}, max ${Math.round(Math.max(...m.runs))}`;
  return {
    measurements: [mMirror, mSinkOnly, mProduce, mIngest, mConsume],
    summary: {
      'Redis → Kafka / kafkajs alone': `${pct(r1)} (target >= 70%) ${r1 >= 0.7 ? 'ok' : 'MISSED'}`,
      'Kafka → Redis / kafkajs alone': `${pct(r2)} (target >= 70%) ${r2 >= 0.7 ? 'ok' : 'MISSED'}`,
      'Redis → Kafka: sink alone / kafkajs alone': pct(mSinkOnly.value / mProduce.value),
      'Redis → Kafka bridge runs': spread(mMirror),
      'kafkajs producing runs': spread(mProduce),
      'Kafka → Redis bridge runs': spread(mIngest),
      'kafkajs consuming runs': spread(mConsume),
    },
    notes: [
      `real broker ${base.kafka.brokers.join(',')}: ${BROKER_TICKS} messages, ${base.kafka.partitions} partitions, ${BROKER_REPS} runs each (medians)`,
      'if "sink alone" is near kafkajs alone and the bridge is not, the gap is the worker cycle (XREADGROUP, flush barrier, XACK); if "sink alone" is low too, it is the per-flush barrier of the lanes',
      'consume rates count from the first fetched batch to the last message, so the group join is left out of both',
    ],
  };
}

async function produceWithKafkajs(
  kafka: Kafka,
  config: Config,
  topic: string,
  messages: Message[],
): Promise<void> {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: config.kafka.maxInFlight });
  await producer.connect();
  try {
    const size = config.kafka.sendBatchSize;
    let next = 0;
    const lane = async () => {
      for (;;) {
        const i = next;
        next += size;
        if (i >= messages.length) return;
        await producer.sendBatch({
          acks: -1,
          topicMessages: [{ topic, messages: messages.slice(i, i + size) }],
        });
      }
    };
    await Promise.all(Array.from({ length: config.kafka.maxInFlight }, lane));
  } finally {
    await producer.disconnect();
  }
}

async function mirrorRun(config: Config, count: number): Promise<number> {
  const log = silentLogger();
  const redis = createRedis(config, { log });
  const blocking = createRedis(config, { log, blocking: true });
  const sink = createKafkaSink(config.kafka, log);
  const worker = new GroupWorker({
    redis,
    blocking,
    layout: config.streams,
    group: 'kafka-mirror',
    consumer: 'bench',
    sink,
    settings: config.consumer,
    log,
  });
  try {
    // Topic creation and connecting are set-up, not throughput (the worker's own start() then finds it done).
    await sink.start();
    const t0 = performance.now();
    await worker.start();
    while (worker.stats.acked < 1 || worker.stats.ticks < count) await new Promise((r) => setTimeout(r, 5));
    return count / ((performance.now() - t0) / 1000);
  } finally {
    await worker.close();
    await closeRedis(blocking);
    await closeRedis(redis);
  }
}

async function sinkOnlyRun(config: Config, ticks: readonly Tick[]): Promise<number> {
  const sink = createKafkaSink(config.kafka, silentLogger());
  try {
    await sink.start();
    const t0 = performance.now();
    for (let i = 0; i < ticks.length; i += MIRROR_BATCH) {
      await sink.write(ticks.slice(i, i + MIRROR_BATCH));
      await sink.flush();
    }
    return ticks.length / ((performance.now() - t0) / 1000);
  } finally {
    await sink.close();
  }
}

async function consumeWithKafkajs(
  kafka: Kafka,
  groupId: string,
  topic: string,
  count: number,
): Promise<number> {
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let seen = 0;
  let t0 = 0;
  let t1 = 0;
  await consumer.run({
    eachBatch: async ({ batch }) => {
      if (t0 === 0) t0 = performance.now();
      // What any consumer does at least: look at every value.
      for (const m of batch.messages) if (m.value !== null) seen++;
      if (seen >= count && t1 === 0) t1 = performance.now();
    },
  });
  while (t1 === 0) await new Promise((r) => setTimeout(r, 5));
  await consumer.disconnect();
  return count / ((t1 - t0) / 1000);
}

async function ingestBrokerRun(
  kafka: Kafka,
  config: Config,
  redis: RedisClient,
  count: number,
): Promise<number> {
  const ingest = new KafkaIngest({
    kafka,
    settings: config.kafka,
    redis,
    layout: config.streams,
    producer: config.producer,
    retry: { baseMs: 10, maxMs: 200 },
    consumerName: 'bench',
    log: silentLogger(),
  });
  await ingest.start();
  while (ingest.stats.batches === 0) await new Promise((r) => setTimeout(r, 1));
  const t0 = performance.now();
  while (ingest.stats.ticks < count) await new Promise((r) => setTimeout(r, 5));
  const t1 = performance.now();
  await ingest.close();
  return count / ((t1 - t0) / 1000);
}
