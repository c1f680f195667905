import { afterEach, describe, expect, it } from 'vitest';
import { listDeadLetters } from '../../consumers/deadletters.ts';
import { decodeFrame } from '../../shared/codec.ts';
import type { Config } from '../../shared/config.ts';
import { encodeKafkaValue, type KafkaMapping } from '../../shared/kafka-codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey, type Tick } from '../../shared/model.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys, deadLetterKey, streamForSymbol } from '../../shared/streams.ts';
import kafkajs, { type Kafka } from 'kafkajs';
import { loadConfig } from '../../shared/config.ts';
import { KafkaBatchProcessor, KafkaIngest } from '../../producers/kafka.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';
import { messagesAt, StandInBatchPayload, StandInKafka } from '../helpers/kafka.ts';

// kafkajs is CommonJS and spreads its error classes into module.exports, which named ESM imports cannot see.
const { KafkaJSProtocolError } = kafkajs;

/**
 * Kafka → Redis processing against the real Redis, with a stand-in for kafkajs' eachBatch payload: which
 * offsets get committed, what is dead-lettered, what happens when Redis fails part of a batch.
 */
const open: RedisClient[] = [];
const prefixes: string[] = [];

function setup() {
  const config = testConfig();
  prefixes.push(config.streams.prefix);
  const redis = testRedis(config);
  open.push(redis);
  return { config, redis };
}

function processor(
  config: Config,
  redis: RedisClient,
  over: Partial<{ flushEvery: number; mapping: KafkaMapping }> = {},
) {
  return new KafkaBatchProcessor({
    redis,
    layout: config.streams,
    producer: { ...config.producer, frameSize: 16 },
    mapping: over.mapping ?? { fieldMap: {}, tsUnit: 'ns' },
    flushEvery: over.flushEvery ?? 1000,
    groupId: 'bridge-test',
    consumer: 'c1',
    retry: { baseMs: 5, maxMs: 20 },
    heartbeatMs: 10,
    log: silentLogger(),
  });
}

function market(n: number): Tick[] {
  return new SyntheticMarket({
    symbols: ['AAA', 'BBB', 'CCC', 'DDD', 'EEE'],
    seed: 9,
    source: uniqueName('src'),
  }).next(n);
}

/** Every tick in the shard streams, with the stream it is in. */
async function streamTicks(redis: RedisClient, config: Config): Promise<{ tick: Tick; stream: string }[]> {
  const out: { tick: Tick; stream: string }[] = [];
  for (const stream of allStreamKeys(config.streams)) {
    const entries = (await redis.xrange(stream, '-', '+')) as [string, string[]][];
    for (const [, fields] of entries)
      for (const tick of decodeFrame(fields).ticks) out.push({ tick, stream });
  }
  return out;
}

afterEach(async () => {
  const cleaner = open[0];
  if (cleaner !== undefined) for (const p of prefixes.splice(0)) await cleanupPrefix(cleaner, p);
  for (const r of open.splice(0)) await closeRedis(r);
});

describe('Kafka → Redis batch processing (real Redis, stand-in kafkajs payload)', () => {
  it('XADDs every tick into its shard, in order, then commits the end of the batch', async () => {
    const { config, redis } = setup();
    const ticks = market(500);
    const payload = new StandInBatchPayload('ticks', 3, messagesAt(1000, ticks.map(encodeKafkaValue)));
    const p = processor(config, redis, { flushEvery: 128 });
    await p.process(payload);

    const stored = await streamTicks(redis, config);
    expect(stored).toHaveLength(500);
    expect(new Set(stored.map((s) => tickKey(s.tick)))).toEqual(new Set(ticks.map(tickKey)));
    for (const s of stored) expect(s.stream).toBe(streamForSymbol(config.streams, s.tick.symbol));
    // Per symbol, the stream order is the partition order.
    for (const symbol of ['AAA', 'BBB']) {
      expect(stored.filter((s) => s.tick.symbol === symbol).map((s) => s.tick.seq)).toEqual(
        ticks.filter((t) => t.symbol === symbol).map((t) => t.seq),
      );
    }
    expect(payload.committed()).toBe('1500');
    expect(payload.resolved[payload.resolved.length - 1]).toBe('1499');
    expect(payload.commits).toHaveLength(4); // 128-message steps: 128, 256, 384, 500
    expect(p.stats).toMatchObject({ messages: 500, ticks: 500, deadLettered: 0, retries: 0 });
  });

  it('dead-letters bad messages with topic, partition, offset and reason; the partition moves on', async () => {
    const { config, redis } = setup();
    const [a, b, c] = market(3);
    const values = [
      encodeKafkaValue(a!),
      '{"type":"trade", oops',
      encodeKafkaValue(b!),
      null,
      JSON.stringify({ ...JSON.parse(encodeKafkaValue(c!)), price: -5 }),
      encodeKafkaValue(c!),
    ];
    const payload = new StandInBatchPayload('vendor.ticks', 7, messagesAt(40, values));
    await processor(config, redis).process(payload);

    const stored = await streamTicks(redis, config);
    expect(stored.map((s) => tickKey(s.tick)).sort()).toEqual([a!, b!, c!].map(tickKey).sort());
    expect(payload.committed()).toBe('46');

    const letters = (await redis.xrange(deadLetterKey(config.streams), '-', '+')) as [string, string[]][];
    expect(letters).toHaveLength(3);
    const fields = letters.map(([, f]) =>
      Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])),
    );
    expect(fields.map((f) => f.offset)).toEqual(['41', '43', '44']);
    for (const f of fields) {
      expect(f).toMatchObject({
        kind: 'kafka',
        topic: 'vendor.ticks',
        partition: '7',
        group: 'bridge-test',
        consumer: 'c1',
      });
      expect(f.stream).toBe('kafka:vendor.ticks/7');
      expect(f.id).toBe(f.offset);
    }
    expect(fields[0]!.reason).toMatch(/not valid JSON/);
    expect(fields[0]!.value).toBe('{"type":"trade", oops');
    expect(fields[1]!.reason).toMatch(/empty message value/);
    expect(fields[2]!.reason).toMatch(/^price: /);
    // `tickstream dlq list` reads them like any other dead letter.
    const listed = await listDeadLetters(redis, config.streams, { group: 'bridge-test' });
    expect(listed.map((l) => `${l.stream} ${l.id}`)).toEqual([
      'kafka:vendor.ticks/7 41',
      'kafka:vendor.ticks/7 43',
      'kafka:vendor.ticks/7 44',
    ]);
  });

  it('reads a mapped foreign format', async () => {
    const { config, redis } = setup();
    const payload = new StandInBatchPayload(
      'vendor',
      0,
      messagesAt(0, [{ kind: 'trade', sym: 'ES', t: '1700000000.123456789', n: 1, px: 4500.25, qty: 3 }]),
    );
    await processor(config, redis, {
      mapping: {
        fieldMap: { type: 'kind', symbol: 'sym', ts: 't', seq: 'n', price: 'px', size: 'qty' },
        tsUnit: 's',
        defaultSource: 'cme',
      },
    }).process(payload);
    const [stored] = await streamTicks(redis, config);
    expect(stored?.tick).toMatchObject({
      source: 'cme',
      symbol: 'ES',
      ts: 1_700_000_000_123_456_789n,
      price: 4500.25,
    });
    expect(payload.committed()).toBe('1');
  });

  it('after a partial failure commits only the durable prefix, then retries the rest until Redis recovers', async () => {
    const { config, redis } = setup();
    const dlq = deadLetterKey(config.streams);
    // The dead-letter key holds a string: XADD to it fails (WRONGTYPE) while tick frames still land.
    await redis.set(dlq, 'in the way');
    const [a, b, c] = market(3);
    const payload = new StandInBatchPayload(
      'ticks',
      0,
      messagesAt(10, [encodeKafkaValue(a!), 'junk', encodeKafkaValue(b!), encodeKafkaValue(c!)]),
    );
    let sawPartial = false;
    payload.onCommit = (pl) => {
      if (pl.committed() === '11') {
        sawPartial = true;
        // Redis "recovers" for dead letters.
        void redis.del(dlq);
      }
    };
    const p = processor(config, redis);
    await p.process(payload);

    expect(sawPartial).toBe(true); // 10 was durable, 11 (the bad one) was not: commit stopped at 11
    expect(payload.commits.map((c) => c.topics[0]!.partitions[0]!.offset)).toEqual(['11', '14']);
    expect(p.stats.retries).toBeGreaterThanOrEqual(1);
    expect(p.stats.deadLettered).toBe(1);
    expect(await redis.xlen(dlq)).toBe(1);
    // The ticks were published once: the retry only redid what had failed.
    expect((await streamTicks(redis, config)).map((s) => tickKey(s.tick)).sort()).toEqual(
      [a!, b!, c!].map(tickKey).sort(),
    );
  });

  it('when a tick frame fails, commits nothing past it and redoes the ticks (duplicates allowed, none missing)', async () => {
    const { config, redis } = setup();
    const ticks = market(20);
    const victim = streamForSymbol(config.streams, ticks[0]!.symbol);
    await redis.set(victim, 'in the way');
    const payload = new StandInBatchPayload('ticks', 0, messagesAt(0, ticks.map(encodeKafkaValue)));
    const p = processor(config, redis);
    const run = p.process(payload);
    // Wait until at least one attempt failed, then repair the stream key.
    await waitUntil(() => p.stats.retries >= 1, 'a failed attempt');
    expect(payload.commits).toHaveLength(0);
    await redis.del(victim);
    await run;
    expect(payload.committed()).toBe('20');
    const keys = new Set((await streamTicks(redis, config)).map((s) => tickKey(s.tick)));
    expect(keys).toEqual(new Set(ticks.map(tickKey)));
  });

  it('stops between steps when the consumer stops: the step in hand is flushed and committed, the rest is not resolved', async () => {
    const { config, redis } = setup();
    const ticks = market(300);
    const payload = new StandInBatchPayload('ticks', 1, messagesAt(0, ticks.map(encodeKafkaValue)));
    payload.onCommit = (pl) => {
      pl.running = false; // SIGTERM arrived during the first step
    };
    await processor(config, redis, { flushEvery: 100 }).process(payload);
    expect(payload.committed()).toBe('100');
    expect(payload.resolved).toEqual(['99']);
    expect(await streamTicks(redis, config)).toHaveLength(100);
  });

  it.each([
    ['REBALANCE_IN_PROGRESS', 'heartbeat'],
    ['ILLEGAL_GENERATION', 'commit'],
    ['UNKNOWN_MEMBER_ID', 'commit'],
  ])(
    'a partition revoked mid-batch (%s at the %s): its new owner reads from the last commit, every tick arrives',
    async (type, at) => {
      const { config, redis } = setup();
      const ticks = market(500);
      const payload = new StandInBatchPayload('ticks', 2, messagesAt(0, ticks.map(encodeKafkaValue)));
      const error = new KafkaJSProtocolError({
        type,
        code: 27,
        retriable: false,
        message: `The group is rebalancing (${type}, test)`,
      } as unknown as string);
      payload.onCommit = (p) => {
        if (p.commits.length !== 2) return;
        if (at === 'heartbeat') p.revoke(error);
        else p.commitErrors.push(error); // the third chunk is published, its commit refused
      };
      const first = processor(config, redis, { flushEvery: 100 });
      await expect(first.process(payload)).rejects.toBe(error);
      expect(payload.committed()).toBe('200');

      const next = payload.rest();
      expect(next.batch.messages[0]!.offset).toBe('200');
      const owner = processor(config, redis, { flushEvery: 100 });
      await owner.process(next);
      expect(next.committed()).toBe('500');

      const stored = (await streamTicks(redis, config)).map((s) => tickKey(s.tick));
      expect(new Set(stored)).toEqual(new Set(ticks.map(tickKey)));
      // Only a chunk published but not committed when the partition moved is in the streams twice.
      expect(stored.length - ticks.length).toBe(at === 'heartbeat' ? 0 : 100);
    },
  );

  it('processes nothing of a stale batch (the partition was seeked or revoked)', async () => {
    const { config, redis } = setup();
    const payload = new StandInBatchPayload('ticks', 1, messagesAt(0, market(5).map(encodeKafkaValue)));
    payload.stale = true;
    await processor(config, redis).process(payload);
    expect(payload.commits).toHaveLength(0);
    expect(await streamTicks(redis, config)).toHaveLength(0);
  });
});

describe('Kafka → Redis consumer lifecycle (real Redis, stand-in kafkajs consumer)', () => {
  function ingest(config: Config, redis: RedisClient) {
    const kafka = new StandInKafka();
    const settings = loadConfig({
      env: { KAFKA_BROKERS: 'k:9092', KAFKA_TOPICS: 'a,b', KAFKA_GROUP_ID: 'g1', KAFKA_CONCURRENCY: '2' },
    }).kafka;
    const ing = new KafkaIngest({
      kafka: kafka as unknown as Kafka,
      settings,
      redis,
      layout: config.streams,
      producer: config.producer,
      retry: { baseMs: 5, maxMs: 20 },
      consumerName: 'c1',
      log: silentLogger(),
    });
    return { ing, consumer: kafka.consumers[0]! };
  }

  it('consumes with manual commits, restarts on failure, and XADDs what it is handed', async () => {
    const { config, redis } = setup();
    const { ing, consumer } = ingest(config, redis);
    await ing.start();
    expect(consumer.config).toMatchObject({ groupId: 'g1' });
    const retry = consumer.config!.retry as { restartOnFailure: (e: Error) => Promise<boolean> };
    expect(await retry.restartOnFailure(new Error('broker went away'))).toBe(true);
    expect(consumer.subscribed).toEqual({ topics: ['a', 'b'], fromBeginning: true });
    expect(consumer.runConfig).toMatchObject({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 2,
    });

    const ticks = market(50);
    const payload = new StandInBatchPayload('a', 0, messagesAt(0, ticks.map(encodeKafkaValue)));
    await consumer.deliver(payload);
    expect(payload.committed()).toBe('50');
    expect(ing.stats.ticks).toBe(50);
    consumer.emit(consumer.events.GROUP_JOIN, { memberAssignment: { a: [0, 1] } });
    expect(ing.assignment).toEqual({ a: [0, 1] });
    expect(ing).toMatchObject({ generation: 1, rebalancing: false });
    // A rebalance starts: the old assignment is not shown while the group re-forms.
    consumer.emit(consumer.events.REBALANCING, { groupId: 'g1', memberId: 'm' });
    expect(ing).toMatchObject({ assignment: {}, rebalancing: true, generation: 1 });
    consumer.emit(consumer.events.GROUP_JOIN, { memberAssignment: { a: [1] } });
    expect(ing).toMatchObject({ assignment: { a: [1] }, rebalancing: false, generation: 2 });

    await ing.close();
    await ing.close();
    expect(consumer.disconnects).toBe(1);
    await expect(ing.done()).resolves.toBeUndefined();
  });

  it('done() rejects when the consumer crashed for good (kafkajs will not restart it)', async () => {
    const { config, redis } = setup();
    const { ing, consumer } = ingest(config, redis);
    await ing.start();
    consumer.emit(consumer.events.CRASH, {
      error: new Error('SASL authentication failed'),
      groupId: 'g1',
      restart: false,
    });
    await expect(ing.done()).rejects.toThrow(/Kafka consumer crashed: .*SASL authentication failed/);
    // A crash kafkajs recovers from by itself does not end the bridge.
    const again = ingest(config, redis);
    await again.ing.start();
    again.consumer.emit(again.consumer.events.CRASH, {
      error: new Error('retries exceeded'),
      groupId: 'g1',
      restart: true,
    });
    await again.ing.close();
    await expect(again.ing.done()).resolves.toBeUndefined();
  });
});
