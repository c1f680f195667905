import { afterEach, describe, expect, it } from 'vitest';
import { GroupWorker } from '../../consumers/worker.ts';
import { streamsStatus } from '../../consumers/status.ts';
import { listDeadLetters, requeueDeadLetters } from '../../consumers/deadletters.ts';
import { encodeFrame } from '../../shared/codec.ts';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey, type Tick } from '../../shared/model.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys, deadLetterKey, shardOf, streamForSymbol } from '../../shared/streams.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';
import { RecordingSink } from '../helpers/sinks.ts';
import { pendingTotal, produceTicks } from '../helpers/streams.ts';

/** Records when each batch reached the sink. */
class TimedSink extends RecordingSink {
  readonly writeTimes: number[] = [];
  override async write(ticks: readonly Tick[]): Promise<void> {
    this.writeTimes.push(Date.now());
    await super.write(ticks);
  }
}

const open: RedisClient[] = [];
const workers: GroupWorker[] = [];
const prefixes: string[] = [];

function redisFor(config: Config, blocking = false): RedisClient {
  const r = testRedis(config, blocking);
  open.push(r);
  return r;
}

function setup(overrides: Parameters<typeof testConfig>[0] = {}) {
  const config = testConfig(overrides);
  prefixes.push(config.streams.prefix);
  return { config, redis: redisFor(config), group: uniqueName('g') };
}

function startWorker(config: Config, group: string, sink: RecordingSink, consumer = uniqueName('c')) {
  const blocking = redisFor(config, true);
  const commands = redisFor(config);
  const worker = new GroupWorker({
    redis: commands,
    blocking,
    layout: config.streams,
    group,
    consumer,
    sink,
    settings: config.consumer,
    log: silentLogger(),
  });
  workers.push(worker);
  /** What a crash (kill -9) does to the consumer: its connections vanish without a word. */
  const kill = () => {
    blocking.disconnect();
    commands.disconnect();
    workers.splice(workers.indexOf(worker), 1);
  };
  return { worker, blocking, consumer, kill };
}

afterEach(async () => {
  for (const w of workers.splice(0)) await w.close().catch(() => undefined);
  const cleaner = open[0];
  if (cleaner !== undefined) for (const p of prefixes.splice(0)) await cleanupPrefix(cleaner, p);
  for (const r of open.splice(0)) await closeRedis(r);
});

describe('group worker (real Redis)', () => {
  it('delivers every produced tick to the sink and leaves nothing pending', async () => {
    const { config, redis, group } = setup();
    const sink = new RecordingSink();
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    const ticks = await produceTicks(config, redis, 2_000);
    await waitUntil(() => sink.stored.size === ticks.length, 'all ticks stored');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending');
    expect(new Set(sink.stored.keys())).toEqual(new Set(ticks.map(tickKey)));
  });

  it('lingers after a short read (TICKSTREAM_CONSUMER_LINGER_MS), never after a full one', async () => {
    // Full reads: six frames wait on one shard, COUNT 2: three full reads follow one another at once, though
    // the linger is 10 s (a wait after any of them would take the test past its 5 s).
    const full = setup({ streams: { shards: 1 }, consumer: { batchSize: 2, lingerMs: 10_000 } });
    const all = await produceTicks(full.config, full.redis, 6 * 10, { frameSize: 10 });
    const sinkA = new RecordingSink();
    const a = startWorker(full.config, full.group, sinkA);
    await a.worker.start();
    await waitUntil(() => sinkA.stored.size === all.length, 'six frames in full reads', { timeoutMs: 5000 });
    expect(a.worker.stats.batches).toBeGreaterThanOrEqual(3);

    // A short read: one frame waits in each of two shards when the worker starts (two entries in all, as many
    // as COUNT, but COUNT bounds each stream: neither gave 2); the next, published once the first are stored,
    // is not read before the linger (400 ms) from the first read has passed.
    const short = setup({ streams: { shards: 2 }, consumer: { batchSize: 2, lingerMs: 400 } });
    const apart = ['AAA', 'BBB', 'CCC', 'DDD', 'EEE'];
    const two = [apart.find((x) => shardOf(x, 2) === 0)!, apart.find((x) => shardOf(x, 2) === 1)!];
    const first = await produceTicks(short.config, short.redis, 6, { frameSize: 10, seed: 2, symbols: two });
    expect(new Set(first.map((t) => t.symbol)).size).toBe(2);
    const sinkB = new TimedSink();
    const b = startWorker(short.config, short.group, sinkB);
    const started = Date.now();
    await b.worker.start();
    await waitUntil(() => sinkB.stored.size === first.length, 'the first frame');
    const second = await produceTicks(short.config, short.redis, 5, { frameSize: 10, seed: 3, symbols: two });
    await waitUntil(() => sinkB.stored.size === first.length + second.length, 'the second frame');
    expect(sinkB.writeTimes).toHaveLength(2);
    expect(sinkB.writeTimes[1]! - started).toBeGreaterThanOrEqual(400);
  });

  it('a consumer that dies mid-batch (before ack) loses nothing: another claims its entries', async () => {
    const { config, redis, group } = setup();
    const dying = new RecordingSink();
    dying.hang = true; // flush never returns: the process is stuck, then its connections die
    const a = startWorker(config, group, dying);
    await a.worker.start();
    const ticks = await produceTicks(config, redis, 1_000);
    await waitUntil(
      async () => (await pendingTotal(redis, config, group)) > 0,
      'dying consumer holds entries',
    );
    // Kill it: its sockets go away without an ack; the entries stay in its pending list.
    a.kill();
    const held = await pendingTotal(redis, config, group);
    expect(held).toBeGreaterThan(0);

    const live = new RecordingSink();
    const b = startWorker(config, group, live);
    await b.worker.start();
    await waitUntil(() => live.stored.size === ticks.length, 'live consumer stored every tick');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending');
    expect(b.worker.stats.claimed).toBeGreaterThan(0);
    expect(new Set(live.stored.keys())).toEqual(new Set(ticks.map(tickKey)));
  });

  it('dead-letters an undecodable entry and a bad tick with their reasons, and delivers the rest', async () => {
    const { config, redis, group } = setup();
    const sink = new RecordingSink();
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    const stream = streamForSymbol(config.streams, 'AAA');
    await redis.xadd(stream, '*', 'garbage', 'yes');
    const good = new SyntheticMarket({ symbols: ['AAA'], seed: 3, source: 'src' }).next(3);
    const fields = encodeFrame(good);
    const rows = JSON.parse(fields[5]!) as unknown[][];
    rows[1]![6] = -5; // a negative trade/bid price
    fields[5] = JSON.stringify(rows);
    await redis.xadd(stream, '*', ...fields);
    await produceTicks(config, redis, 200);

    await waitUntil(() => sink.stored.size === 202, 'good ticks stored');
    await waitUntil(async () => (await redis.xlen(deadLetterKey(config.streams))) === 2, 'two dead letters');
    const letters = await listDeadLetters(redis, config.streams);
    const entryLetter = letters.find((l) => l.kind === 'entry')!;
    const tickLetter = letters.find((l) => l.kind === 'tick')!;
    expect(entryLetter.reason).toMatch(/not a tick frame: missing field\(s\) v, n, d/);
    expect(entryLetter.fields).toEqual(['garbage', 'yes']);
    expect(entryLetter.group).toBe(group);
    expect(tickLetter.reason).toMatch(/tick 1: (price|bidPrice)/);
    expect(tickLetter.index).toBe(1);
    expect(sink.stored.has(tickKey(good[0]!))).toBe(true);
    expect(sink.stored.has(tickKey(good[2]!))).toBe(true);
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'all acknowledged');
  });

  it('isolates a tick the store rejects (non-retriable) and writes the rest of its batch', async () => {
    const { config, redis, group } = setup();
    const sink = new RecordingSink();
    const ticks = await produceTicks(config, redis, 500);
    const victim = ticks[137]!;
    sink.poison = (t) => tickKey(t) === tickKey(victim);
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    await waitUntil(() => sink.stored.size === 499, 'all but the rejected tick stored');
    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams);
      return l.length === 1 ? l : undefined;
    }, 'one dead letter');
    expect(letters[0]!.kind).toBe('tick');
    expect(letters[0]!.reason).toContain(`seq ${victim.seq}`);
    expect(sink.stored.has(tickKey(victim))).toBe(false);
    // Counted as dead-lettered, not as written.
    expect(worker.stats.ticks).toBe(499);
    expect(worker.stats.deadLettered).toBe(1);

    // Once the store accepts it, requeueing delivers it and the others are not stored twice.
    sink.poison = undefined;
    const writesBefore = sink.writes;
    await requeueDeadLetters(redis, config.streams, { all: true });
    await waitUntil(() => sink.stored.size === 500, 'requeued tick stored');
    expect(sink.writes - writesBefore).toBe(1);
    expect(await redis.xlen(deadLetterKey(config.streams))).toBe(0);
  });

  it('requeue leaves Kafka dead letters (no origin stream) in place and says so', async () => {
    const { config, redis } = setup();
    const dlq = deadLetterKey(config.streams);
    await redis.xadd(
      dlq,
      '*',
      'reason',
      'bad json',
      'stream',
      'kafka:ticks/0',
      'id',
      '17',
      'kind',
      'kafka',
      'value',
      '{',
    );
    const result = await requeueDeadLetters(redis, config.streams, { all: true });
    expect(result.requeued).toBe(0);
    expect(result.skipped.map((l) => [l.kind, l.stream, l.id])).toEqual([['kafka', 'kafka:ticks/0', '17']]);
    expect(await redis.xlen(dlq)).toBe(1);
  });

  it('a slow flush keeps its entries: live consumers do not claim them meanwhile (heartbeat)', async () => {
    // The heartbeat refreshes every third of the min idle time: with 2 s, an event-loop stall of well over
    // 330 ms (a loaded CI machine) still leaves a wide margin before others may claim.
    const { config, redis, group } = setup({ consumer: { claimMinIdleMs: 2_000 } });
    const slow = new RecordingSink();
    slow.delayMs = 3_000;
    const a = startWorker(config, group, slow);
    await a.worker.start();
    const ticks = await produceTicks(config, redis, 200);
    await waitUntil(
      async () => (await pendingTotal(redis, config, group)) > 0,
      'slow consumer holds entries',
    );
    const other = new RecordingSink();
    const b = startWorker(config, group, other);
    await b.worker.start();
    await waitUntil(() => slow.stored.size + other.stored.size >= ticks.length, 'everything stored');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending');
    expect(b.worker.stats.claimed).toBe(0);
    expect(slow.writes + other.writes).toBe(ticks.length);
  });

  it('names the frame position of a rejected tick even after an earlier tuple failed to decode', async () => {
    const { config, redis, group } = setup();
    const [good, victim] = new SyntheticMarket({ symbols: ['AAA'], seed: 11, source: 'src' }).next(2);
    const fields = encodeFrame([good!, good!, victim!]);
    const rows = JSON.parse(fields[5]!) as unknown[][];
    rows[0] = ['x'];
    fields[5] = JSON.stringify(rows);
    await redis.xadd(streamForSymbol(config.streams, 'AAA'), '*', ...fields);
    const sink = new RecordingSink();
    sink.poison = (t) => tickKey(t) === tickKey(victim!);
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams);
      return l.length === 2 ? l : undefined;
    }, 'two dead letters');
    expect(letters.map((l) => l.index).sort()).toEqual([0, 2]);
    expect(sink.stored.has(tickKey(good!))).toBe(true);
  });

  it('keeps entries pending while the sink fails retriably, then delivers all of them', async () => {
    const { config, redis, group } = setup();
    const sink = new RecordingSink();
    sink.failRetriable = Number.MAX_SAFE_INTEGER; // until the test has seen the entries held
    const ticks = await produceTicks(config, redis, 300);
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    await waitUntil(() => worker.stats.retries >= 3, 'retries');
    expect(await pendingTotal(redis, config, group)).toBeGreaterThan(0);
    expect(await redis.xlen(deadLetterKey(config.streams))).toBe(0);
    sink.failRetriable = 0;
    await waitUntil(() => sink.stored.size === ticks.length, 'every tick stored after recovery');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending');
    expect(worker.stats.deadLettered).toBe(0);
  });

  it('a store that keeps part of a batch and then fails: the batch is written again, each tick stored once', async () => {
    const { config, redis, group } = setup();
    const sink = new RecordingSink();
    sink.partialThenFail = 37;
    const ticks = await produceTicks(config, redis, 300);
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    await waitUntil(() => sink.stored.size === ticks.length, 'every tick stored');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending');
    expect(new Set(sink.stored.keys())).toEqual(new Set(ticks.map(tickKey)));
    expect(sink.writes).toBe(ticks.length + 37); // the 37 kept before the failure were sent again
    expect(worker.stats.retries).toBe(1);
    expect(worker.stats.acked).toBe(worker.stats.entries);
    expect(worker.stats.deadLettered).toBe(0);
  });

  it('dead-letters an entry delivered more than maxDeliveries times', async () => {
    const { config, redis, group } = setup({
      consumer: { maxDeliveries: 2, claimMinIdleMs: 50, claimIntervalMs: 50 },
    });
    const stream = streamForSymbol(config.streams, 'AAA');
    await redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM');
    const tick = new SyntheticMarket({ symbols: ['AAA'], seed: 9, source: 'src' }).next(1);
    await redis.xadd(stream, '*', ...encodeFrame(tick));
    // Two consumers read it and die without acking: delivery count 2.
    for (let i = 0; i < 2; i++) {
      if (i === 0)
        await redis.call('XREADGROUP', 'GROUP', group, 'crash-1', 'COUNT', '10', 'STREAMS', stream, '>');
      else
        await redis.call(
          'XCLAIM',
          stream,
          group,
          'crash-2',
          '0',
          (await redis.xrange(stream, '-', '+'))[0]![0],
        );
    }
    const sink = new RecordingSink();
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams);
      return l.length === 1 ? l : undefined;
    }, 'poison entry dead-lettered');
    expect(letters[0]!.reason).toBe('delivered 3 times (max 2)');
    expect(letters[0]!.deliveries).toBe(3);
    expect(sink.stored.size).toBe(0);
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'acknowledged');
  });

  it('graceful close finishes the batch in flight and leaves nothing pending', async () => {
    const { config, redis, group } = setup();
    const sink = new RecordingSink();
    const { worker, consumer } = startWorker(config, group, sink);
    await worker.start();
    const ticks = await produceTicks(config, redis, 3_000);
    await waitUntil(() => sink.stored.size > 0, 'consuming started');
    await worker.close();
    expect(sink.closed).toBe(true);
    expect(await pendingTotal(redis, config, group)).toBe(0);
    // Holding nothing, it left the group: status counts live consumers only.
    for (const stream of allStreamKeys(config.streams)) {
      const names = ((await redis.call('XINFO', 'CONSUMERS', stream, group)) as unknown[][]).map((c) => c[1]);
      expect(names).not.toContain(consumer);
    }
    // Whatever was not read yet is still in the stream for the next consumer: nothing was lost.
    const rest = new RecordingSink();
    const next = startWorker(config, group, rest);
    await next.worker.start();
    await waitUntil(() => sink.stored.size + rest.stored.size >= ticks.length, 'the remainder delivered');
    expect(new Set([...sink.stored.keys(), ...rest.stored.keys()])).toEqual(new Set(ticks.map(tickKey)));
  });

  it('recovers from a missing group (NOGROUP after a Redis restart) without losing new ticks', async () => {
    const { config, redis, group } = setup();
    const sink = new RecordingSink();
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    const first = await produceTicks(config, redis, 100, { seed: 1 });
    await waitUntil(() => sink.stored.size === first.length, 'first batch');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'first batch acknowledged');
    for (const s of allStreamKeys(config.streams)) await redis.del(s); // what a restart without persistence does
    const second = await produceTicks(config, redis, 100, { seed: 2 });
    await waitUntil(() => sink.stored.size === first.length + second.length, 'ticks after the restart');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending after');
    // The group was recreated on every shard, from id 0 (so ticks added before it came back are not skipped).
    for (const s of allStreamKeys(config.streams)) {
      const groups = (await redis.call('XINFO', 'GROUPS', s)) as unknown[][];
      expect(groups.map((g) => g[1])).toEqual([group]);
    }
    expect(worker.stats.acked).toBe(worker.stats.entries);
  });
});

describe('group worker housekeeping and shutdown (real Redis)', () => {
  it('removes consumers idle past the threshold with nothing pending; keeps those holding entries', async () => {
    const { config, redis, group } = setup({ consumer: { removeIdleMs: 300, claimMinIdleMs: 30_000 } });
    const [stream] = allStreamKeys(config.streams);
    await redis.call('XGROUP', 'CREATE', stream!, group, '0', 'MKSTREAM');
    await redis.xadd(
      stream!,
      '*',
      ...encodeFrame(new SyntheticMarket({ symbols: ['AAA'], seed: 4, source: 'src' }).next(1)),
    );
    // A dead consumer holding an entry, and one holding nothing (both gone without a word).
    await redis.call('XREADGROUP', 'GROUP', group, 'dead-holding', 'COUNT', '1', 'STREAMS', stream!, '>');
    await redis.call('XGROUP', 'CREATECONSUMER', stream!, group, 'dead-empty');
    const names = async () =>
      ((await redis.call('XINFO', 'CONSUMERS', stream!, group)) as unknown[][]).map((c) => String(c[1]));
    expect((await names()).sort()).toEqual(['dead-empty', 'dead-holding']);

    const status = await streamsStatus(redis, config.streams, 100);
    const before = status.shards[0]!.groups.find((g) => g.group === group)!;
    expect(before.consumers.map((c) => c.name).sort(), JSON.stringify(status)).toEqual([
      'dead-empty',
      'dead-holding',
    ]);

    const { worker, consumer } = startWorker(config, group, new RecordingSink());
    await worker.start();
    await waitUntil(async () => !(await names()).includes('dead-empty'), 'the idle empty consumer removed');
    const now = await names();
    expect(now).toContain('dead-holding');
    expect(now).toContain(consumer);
    const after = (await streamsStatus(redis, config.streams, 250)).shards[0]!.groups.find(
      (g) => g.group === group,
    )!;
    expect(after.consumers.find((c) => c.name === 'dead-holding')).toMatchObject({ idle: true, pending: 1 });
    expect(after.consumers.find((c) => c.name === consumer)).toMatchObject({ idle: false });
  });

  it('close() during a slow flush finishes that batch, acknowledges it once and leaves the group', async () => {
    const { config, redis, group } = setup();
    const sink = new RecordingSink();
    sink.delayMs = 600;
    const { worker, consumer } = startWorker(config, group, sink);
    await worker.start();
    const ticks = await produceTicks(config, redis, 500);
    await waitUntil(() => sink.flushing, 'a flush in progress');
    const storedAtClose = sink.stored.size;
    await worker.close();
    expect(sink.stored.size).toBeGreaterThan(storedAtClose);
    expect(worker.pendingOnStop).toBe(0);
    expect(await pendingTotal(redis, config, group)).toBe(0);
    expect(worker.stats.acked).toBe(worker.stats.entries);
    expect(sink.writes).toBe(sink.stored.size);
    for (const stream of allStreamKeys(config.streams)) {
      const names = ((await redis.call('XINFO', 'CONSUMERS', stream, group)) as unknown[][]).map((c) => c[1]);
      expect(names).not.toContain(consumer);
    }
    expect(sink.stored.size).toBeLessThanOrEqual(ticks.length);
  });

  it('close() while the store keeps failing leaves the batch pending and says so (pendingOnStop)', async () => {
    const { config, redis, group } = setup({ consumer: { shutdownTimeoutMs: 400 } });
    const sink = new RecordingSink();
    sink.failRetriable = Number.MAX_SAFE_INTEGER;
    const { worker, consumer } = startWorker(config, group, sink);
    await worker.start();
    await produceTicks(config, redis, 200);
    await waitUntil(() => worker.stats.retries >= 2, 'the store failing');
    await worker.close();
    expect(sink.closed).toBe(false); // its close() flush failed too: reported, not thrown
    const held = await pendingTotal(redis, config, group);
    expect(held).toBeGreaterThan(0);
    expect(worker.pendingOnStop).toBe(held);
    expect(sink.stored.size).toBe(0);
    const names = (
      (await redis.call('XINFO', 'CONSUMERS', allStreamKeys(config.streams)[0]!, group)) as unknown[][]
    )
      .concat(
        (await redis.call('XINFO', 'CONSUMERS', allStreamKeys(config.streams)[1]!, group)) as unknown[][],
      )
      .map((c) => c[1]);
    expect(names).toContain(consumer);
  });
});

describe('group worker: claims, own pending entries, outages (real Redis)', () => {
  it('while the store is down, a second consumer neither claims the entries nor raises their delivery count', async () => {
    const { config, redis, group } = setup({
      consumer: { claimMinIdleMs: 300, claimIntervalMs: 50, shutdownTimeoutMs: 400 },
    });
    const down = new RecordingSink();
    down.failRetriable = Number.MAX_SAFE_INTEGER;
    const a = startWorker(config, group, down);
    await a.worker.start();
    await produceTicks(config, redis, 200);
    await waitUntil(async () => (await pendingTotal(redis, config, group)) > 0, 'entries held');
    const other = new RecordingSink();
    const b = startWorker(config, group, other);
    await b.worker.start();
    // Let many claim rounds of the second consumer pass: five times the min idle time.
    const since = Date.now();
    await waitUntil(() => Date.now() - since > 1_500 && a.worker.stats.retries > 5, 'claim rounds');
    expect(b.worker.stats.claimed).toBe(0);
    expect(other.stored.size).toBe(0);
    for (const s of allStreamKeys(config.streams)) {
      const rows = (await redis.call('XPENDING', s, group, '-', '+', '1000')) as [
        string,
        string,
        number,
        number,
      ][];
      for (const [id, owner, , deliveries] of rows) {
        expect(owner, id).toBe(a.consumer);
        expect(deliveries, id).toBe(1);
      }
    }
  });

  it('a sink stuck for good releases its batch after ten min-idle periods (the heartbeat gives up)', async () => {
    const { config, redis, group } = setup({ consumer: { claimMinIdleMs: 100, claimIntervalMs: 50 } });
    const stuck = new RecordingSink();
    stuck.hang = true;
    const a = startWorker(config, group, stuck);
    await a.worker.start();
    const ticks = await produceTicks(config, redis, 100);
    await waitUntil(
      async () => (await pendingTotal(redis, config, group)) > 0,
      'stuck consumer holds entries',
    );
    const heldSince = Date.now();
    const live = new RecordingSink();
    const b = startWorker(config, group, live);
    await b.worker.start();
    await waitUntil(() => live.stored.size === ticks.length, 'the live consumer took the batch over');
    // Not before the heartbeat stopped: ten min-idle periods after the stuck batch was taken.
    expect(Date.now() - heldSince).toBeGreaterThanOrEqual(10 * 100 - 200);
    expect(b.worker.stats.claimed).toBeGreaterThan(0);
    a.kill();
  });

  it('a restart under a fixed consumer name re-reads its own pending entries (a late or lost read reply)', async () => {
    const { config, redis, group } = setup({ consumer: { claimMinIdleMs: 30_000 } });
    const ticks = await produceTicks(config, redis, 300);
    // A read whose reply never reached the process: the entries are pending on its name.
    for (const s of allStreamKeys(config.streams)) {
      await redis.call('XGROUP', 'CREATE', s, group, '0', 'MKSTREAM');
      await redis.call('XREADGROUP', 'GROUP', group, 'fixed-name', 'COUNT', '1000', 'STREAMS', s, '>');
    }
    expect(await pendingTotal(redis, config, group)).toBeGreaterThan(0);
    const sink = new RecordingSink();
    const { worker } = startWorker(config, group, sink, 'fixed-name');
    await worker.start();
    await waitUntil(() => sink.stored.size === ticks.length, 'its own pending entries delivered');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending');
    expect(worker.stats.claimed).toBe(0); // re-read, not claimed (the min idle time is far away)
  });

  it("processes claims from XAUTOCLAIM's reply, skipping entries deleted meanwhile", async () => {
    const { config, redis, group } = setup({ consumer: { claimMinIdleMs: 50, claimIntervalMs: 50 } });
    const ticks = await produceTicks(config, redis, 300, { frameSize: 10 });
    const deleted = new Set<string>();
    for (const s of allStreamKeys(config.streams)) {
      await redis.call('XGROUP', 'CREATE', s, group, '0', 'MKSTREAM');
      const reply = (await redis.call(
        'XREADGROUP',
        'GROUP',
        group,
        'dead',
        'COUNT',
        '1000',
        'STREAMS',
        s,
        '>',
      )) as [string, [string, string[]][]][];
      // Two entries of the dead consumer's batch are deleted before anyone acknowledges them (XDEL, a trim).
      for (const [id, fields] of reply[0]![1].slice(0, 2)) {
        await redis.xdel(s, id);
        const rows = JSON.parse(fields[5]!) as unknown[][];
        for (const r of rows) deleted.add(`${String(r[2])}|${String(r[3])}|${String(r[4])}`);
      }
    }
    const sink = new RecordingSink();
    const { worker } = startWorker(config, group, sink);
    await worker.start();
    const expected = ticks.filter((t) => !deleted.has(`${t.symbol}|${t.ts}|${t.seq}`));
    await waitUntil(() => sink.stored.size === expected.length, 'every remaining tick stored');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending');
    expect(worker.stats.claimed).toBe(worker.stats.entries);
    expect(new Set(sink.stored.keys())).toEqual(new Set(expected.map(tickKey)));
    expect(sink.writes).toBe(expected.length);
  });
});
