import kafkajs, { type Producer } from 'kafkajs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FLUSH_ATTEMPTS, KafkaSink, createKafkaSink } from '../../consumers/sinks/kafka.ts';
import { loadConfig } from '../../shared/config.ts';
import { ConfigError, SinkError } from '../../shared/errors.ts';
import { classifyKafkaError, requireKafka } from '../../shared/kafka.ts';
import { KafkaTickDecoder } from '../../shared/kafka-codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Tick } from '../../shared/model.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { StandInAdmin, StandInProducer } from '../helpers/kafka.ts';

// kafkajs is CommonJS and spreads its error classes into module.exports, which named ESM imports cannot see.
const {
  KafkaJSConnectionError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSProtocolError,
  KafkaJSRequestTimeoutError,
} = kafkajs;

function sink(producer: StandInProducer, over: Partial<{ sendBatchSize: number; maxInFlight: number }> = {}) {
  const admin = new StandInAdmin();
  const s = new KafkaSink({
    producer,
    admin,
    topic: 'mirror',
    partitions: 12,
    replicationFactor: -1,
    sendBatchSize: over.sendBatchSize ?? 100,
    maxInFlight: over.maxInFlight ?? 5,
    log: silentLogger(),
  });
  return { sink: s, admin };
}

function ticks(n: number, symbols = ['AAA', 'BBB', 'CCC', 'DDD', 'EEE', 'FFF', 'GGG']): Tick[] {
  return new SyntheticMarket({ symbols, seed: 3, source: 'test' }).next(n);
}

function protocolError(type: string, retriable: boolean) {
  return new KafkaJSProtocolError({
    type,
    code: 1,
    retriable,
    message: `${type} (test)`,
  } as unknown as string);
}

async function settle<T>(p: Promise<T>): Promise<'pending' | 'resolved' | 'rejected'> {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(
    () => (state = 'resolved'),
    () => (state = 'rejected'),
  );
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  return state;
}

describe('Kafka sink against a stand-in producer', () => {
  it('creates the topic with the configured partitions, then connects the producer', async () => {
    const producer = new StandInProducer();
    const { sink: s, admin } = sink(producer);
    await s.start();
    expect(admin.created).toEqual([{ topic: 'mirror', numPartitions: 12, replicationFactor: -1 }]);
    expect(admin.connected).toBe(false);
    expect(producer.connected).toBe(true);
  });

  it('produces each tick keyed by symbol, the model as JSON with ts as a string, acks=-1', async () => {
    const producer = new StandInProducer();
    const { sink: s } = sink(producer);
    await s.start();
    const batch = ticks(50);
    await s.write(batch);
    await s.flush();
    const sent = producer.messages();
    expect(sent).toHaveLength(50);
    expect(producer.batches.every((b) => b.acks === -1)).toBe(true);
    expect(producer.batches.every((b) => b.topicMessages?.[0]?.topic === 'mirror')).toBe(true);
    const decoder = new KafkaTickDecoder({ fieldMap: {}, tsUnit: 'ns' });
    const back = sent.map((m) => {
      const r = decoder.decode(m.value as string);
      if (!r.ok) throw new Error(r.reason);
      expect(m.key).toBe(r.tick.symbol);
      expect(JSON.parse(m.value as string).ts).toBe(r.tick.ts.toString());
      return r.tick;
    });
    expect(new Set(back.map((t) => `${t.symbol}|${t.seq}`))).toEqual(
      new Set(batch.map((t) => `${t.symbol}|${t.seq}`)),
    );
  });

  it('flush resolves only after the send resolved (the worker acknowledges after Kafka did)', async () => {
    const producer = new StandInProducer();
    const { sink: s } = sink(producer);
    await s.start();
    await s.write(ticks(10));
    producer.hold();
    const flushing = s.flush();
    expect(await settle(flushing)).toBe('pending');
    expect(producer.messages()).toHaveLength(0);
    producer.release();
    await flushing;
    expect(producer.messages()).toHaveLength(10);
  });

  it('batches sends and bounds the requests in flight, keeping each symbol in order', async () => {
    const producer = new StandInProducer();
    const { sink: s } = sink(producer, { sendBatchSize: 40, maxInFlight: 3 });
    await s.start();
    const batch = ticks(
      1000,
      Array.from({ length: 30 }, (_, i) => `S${i}`),
    );
    await s.write(batch);
    await s.flush();
    expect(producer.messages()).toHaveLength(1000);
    expect(producer.batches.every((b) => (b.topicMessages?.[0]?.messages.length ?? 0) <= 40)).toBe(true);
    expect(producer.maxInFlight).toBeGreaterThan(1);
    expect(producer.maxInFlight).toBeLessThanOrEqual(3);
    // Per symbol, the acknowledged order is the written order.
    const expected = new Map<string, string[]>();
    for (const t of batch) expected.set(t.symbol, [...(expected.get(t.symbol) ?? []), String(t.seq)]);
    const actual = new Map<string, string[]>();
    for (const m of producer.messages()) {
      const seq = String(JSON.parse(m.value as string).seq);
      actual.set(m.key as string, [...(actual.get(m.key as string) ?? []), seq]);
    }
    expect(actual).toEqual(expected);
  });

  it('broker unavailable and timeouts are retriable; the staged batch is discarded for the rewrite', async () => {
    for (const err of [
      new KafkaJSConnectionError('Connection error: connect ECONNREFUSED (test)'),
      new KafkaJSNumberOfRetriesExceeded(new KafkaJSRequestTimeoutError('Request Produce timed out (test)'), {
        retryCount: 5,
        retryTime: 100,
      }),
      new Error('socket hang up (test)'),
      protocolError('NOT_LEADER_FOR_PARTITION', true),
      // Not the ticks' fault: retried (entries stay pending) rather than dead-lettering good ticks.
      protocolError('TOPIC_AUTHORIZATION_FAILED', false),
    ]) {
      const producer = new StandInProducer();
      const { sink: s } = sink(producer);
      await s.start();
      await s.write(ticks(5));
      producer.failWith = Array.from({ length: FLUSH_ATTEMPTS }, () => err);
      const failure = await s.flush().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(failure).toBeInstanceOf(SinkError);
      expect((failure as SinkError).retriable).toBe(true);
      expect((failure as SinkError).cause).toBe(err);
      // The worker writes the same batch again after a failure: nothing left over is sent twice.
      await s.write(ticks(5));
      await s.flush();
      expect(producer.messages()).toHaveLength(5);
    }
  });

  it('a transient failure is retried inside the flush, resending only the lane that failed', async () => {
    const producer = new StandInProducer();
    const { sink: s } = sink(producer);
    await s.start();
    const batch = ticks(400);
    await s.write(batch);
    producer.failWith = [new KafkaJSConnectionError('Connection error: connect ECONNREFUSED (test)')];
    await s.flush();
    const keys = producer.messages().map((m) => `${m.key as string}|${JSON.parse(m.value as string).seq}`);
    expect(keys).toHaveLength(batch.length);
    expect(new Set(keys).size).toBe(batch.length);
  });

  it('a cluster that fails part of a request (one partition leader down): every tick written exactly once', async () => {
    const producer = new StandInProducer();
    producer.partitions = 12;
    const { sink: s } = sink(producer, { sendBatchSize: 50 });
    await s.start();
    const batch = ticks(
      600,
      Array.from({ length: 30 }, (_, i) => `S${i}`),
    );
    const down = new KafkaJSConnectionError('Connection error: leader of partition 4 unreachable (test)');
    // Inside one flush: the failing partition's requests are retried, nothing else is resent.
    producer.failPartitions = { partitions: new Set([4, 7]), error: down, times: 2 };
    await s.write(batch);
    await s.flush();
    const keyOf = (m: { key?: unknown; value: unknown }) =>
      `${String(m.key)}|${JSON.parse(String(m.value)).seq}`;
    expect(producer.messages().map(keyOf).sort()).toEqual(batch.map((t) => `${t.symbol}|${t.seq}`).sort());

    // Past the flush's attempts: the flush fails, the worker writes the same batch again, and what Kafka
    // acknowledged the first time is not produced twice.
    const again = ticks(300, ['X1', 'X2', 'X3', 'X4', 'X5', 'X6', 'X7', 'X8']);
    const before = producer.messages().length;
    producer.failPartitions = {
      partitions: new Set([0, 1, 2, 3, 4, 5]),
      error: down,
      times: FLUSH_ATTEMPTS * 6,
    };
    await s.write(again);
    await expect(s.flush()).rejects.toMatchObject({ retriable: true });
    expect(producer.messages().length - before).toBeGreaterThan(0); // part of it was written
    producer.failPartitions = undefined;
    await s.write(again);
    await s.flush();
    const written = producer.messages().slice(before).map(keyOf).sort();
    expect(written).toEqual(again.map((t) => `${t.symbol}|${t.seq}`).sort());
  });

  it('each symbol goes to one partition, the one kafkajs would pick for its key, and requests never mix partitions', async () => {
    const producer = new StandInProducer();
    producer.partitions = 12;
    const { sink: s } = sink(producer, { sendBatchSize: 40 });
    await s.start();
    await s.write(
      ticks(
        500,
        Array.from({ length: 25 }, (_, i) => `K${i}`),
      ),
    );
    await s.flush();
    const bySymbol = new Map<string, Set<number>>();
    for (const { partition, message } of producer.log) {
      const set = bySymbol.get(String(message.key)) ?? new Set<number>();
      set.add(partition);
      bySymbol.set(String(message.key), set);
      expect(partition).toBe(producer.partitionOf({ key: message.key ?? null, value: null }));
    }
    expect([...bySymbol.values()].every((set) => set.size === 1)).toBe(true);
    for (const b of producer.batches) {
      const parts = new Set(b.topicMessages!.flatMap((t) => t.messages.map((m) => m.partition)));
      expect(parts.size).toBe(1);
    }
  });

  it('an existing topic with another partition count than configured is partitioned as the broker has it', async () => {
    const producer = new StandInProducer();
    producer.partitions = 5;
    const admin = new StandInAdmin();
    await admin.createTopics({ topics: [{ topic: 'mirror', numPartitions: 5 }] });
    const s = new KafkaSink({
      producer,
      admin,
      topic: 'mirror',
      partitions: 12,
      replicationFactor: -1,
      sendBatchSize: 100,
      maxInFlight: 5,
      log: silentLogger(),
    });
    await s.start();
    await s.write(ticks(200));
    await s.flush();
    expect(Math.max(...producer.log.map((p) => p.partition))).toBeLessThan(5);
    for (const { partition, message } of producer.log) {
      expect(partition).toBe(producer.partitionOf({ key: message.key ?? null, value: null }));
    }
  });

  it('a record the broker can never accept is not retriable (the worker dead-letters that tick)', async () => {
    const producer = new StandInProducer();
    const { sink: s } = sink(producer);
    await s.start();
    const batch = ticks(20);
    const victim = batch[7]!;
    producer.refuse = {
      when: (m) => m.key === victim.symbol && JSON.parse(m.value as string).seq === victim.seq,
      error: protocolError('MESSAGE_TOO_LARGE', false),
    };
    await s.write(batch);
    const failure = (await s.flush().catch((e: unknown) => e)) as SinkError;
    expect(failure).toBeInstanceOf(SinkError);
    expect(failure.retriable).toBe(false);
    expect(failure.message).toMatch(/MESSAGE_TOO_LARGE/);
  });

  it('classifies kafkajs errors through their causes', () => {
    expect(classifyKafkaError(protocolError('INVALID_RECORD', false))).toMatchObject({ retriable: false });
    const wrapped = new KafkaJSNumberOfRetriesExceeded(protocolError('CORRUPT_MESSAGE', true), {
      retryCount: 1,
      retryTime: 1,
    });
    expect(classifyKafkaError(wrapped)).toMatchObject({ retriable: false, kind: 'CORRUPT_MESSAGE' });
    expect(classifyKafkaError(new KafkaJSConnectionError('down'))).toMatchObject({
      retriable: true,
      transient: true,
    });
    expect(classifyKafkaError(protocolError('TOPIC_AUTHORIZATION_FAILED', false))).toMatchObject({
      retriable: true,
      transient: false,
    });
  });

  it('close flushes what is staged, then disconnects; twice is harmless', async () => {
    const producer = new StandInProducer();
    const { sink: s } = sink(producer);
    await s.start();
    await s.write(ticks(3));
    await s.close();
    await s.close();
    expect(producer.messages()).toHaveLength(3);
    expect(producer.disconnects).toBe(1);
  });
});

describe('createKafkaSink', () => {
  afterEach(() => vi.restoreAllMocks());

  /** The kafkajs producer createKafkaSink builds (no broker is contacted: nothing connects). */
  function built(env: Record<string, string>): { options: kafkajs.ProducerConfig; producer: Producer } {
    const factory = vi.spyOn(kafkajs.Kafka.prototype, 'producer');
    // Port 1: were anything to connect by mistake, it would fail rather than reach a broker.
    createKafkaSink(
      requireKafka(loadConfig({ env: { KAFKA_BROKERS: '127.0.0.1:1', ...env } })),
      silentLogger(),
    );
    expect(factory).toHaveBeenCalledTimes(1);
    const options = factory.mock.calls[0]![0]!;
    const result = factory.mock.results[0]!;
    expect(result.type).toBe('return');
    return { options, producer: result.value as Producer };
  }

  it('builds an idempotent producer by default: retries allowed, at most 5 requests in flight, acks=-1 enforced', async () => {
    const { options, producer } = built({ KAFKA_MAX_IN_FLIGHT: '4' });
    expect(options.idempotent).toBe(true);
    expect(producer.isIdempotent()).toBe(true);
    // The broker keeps a producer's sequence per partition for its last 5 requests only: more in flight and a
    // retried request can be written twice or out of order.
    expect(options.maxInFlightRequests).toBe(4);
    // kafkajs refuses an idempotent producer with no retries; a retry is how it recovers a lost reply.
    expect(options.retry?.retries).toBeGreaterThanOrEqual(1);
    // An idempotent producer accepts acks=-1 only (the sink's own requests use it: tested above); anything
    // else is refused before a request is built.
    await expect(
      producer.sendBatch({ acks: 1, topicMessages: [{ topic: 'mirror', messages: [{ value: 'x' }] }] }),
    ).rejects.toThrow(/idempotent producer/);
  });

  it('the producer is idempotent only because the settings say so (KAFKA_IDEMPOTENT=false turns it off)', () => {
    const { options, producer } = built({ KAFKA_IDEMPOTENT: 'false', KAFKA_MAX_IN_FLIGHT: '6' });
    expect(options.idempotent).toBe(false);
    expect(producer.isIdempotent()).toBe(false);
    expect(options.maxInFlightRequests).toBe(6);
  });

  it('every retry setting the config accepts builds a producer: KAFKA_RETRIES=0 only without idempotence', () => {
    expect(built({ KAFKA_RETRIES: '0', KAFKA_IDEMPOTENT: 'false' }).options.retry?.retries).toBe(0);
    expect(built({ KAFKA_RETRIES: '1' }).options.retry?.retries).toBe(1);
    expect(() => built({ KAFKA_RETRIES: '0' })).toThrow(ConfigError);
  });
});
