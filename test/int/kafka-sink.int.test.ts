import kafkajs from 'kafkajs';
import { afterEach, describe, expect, it } from 'vitest';
import { listDeadLetters } from '../../consumers/deadletters.ts';
import { KafkaSink } from '../../consumers/sinks/kafka.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import type { Config } from '../../shared/config.ts';
import { KafkaTickDecoder } from '../../shared/kafka-codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey } from '../../shared/model.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';
import { StandInAdmin, StandInProducer } from '../helpers/kafka.ts';
import { pendingTotal, produceTicks } from '../helpers/streams.ts';

/**
 * Redis → Kafka: the generic group worker running the Kafka sink, against the real Redis and a stand-in
 * kafkajs producer. Shows that XACK follows Kafka's acknowledgement and how Kafka errors are handled.
 */
const open: RedisClient[] = [];
const workers: GroupWorker[] = [];
const prefixes: string[] = [];

function setup() {
  const config = testConfig();
  prefixes.push(config.streams.prefix);
  const redis = testRedis(config);
  open.push(redis);
  return { config, redis, group: uniqueName('kafka_mirror') };
}

function startWorker(config: Config, group: string, producer: StandInProducer) {
  const redis = testRedis(config);
  const blocking = testRedis(config, true);
  open.push(redis, blocking);
  const sink = new KafkaSink({
    producer,
    admin: new StandInAdmin(),
    topic: 'mirror',
    partitions: 6,
    replicationFactor: -1,
    sendBatchSize: 100,
    maxInFlight: 3,
    log: silentLogger(),
  });
  const worker = new GroupWorker({
    redis,
    blocking,
    layout: config.streams,
    group,
    consumer: uniqueName('c'),
    sink,
    settings: config.consumer,
    log: silentLogger(),
  });
  workers.push(worker);
  return worker;
}

const decoder = new KafkaTickDecoder({ fieldMap: {}, tsUnit: 'ns' });
function sentKeys(producer: StandInProducer): string[] {
  return producer.messages().map((m) => {
    const r = decoder.decode(m.value as string);
    if (!r.ok) throw new Error(r.reason);
    return tickKey(r.tick);
  });
}

afterEach(async () => {
  for (const w of workers.splice(0)) await w.close().catch(() => undefined);
  const cleaner = open[0];
  if (cleaner !== undefined) for (const p of prefixes.splice(0)) await cleanupPrefix(cleaner, p);
  for (const r of open.splice(0)) await closeRedis(r);
});

describe('Redis → Kafka through the group worker (real Redis, stand-in producer)', () => {
  it('acknowledges stream entries only after Kafka acknowledged the sends', async () => {
    const { config, redis, group } = setup();
    const producer = new StandInProducer();
    producer.hold();
    const ticks = await produceTicks(config, redis, 600, { symbols: ['AAA', 'BBB', 'CCC', 'DDD'], seed: 5 });
    const worker = startWorker(config, group, producer);
    await worker.start();
    await waitUntil(() => producer.inFlight > 0, 'a send in flight');
    expect(await pendingTotal(redis, config, group)).toBeGreaterThan(0);
    expect(worker.stats.acked).toBe(0);
    producer.release();
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'everything acknowledged');
    await waitUntil(() => producer.messages().length >= ticks.length, 'every tick sent');
    expect(new Set(sentKeys(producer))).toEqual(new Set(ticks.map(tickKey)));
    expect(sentKeys(producer)).toHaveLength(ticks.length);
  });

  it('keeps entries pending while the broker is unavailable (retriable), then delivers every tick', async () => {
    const { config, redis, group } = setup();
    const producer = new StandInProducer();
    // More failures than one flush absorbs by itself, so that the worker's own retry is exercised.
    producer.failWith = Array.from({ length: 12 }, () => 0).map(
      () => new kafkajs.KafkaJSConnectionError('Connection error: ECONNREFUSED (test)'),
    );
    const ticks = await produceTicks(config, redis, 300, { symbols: ['AAA', 'BBB', 'CCC', 'DDD'], seed: 5 });
    const worker = startWorker(config, group, producer);
    await worker.start();
    await waitUntil(() => worker.stats.retries >= 1, 'a retry');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'everything acknowledged');
    expect(new Set(sentKeys(producer))).toEqual(new Set(ticks.map(tickKey)));
    expect(worker.stats.deadLettered).toBe(0);
  });

  it('dead-letters the one tick the broker can never accept (not retriable) and mirrors the rest', async () => {
    const { config, redis, group } = setup();
    const producer = new StandInProducer();
    const ticks = await produceTicks(config, redis, 200, { symbols: ['AAA', 'BBB', 'CCC', 'DDD'], seed: 5 });
    const victim = ticks[77]!;
    producer.refuse = {
      when: (m) => m.key === victim.symbol && JSON.parse(m.value as string).seq === victim.seq,
      error: new kafkajs.KafkaJSProtocolError({
        type: 'MESSAGE_TOO_LARGE',
        code: 10,
        retriable: false,
        message: 'The request included a message larger than the max message size the server will accept',
      } as unknown as string),
    };
    const worker = startWorker(config, group, producer);
    await worker.start();
    await waitUntil(
      async () => (await pendingTotal(redis, config, group)) === 0 && worker.stats.deadLettered === 1,
      'settled',
    );
    const letters = await listDeadLetters(redis, config.streams, { group });
    expect(letters).toHaveLength(1);
    expect(letters[0]!.reason).toMatch(/MESSAGE_TOO_LARGE/);
    const sent = new Set(sentKeys(producer));
    expect(sent.has(tickKey(victim))).toBe(false);
    expect(sent.size).toBe(199);
  });
});
