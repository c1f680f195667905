import { afterEach, describe, expect, it } from 'vitest';
import { DLQ_INLINE_MAX_BYTES, listDeadLetters, requeueDeadLetters } from '../../consumers/deadletters.ts';
import { encodeFrame } from '../../shared/codec.ts';
import { tickKey } from '../../shared/model.ts';
import type { RedisClient } from '../../shared/redis.ts';
import {
  allStreamKeys,
  deadLetterKey,
  retryStreamKey,
  streamForSymbol,
  type StreamLayout,
} from '../../shared/streams.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { waitUntil } from '../helpers/index.ts';
import { RecordingSink } from '../helpers/sinks.ts';
import { pendingTotal, produceTicks } from '../helpers/streams.ts';
import { WorkerHarness } from '../helpers/workers.ts';

const h = new WorkerHarness();
afterEach(() => h.cleanup());

/** A one-trade frame whose symbol is `PZ9` followed by the given raw byte: not valid UTF-8. */
function badSymbolFrame(byte: number): Buffer[] {
  const d = Buffer.concat([
    Buffer.from('[["t","src","PZ9'),
    Buffer.from([byte]),
    Buffer.from('","1732182436123456789",7,"X",10.5,100,"buy"]]'),
  ]);
  return ['v', '1', 'n', '1', 'd'].map((s) => Buffer.from(s)).concat([d]);
}

async function entryBytes(redis: RedisClient, stream: string): Promise<Buffer[][]> {
  const rows = (await redis.callBuffer('XRANGE', stream, '-', '+')) as [Buffer, Buffer[]][];
  return rows.map(([, fields]) => fields);
}

/** Byte-exact comparison (vitest's deep equality walks large buffers byte by byte, slowly). */
function expectExact(actual: Buffer[][], expected: Buffer[][]): void {
  expect(actual.map((fields) => fields.length)).toEqual(expected.map((fields) => fields.length));
  actual.forEach((fields, i) =>
    fields.forEach((f, j) => expect(f.equals(expected[i]![j]!), `entry ${i} field ${j}`).toBe(true)),
  );
}

async function totalLength(redis: RedisClient, layout: StreamLayout): Promise<number> {
  let n = 0;
  for (const s of allStreamKeys(layout)) n += await redis.xlen(s);
  return n;
}

describe('dead letters keep bytes exact and go back to the group that failed them (real Redis)', () => {
  it('dead-letters entries that are not valid UTF-8 with the reason, stores nothing of them, keeps their bytes', async () => {
    const { config, redis, group } = h.setup();
    const stream = streamForSymbol(config.streams, 'PZ9');
    const ff = badSymbolFrame(0xff);
    const fe = badSymbolFrame(0xfe);
    // Same source, ts and seq: a lossy decode would make both `PZ9\uFFFD` and store one row for two ticks.
    await redis.xadd(stream, '*', ...ff);
    await redis.xadd(stream, '*', ...fe);
    const good = await produceTicks(config, redis, 20);
    const sink = new RecordingSink();
    const { worker } = h.startWorker(config, group, sink);
    await worker.start();

    await waitUntil(() => sink.stored.size === good.length, 'good ticks stored');
    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams);
      return l.length === 2 ? l : undefined;
    }, 'two dead letters');
    await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'all acknowledged');
    expect(sink.stored.size).toBe(good.length);
    expect([...sink.stored.values()].some((t) => t.symbol.startsWith('PZ9'))).toBe(false);
    for (const l of letters) {
      expect(l.kind).toBe('entry');
      expect(l.group).toBe(group);
      expect(l.reason).toBe(`field "d" is not valid UTF-8 (${ff[5]!.length} bytes)`);
      expect(l.invalidUtf8).toBe(true);
    }
    expect(letters.map((l) => l.raw)).toEqual([ff, fe]);

    // The dead-letter stream itself holds the original bytes, and a requeue puts them back unchanged.
    const dlq = await entryBytes(redis, deadLetterKey(config.streams));
    expect(dlq.map((fields) => fields.find((f, i) => i > 0 && fields[i - 1]!.toString() === 'f5'))).toEqual([
      ff[5],
      fe[5],
    ]);
    await worker.close();
    const result = await requeueDeadLetters(redis, config.streams, { all: true });
    expect(result.requeued).toBe(2);
    expect(await entryBytes(redis, retryStreamKey(config.streams, group))).toEqual([ff, fe]);
  });

  it('requeue goes back to the failing group only, on its retry stream, and --group filters', async () => {
    const { config, redis } = h.setup();
    const failing = 'failing';
    const healthy = 'healthy';
    const ticks = await produceTicks(config, redis, 300);
    const victim = ticks[42]!;
    // An undecodable entry: both groups dead-letter it.
    await redis.xadd(streamForSymbol(config.streams, 'AAA'), '*', 'garbage', 'yes');
    const lengthBefore = await totalLength(redis, config.streams);

    const a = new RecordingSink();
    a.poison = (t) => tickKey(t) === tickKey(victim);
    const b = new RecordingSink();
    const wa = h.startWorker(config, failing, a);
    const wb = h.startWorker(config, healthy, b);
    await wa.worker.start();
    await wb.worker.start();
    await waitUntil(() => a.stored.size === 299 && b.stored.size === 300, 'both groups done');
    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams);
      return l.length === 3 ? l : undefined;
    }, 'three dead letters');
    expect(
      letters
        .filter((l) => l.group === failing)
        .map((l) => l.kind)
        .sort(),
    ).toEqual(['entry', 'tick']);
    expect(letters.filter((l) => l.group === healthy).map((l) => l.kind)).toEqual(['entry']);
    expect((await listDeadLetters(redis, config.streams, { group: healthy })).map((l) => l.group)).toEqual([
      healthy,
    ]);

    a.poison = undefined;
    const bWrites = b.writes;
    const aWrites = a.writes;
    // An id of the other group is left in place when --group is given.
    const healthyId = letters.find((l) => l.group === healthy)!.dlqId;
    const byId = await requeueDeadLetters(redis, config.streams, { ids: [healthyId], group: failing });
    expect(byId.requeued).toBe(0);
    expect(byId.skipped.map((l) => l.dlqId)).toEqual([healthyId]);

    const result = await requeueDeadLetters(redis, config.streams, { all: true, group: failing });
    expect(result.requeued).toBe(2);
    await waitUntil(() => a.stored.has(tickKey(victim)), 'the requeued tick stored by the failing group');
    // The garbage entry is dead-lettered again by the failing group only: three letters, one per group + one.
    const after = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams);
      return l.length === 2 && (await pendingTotal(redis, config, failing)) === 0 ? l : undefined;
    }, 'requeued entries processed');
    expect(after.map((l) => [l.group, l.kind]).sort()).toEqual([
      [failing, 'entry'],
      [healthy, 'entry'],
    ]);
    expect(a.writes - aWrites).toBe(1);
    expect(b.writes).toBe(bWrites);
    expect(wb.worker.stats.deadLettered).toBe(1);
    // Nothing went back on the shared shards, and the retry stream is emptied once acknowledged.
    expect(await totalLength(redis, config.streams)).toBe(lengthBefore);
    await waitUntil(
      async () => (await redis.xlen(retryStreamKey(config.streams, failing))) === 0,
      'retry stream emptied',
    );
  });

  it('a large poison entry dead-lettered by two groups is stored once, and requeued exact', async () => {
    const { config, redis } = h.setup();
    const big = Buffer.alloc(DLQ_INLINE_MAX_BYTES * 3, 'x');
    big[7] = 0xff; // not even UTF-8
    const stream = streamForSymbol(config.streams, 'AAA');
    await redis.xadd(stream, '*', 'payload', big);
    const good = new SyntheticMarket({ symbols: ['AAA'], seed: 5, source: 'src' }).next(1);
    await redis.xadd(stream, '*', ...encodeFrame(good));
    const sinks = [new RecordingSink(), new RecordingSink()];
    const started = [h.startWorker(config, 'one', sinks[0]!), h.startWorker(config, 'two', sinks[1]!)];
    for (const s of started) await s.worker.start();
    const letters = await waitUntil(async () => {
      const l = await listDeadLetters(redis, config.streams);
      return l.length === 2 ? l : undefined;
    }, 'two dead letters');
    await waitUntil(() => sinks.every((s) => s.stored.size === 1), 'the good tick stored by both');
    for (const s of started) await s.worker.close();

    expect(new Set(letters.map((l) => l.blob)).size).toBe(1);
    const blob = letters[0]!.blob!;
    expect(letters.map((l) => l.bytes)).toEqual([big.length + 7, big.length + 7]);
    expect(await redis.hget(blob, 'refs')).toBe('2');
    // The dead-letter stream itself stays small: the payload is in the blob, once.
    expect(Number(await redis.call('MEMORY', 'USAGE', deadLetterKey(config.streams)))).toBeLessThan(
      DLQ_INLINE_MAX_BYTES,
    );

    await requeueDeadLetters(redis, config.streams, { all: true, group: 'two' });
    expect(await redis.hget(blob, 'refs')).toBe('1');
    expectExact(await entryBytes(redis, retryStreamKey(config.streams, 'two')), [
      [Buffer.from('payload'), big],
    ]);
    await requeueDeadLetters(redis, config.streams, { all: true });
    expect(await redis.exists(blob)).toBe(0);
    expectExact(await entryBytes(redis, retryStreamKey(config.streams, 'one')), [
      [Buffer.from('payload'), big],
    ]);
  });
});
