import { afterEach, describe, expect, it } from 'vitest';
import { listDeadLetters, type DeadLetter } from '../../consumers/deadletters.ts';
import { tickKey } from '../../shared/model.ts';
import { deadLetterKey, retryStreamKey, streamForSymbol } from '../../shared/streams.ts';
import { runCli } from '../helpers/cli.ts';
import { REDIS_URL, waitUntil } from '../helpers/index.ts';
import { RecordingSink } from '../helpers/sinks.ts';
import { produceTicks } from '../helpers/streams.ts';
import { WorkerHarness } from '../helpers/workers.ts';

const h = new WorkerHarness();
afterEach(() => h.cleanup());

describe('tickstream dlq (processes, real Redis)', () => {
  it('list --group/--count/--json, requeue <id>, requeue --all --group, and an undecodable entry', async () => {
    const { config, redis } = h.setup();
    const prefix = config.streams.prefix;
    const env = {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: prefix,
      TICKSTREAM_SHARDS: String(config.streams.shards),
    };
    const ticks = await produceTicks(config, redis, 100);
    const victim = ticks[17]!;
    await redis.xadd(streamForSymbol(config.streams, 'AAA'), '*', 'garbage', Buffer.from([0x67, 0xff]));
    const one = new RecordingSink();
    one.poison = (t) => tickKey(t) === tickKey(victim);
    const workers = [h.startWorker(config, 'one', one), h.startWorker(config, 'two', new RecordingSink())];
    for (const w of workers) await w.worker.start();
    await waitUntil(
      async () => (await redis.xlen(deadLetterKey(config.streams))) === 3,
      'three dead letters',
    );
    for (const w of workers) await w.worker.close();

    const listed = await runCli(['dlq', 'list', '--group', 'one', '--json'], env);
    expect(listed.code, listed.stderr).toBe(0);
    const letters = JSON.parse(listed.stdout) as (DeadLetter & { fieldsBase64?: string[] })[];
    expect(letters.map((l) => [l.group, l.kind]).sort()).toEqual([
      ['one', 'entry'],
      ['one', 'tick'],
    ]);
    const entry = letters.find((l) => l.kind === 'entry')!;
    expect(entry.reason).toBe('field "garbage" is not valid UTF-8 (2 bytes)');
    expect(entry.fieldsBase64).toEqual([Buffer.from('garbage').toString('base64'), 'Z/8=']);

    const counted = await runCli(['dlq', 'list', '--count', '1', '--json'], env);
    expect((JSON.parse(counted.stdout) as unknown[]).length).toBe(1);

    const tickLetter = letters.find((l) => l.kind === 'tick')!;
    const byId = await runCli(['dlq', 'requeue', tickLetter.dlqId], env);
    expect(byId.code, byId.stderr).toBe(0);
    expect(byId.stdout).toBe('requeued 1\n');
    const retryOne = (await redis.xrange(retryStreamKey(config.streams, 'one'), '-', '+')).map(([, f]) => f);
    expect(retryOne).toHaveLength(1);
    expect(JSON.parse(retryOne[0]![5]!)).toEqual([JSON.parse(tickLetter.tick!)]);

    const all = await runCli(['dlq', 'requeue', '--all', '--group', 'two'], env);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toBe('requeued 1\n');
    const retryTwo = (await redis.callBuffer('XRANGE', retryStreamKey(config.streams, 'two'), '-', '+')) as [
      Buffer,
      Buffer[],
    ][];
    expect(retryTwo.map(([, f]) => f.map((b) => b.toString('hex')))).toEqual([
      [Buffer.from('garbage').toString('hex'), '67ff'],
    ]);
    // Left: group one's undecodable entry.
    const rest = await listDeadLetters(redis, config.streams);
    expect(rest.map((l) => [l.group, l.kind])).toEqual([['one', 'entry']]);

    const missing = await runCli(['dlq', 'requeue', '1-1'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/not found: 1-1/);
  }, 240_000); // five CLI processes: each takes seconds to start on a loaded machine
});
