import { afterEach, describe, expect, it } from 'vitest';
import { QuotesSink, readQuotes } from '../../consumers/sinks/quotes.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import { silentLogger } from '../../shared/logger.ts';
import { TickSchema, type Tick } from '../../shared/model.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { Publisher } from '../../producers/publisher.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';

// Cleanups run whether the test passed or not: workers closed and keys deleted, then connections closed.
const open: RedisClient[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  // Every step runs even when one fails (a failed worker close must not leave connections open).
  const errors: unknown[] = [];
  for (const cleanup of cleanups.splice(0).reverse())
    await cleanup().catch((err: unknown) => errors.push(err));
  for (const r of open.splice(0)) await closeRedis(r);
  if (errors.length > 0) throw new AggregateError(errors, 'cleaning up after the test failed');
});

function quote(symbol: string, ts: bigint, seq: number, bid: number, ask: number): Tick {
  return TickSchema.parse({
    type: 'quote',
    source: 'src',
    symbol,
    ts,
    seq,
    bidPrice: bid,
    bidSize: 100,
    askPrice: ask,
    askSize: 200,
  });
}
function trade(symbol: string, ts: bigint, seq: number, price: number): Tick {
  return TickSchema.parse({ type: 'trade', source: 'src', symbol, ts, seq, price, size: 10 });
}

function setup() {
  const config = testConfig();
  const redis = testRedis(config);
  open.push(redis);
  cleanups.push(() => cleanupPrefix(redis, config.streams.prefix));
  const sink = new QuotesSink({ redis, settings: config.quotes, log: silentLogger() });
  return { config, redis, sink };
}

async function project(sink: QuotesSink, ticks: Tick[]) {
  await sink.write(ticks);
  await sink.flush();
}

describe('latest-quote projector (real Redis)', () => {
  it('keeps the newest quote and trade per symbol', async () => {
    const { config, redis, sink } = setup();
    await sink.start();
    await project(sink, [
      quote('AAA', 100n, 1, 10, 11),
      trade('AAA', 101n, 2, 10.5),
      quote('AAA', 102n, 3, 10.1, 10.9),
    ]);
    const q = (await readQuotes(redis, config.quotes, ['AAA'])).get('AAA')!;
    expect(q).toMatchObject({
      symbol: 'AAA',
      bid: '10.1',
      ask: '10.9',
      last: '10.5',
      last_size: '10',
      quote_ts: '102',
      trade_ts: '101',
      ts: '102',
    });
    expect(Number(q.updated_at)).toBeGreaterThan(1_600_000_000_000);
  });

  it('never regresses on out-of-order, replayed or redelivered ticks', async () => {
    const { config, redis, sink } = setup();
    await sink.start();
    await project(sink, [quote('AAA', 200n, 5, 20, 21), trade('AAA', 200n, 6, 20.5)]);
    // Older ticks arrive later (another batch), in separate flushes and in one flush with a newer tick.
    await project(sink, [quote('AAA', 199n, 4, 1, 2), trade('AAA', 150n, 1, 1)]);
    await project(sink, [quote('AAA', 200n, 5, 20, 21)]); // exact replay
    await project(sink, [quote('AAA', 200n, 3, 3, 4)]); // same ts, lower seq
    let q = (await readQuotes(redis, config.quotes, ['AAA'])).get('AAA')!;
    expect(q).toMatchObject({ bid: '20', ask: '21', last: '20.5', quote_ts: '200', trade_ts: '200' });
    expect(sink.updates).toBe(1);

    // A newer tick in the same ns with a higher seq wins; a far larger ts (more digits) also compares right.
    await project(sink, [quote('AAA', 200n, 7, 30, 31)]);
    await project(sink, [
      quote('AAA', 1_732_182_436_123_456_789n, 8, 40, 41),
      quote('AAA', 999_999_999n, 9, 5, 6),
    ]);
    q = (await readQuotes(redis, config.quotes, ['AAA'])).get('AAA')!;
    expect(q).toMatchObject({ bid: '40', ask: '41', quote_ts: '1732182436123456789' });
  });

  it('two projectors racing on the same symbol end on the newest tick', async () => {
    const { config, redis } = setup();
    const redis2 = testRedis(config);
    open.push(redis2);
    const a = new QuotesSink({ redis, settings: config.quotes, log: silentLogger() });
    const b = new QuotesSink({ redis: redis2, settings: config.quotes, log: silentLogger() });
    await a.start();
    await b.start();
    const ticks = Array.from({ length: 400 }, (_, i) => quote('RACE', BigInt(1000 + i), i, 100 + i, 101 + i));
    const odd = ticks.filter((_, i) => i % 2 === 1).reverse();
    const even = ticks.filter((_, i) => i % 2 === 0);
    await Promise.all([
      (async () => {
        for (const t of odd) await project(a, [t]);
      })(),
      (async () => {
        for (const t of even) await project(b, [t]);
      })(),
    ]);
    const q = (await readQuotes(redis, config.quotes, ['RACE'])).get('RACE')!;
    expect(q.quote_ts).toBe('1399');
    expect(q.bid).toBe('499');
  });

  it('publishes each update on the symbol channel', async () => {
    const { config, sink } = setup();
    await sink.start();
    const sub = testRedis(config);
    open.push(sub);
    const messages: Record<string, string>[] = [];
    sub.on('message', (_channel: string, message: string) =>
      messages.push(JSON.parse(message) as Record<string, string>),
    );
    await sub.subscribe(`${config.quotes.channelPrefix}AAA`);
    await project(sink, [quote('AAA', 5n, 1, 1, 2)]);
    await project(sink, [quote('AAA', 4n, 0, 9, 9)]); // older: no update, no message
    await project(sink, [trade('AAA', 6n, 2, 1.5)]);
    await waitUntil(() => messages.length >= 2, 'two pub/sub messages');
    expect(messages.map((m) => [m.bid, m.last])).toEqual([
      ['1', undefined],
      ['1', '1.5'],
    ]);
  });

  it('projects a produced run through the group worker', async () => {
    const { config, redis, sink } = setup();
    const worker = new GroupWorker({
      redis,
      blocking: (() => {
        const b = testRedis(config, true);
        open.push(b);
        return b;
      })(),
      layout: config.streams,
      group: uniqueName('quotes'),
      consumer: 'c1',
      sink,
      settings: config.consumer,
      log: silentLogger(),
    });
    cleanups.push(() => worker.close());
    await worker.start();
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const ticks: Tick[] = [];
    for (let i = 0; i < 50; i++) ticks.push(quote(`S${i % 5}`, BigInt(10_000 + i), i, 10 + i, 11 + i));
    await publisher.publish(ticks);
    await publisher.flush();
    await waitUntil(
      async () => (await readQuotes(redis, config.quotes, ['S4'])).get('S4')?.quote_ts === '10049',
      'S4 at its newest tick',
    );
    const all = await readQuotes(redis, config.quotes, ['S0', 'S1', 'S2', 'S3', 'S4']);
    expect([...all.values()].map((q) => q.quote_ts)).toEqual(['10045', '10046', '10047', '10048', '10049']);
    await worker.close();
  });
});
