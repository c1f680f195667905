import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  archiveReplayMeta,
  MAX_ID,
  MIN_ID,
  replayArchive,
  ReplayCheckpoint,
  ReplayError,
  replayStreams,
  streamReplayMeta,
  type PageReport,
  type ReplaySummary,
  type StreamReplayOptions,
} from '../../consumers/replay.ts';
import { ArchiveSink, archiveCounts } from '../../consumers/sinks/archive.ts';
import { QuotesSink, readQuotes } from '../../consumers/sinks/quotes.ts';
import type { Sink } from '../../consumers/sink.ts';
import { FileSource, loadFiles } from '../../producers/file/index.ts';
import { Publisher } from '../../producers/publisher.ts';
import { encodeFrame } from '../../shared/codec.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey, type Quote, type Tick } from '../../shared/model.ts';
import { closePgPool, createPgPool, type PgPool } from '../../shared/pg.ts';
import { closeRedis, pairs, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { runCli } from '../helpers/cli.ts';
import {
  cleanupPrefix,
  DATABASE_URL,
  REDIS_URL,
  testConfig,
  testRedis,
  uniqueName,
} from '../helpers/index.ts';
import { RecordingSink } from '../helpers/sinks.ts';

const log = silentLogger();
const SAMPLE_CSV = join(import.meta.dirname, '..', '..', 'infra', 'samples', 'ticks-sample.csv');
const SAMPLE_TICKS = 315;
const RETRY = { attempts: 3, baseMs: 1, maxMs: 5 };

interface Ctx {
  config: Config;
  redis: RedisClient;
  pool?: PgPool;
  schema?: string;
}
const contexts: Ctx[] = [];
const sinks: Sink[] = [];

afterEach(async () => {
  for (const s of sinks.splice(0)) await s.close();
  for (const c of contexts.splice(0)) {
    if (c.pool !== undefined) {
      await c.pool.query(`DROP SCHEMA IF EXISTS "${c.schema}" CASCADE`);
      await closePgPool(c.pool);
    }
    await cleanupPrefix(c.redis, c.config.streams.prefix);
    await closeRedis(c.redis);
  }
});

function setup(withPostgres = false): Ctx {
  const schema = uniqueName('replay');
  const config = testConfig({
    streams: { shards: 3 },
    postgres: { schema, timescale: 'off', partitionsAhead: 0, url: DATABASE_URL },
  });
  const ctx: Ctx = { config, redis: testRedis(config) };
  if (withPostgres) {
    ctx.pool = createPgPool(config.postgres, { log, max: 2 });
    ctx.schema = schema;
  }
  contexts.push(ctx);
  return ctx;
}

async function loadSample(ctx: Ctx): Promise<void> {
  const publisher = new Publisher({
    redis: ctx.redis,
    layout: ctx.config.streams,
    settings: ctx.config.producer,
    log,
  });
  const summary = await loadFiles({ source: new FileSource({ paths: [SAMPLE_CSV] }), publisher });
  expect(summary.published).toBe(SAMPLE_TICKS);
}

/** Synthetic ticks in small frames, so that a replay takes many pages. */
async function loadSynthetic(ctx: Ctx, count: number): Promise<Tick[]> {
  let ns = 1_709_303_400_000_000_000n;
  const market = new SyntheticMarket({
    symbols: ['AAA', 'BBB', 'CCC', 'DDD'],
    seed: 3,
    source: 'syn',
    clock: () => (ns += 1000n),
  });
  const ticks = market.next(count);
  const publisher = new Publisher({
    redis: ctx.redis,
    layout: ctx.config.streams,
    settings: { ...ctx.config.producer, frameSize: 10 },
    log,
  });
  await publisher.publish(ticks);
  await publisher.flush();
  return ticks;
}

async function streamReplay(
  ctx: Ctx,
  sink: Sink,
  name: string,
  o: {
    pageSize?: number;
    resume?: boolean;
    onPage?: (p: PageReport) => void;
    signal?: AbortSignal;
    symbols?: string[];
    admission?: StreamReplayOptions['admission'];
  } = {},
): Promise<ReplaySummary> {
  const checkpoint = new ReplayCheckpoint(ctx.redis, ctx.config.streams.prefix, name);
  const state =
    o.resume === true
      ? (await checkpoint.load())!
      : await checkpoint.create(
          await streamReplayMeta(
            ctx.redis,
            ctx.config.streams,
            { from: MIN_ID, to: MAX_ID },
            sink.name,
            o.symbols,
          ),
        );
  return replayStreams({
    redis: ctx.redis,
    layout: ctx.config.streams,
    sink,
    checkpoint,
    state,
    log,
    retry: RETRY,
    pageSize: o.pageSize ?? 5,
    ...(o.onPage !== undefined ? { onPage: o.onPage } : {}),
    ...(o.signal !== undefined ? { signal: o.signal } : {}),
    ...(o.admission !== undefined ? { admission: o.admission } : {}),
  });
}

function quotesSink(ctx: Ctx): QuotesSink {
  const sink = new QuotesSink({ redis: ctx.redis, settings: ctx.config.quotes, log });
  sinks.push(sink);
  return sink;
}

function archiveSink(ctx: Ctx): ArchiveSink {
  const sink = new ArchiveSink({ settings: ctx.config.postgres, log });
  sinks.push(sink);
  return sink;
}

describe('replay from the Redis streams', () => {
  it('twice into the quotes sink: the same hashes as once, and the second run changes nothing', async () => {
    const ctx = setup();
    await loadSample(ctx);
    const sink = quotesSink(ctx);
    const first = await streamReplay(ctx, sink, 'q1');
    expect(first).toMatchObject({ complete: true, ticks: SAMPLE_TICKS, rejected: 0, undecodable: 0 });
    const updates = sink.updates;
    expect(updates).toBeGreaterThan(0);
    const once = await readQuotes(ctx.redis, ctx.config.quotes, ['AAPL', 'MSFT', 'NVDA']);
    expect(once.size).toBe(3);

    const second = await streamReplay(ctx, sink, 'q2');
    expect(second).toMatchObject({ complete: true, ticks: SAMPLE_TICKS });
    expect(sink.updates).toBe(updates);
    expect(await readQuotes(ctx.redis, ctx.config.quotes, ['AAPL', 'MSFT', 'NVDA'])).toEqual(once);

    // The projection holds the newest quote of each symbol in the file.
    const fileTicks: Tick[] = [];
    for await (const b of new FileSource({ paths: [SAMPLE_CSV] }).batches()) fileTicks.push(...b);
    for (const symbol of ['AAPL', 'MSFT', 'NVDA']) {
      const last = fileTicks.filter((t): t is Quote => t.symbol === symbol && t.type === 'quote').at(-1)!;
      expect(once.get(symbol)).toMatchObject({
        quote_ts: last.ts.toString(),
        bid: String(last.bidPrice),
        ask: String(last.askPrice),
      });
    }
  });

  it('twice into the archive sink: the archive holds each tick once', async () => {
    const ctx = setup(true);
    await loadSample(ctx);
    const sink = archiveSink(ctx);
    await streamReplay(ctx, sink, 'a1', { pageSize: 2 });
    const once = await archiveCounts(ctx.pool!, ctx.schema!);
    expect(once.trades + once.quotes).toBe(SAMPLE_TICKS);
    expect(sink.stats.inserted).toBe(SAMPLE_TICKS);

    const again = await streamReplay(ctx, sink, 'a2', { pageSize: 7 });
    expect(again.ticks).toBe(SAMPLE_TICKS);
    expect(await archiveCounts(ctx.pool!, ctx.schema!)).toEqual(once);
    expect(sink.stats.inserted).toBe(SAMPLE_TICKS);
    expect(sink.stats.duplicates).toBe(SAMPLE_TICKS);
  });

  it('leaves out what the live consumers refuse: future-dated ticks and oversized frames', async () => {
    const ctx = setup();
    const market = new SyntheticMarket({ symbols: ['AAA'], seed: 4, source: uniqueName('src') });
    const now = market.next(3);
    const future = { ...now[1]!, ts: now[1]!.ts + 3_600_000_000_000n } as Tick;
    const stream = allStreamKeys(ctx.config.streams)[0]!;
    await ctx.redis.xadd(stream, '*', ...encodeFrame([now[0]!, future, now[2]!]));
    await ctx.redis.xadd(stream, '*', ...encodeFrame(market.next(30)));
    const sink = new RecordingSink();
    const summary = await streamReplay(ctx, sink, 'adm', {
      admission: { frame: { maxTicks: 20, maxBytes: 1 << 20 }, maxFutureMs: 5000 },
    });
    expect(summary).toMatchObject({ complete: true, ticks: 2, undecodable: 2 });
    expect(new Set(sink.stored.keys())).toEqual(new Set([tickKey(now[0]!), tickKey(now[2]!)]));
  });

  it('leaves consumer groups alone', async () => {
    const ctx = setup();
    await loadSample(ctx);
    const keys = allStreamKeys(ctx.config.streams);
    for (const key of keys) await ctx.redis.xgroup('CREATE', key, 'watchers', '0', 'MKSTREAM');
    const groupsBefore = await Promise.all(keys.map((k) => ctx.redis.call('XINFO', 'GROUPS', k)));
    await streamReplay(ctx, new RecordingSink(), 'g1');
    const groupsAfter = await Promise.all(keys.map((k) => ctx.redis.call('XINFO', 'GROUPS', k)));
    expect(groupsAfter).toEqual(groupsBefore);
    for (const g of groupsAfter as unknown[][][]) {
      expect(pairs(g[0]!).get('pending')).toBe(0);
      expect(pairs(g[0]!).get('last-delivered-id')).toBe('0-0');
    }
  });

  it('stopped after 3 pages and resumed: every tick written exactly once', async () => {
    const ctx = setup();
    const produced = await loadSynthetic(ctx, 1200);
    const sink = new RecordingSink();
    const abort = new AbortController();
    let pages = 0;
    const first = await streamReplay(ctx, sink, 'stop', {
      signal: abort.signal,
      onPage: () => {
        if (++pages === 3) abort.abort();
      },
    });
    expect(first.complete).toBe(false);
    expect(first.pages).toBe(3);
    expect(sink.writes).toBe(first.ticks);
    expect(sink.writes).toBeLessThan(produced.length);

    const checkpoint = await new ReplayCheckpoint(ctx.redis, ctx.config.streams.prefix, 'stop').load();
    expect(checkpoint?.status).toBe('running');
    expect(checkpoint?.ticks).toBe(first.ticks);

    const rest = await streamReplay(ctx, sink, 'stop', { resume: true });
    expect(rest.complete).toBe(true);
    expect(first.ticks + rest.ticks).toBe(produced.length);
    expect(sink.writes).toBe(produced.length);
    expect(new Set(sink.stored.keys())).toEqual(new Set(produced.map(tickKey)));
    const done = await new ReplayCheckpoint(ctx.redis, ctx.config.streams.prefix, 'stop').load();
    expect(done?.status).toBe('complete');
    expect(done?.ticks).toBe(produced.length);
    expect(await ctx.redis.ttl(`${ctx.config.streams.prefix}:replay:stop`)).toBeGreaterThan(0);
  });

  it('a sink that keeps failing stops the replay; resumed later, each tick is stored exactly once', async () => {
    const ctx = setup();
    const produced = await loadSynthetic(ctx, 900);
    const sink = new RecordingSink();
    let pages = 0;
    const crashed = streamReplay(ctx, sink, 'crash', {
      onPage: () => {
        // The store goes down after the 5th page and stays down beyond the retry budget.
        if (++pages === 5) sink.failRetriable = 1000;
      },
    });
    await expect(crashed).rejects.toThrow(ReplayError);
    await expect(crashed).rejects.toThrow(/--resume crash/);
    const flushedBefore = sink.writes;
    expect(flushedBefore).toBeGreaterThan(0);

    sink.failRetriable = 0;
    const rest = await streamReplay(ctx, sink, 'crash', { resume: true });
    expect(rest.complete).toBe(true);
    expect(sink.writes).toBe(produced.length);
    expect(sink.stored.size).toBe(produced.length);
  });

  it('a crash between a page’s flush and its checkpoint replays that page once more; the archive holds each tick once', async () => {
    const ctx = setup(true);
    const produced = await loadSynthetic(ctx, 600);
    const sink = archiveSink(ctx);
    /** The process "dies" right after the 4th page reached the store, before its checkpoint is written. */
    class CrashingCheckpoint extends ReplayCheckpoint {
      saves = 0;
      override async save(part: string, position: string, ticks: number): Promise<void> {
        if (++this.saves === 4) throw new Error('killed between flush and checkpoint');
        await super.save(part, position, ticks);
      }
    }
    const crashing = new CrashingCheckpoint(ctx.redis, ctx.config.streams.prefix, 'gap');
    const state = await crashing.create(
      await streamReplayMeta(ctx.redis, ctx.config.streams, { from: MIN_ID, to: MAX_ID }, sink.name),
    );
    await expect(
      replayStreams({
        redis: ctx.redis,
        layout: ctx.config.streams,
        sink,
        checkpoint: crashing,
        state,
        log,
        retry: RETRY,
        pageSize: 5,
      }),
    ).rejects.toThrow(/killed between flush and checkpoint/);
    const flushedBeforeCrash = sink.stats.inserted;
    const saved = (await new ReplayCheckpoint(ctx.redis, ctx.config.streams.prefix, 'gap').load())!;
    // Four pages are in the archive, three are checkpointed.
    expect(saved.ticks).toBeGreaterThan(0);
    expect(flushedBeforeCrash).toBeGreaterThan(saved.ticks);

    const rest = await streamReplay(ctx, sink, 'gap', { resume: true });
    expect(rest.complete).toBe(true);
    // The resumed run starts after the last checkpoint, so it writes the uncheckpointed page again...
    expect(saved.ticks + rest.ticks).toBe(produced.length);
    expect(sink.stats.duplicates).toBe(flushedBeforeCrash - saved.ticks);
    // ...and the store keeps one copy of every tick.
    const counts = await archiveCounts(ctx.pool!, ctx.schema!);
    expect(counts.trades + counts.quotes).toBe(produced.length);
    expect(sink.stats.inserted).toBe(produced.length);
    const done = await new ReplayCheckpoint(ctx.redis, ctx.config.streams.prefix, 'gap').load();
    expect(done).toMatchObject({ status: 'complete', ticks: produced.length });
  });

  it('--symbols reads only the shards holding them and writes only those symbols', async () => {
    const ctx = setup();
    const produced = await loadSynthetic(ctx, 600);
    const sink = new RecordingSink();
    const summary = await streamReplay(ctx, sink, 'sym', { symbols: ['BBB'] });
    const expected = produced.filter((t) => t.symbol === 'BBB');
    expect(summary.ticks).toBe(expected.length);
    expect([...sink.stored.values()].map(tickKey).sort()).toEqual(expected.map(tickKey).sort());
  });

  it('a new replay under an existing name is refused', async () => {
    const ctx = setup();
    await loadSample(ctx);
    await streamReplay(ctx, new RecordingSink(), 'dup');
    await expect(streamReplay(ctx, new RecordingSink(), 'dup')).rejects.toThrow(
      /--resume dup or choose another --name/,
    );
  });
});

describe('tickstream replay (process)', () => {
  it('replays into a sink, then says a finished replay is complete; --resume refuses range flags', async () => {
    const ctx = setup();
    await loadSample(ctx);
    const env = {
      REDIS_URL,
      DATABASE_URL,
      TICKSTREAM_STREAM_PREFIX: ctx.config.streams.prefix,
      TICKSTREAM_SHARDS: '3',
      TICKSTREAM_QUOTE_KEY_PREFIX: ctx.config.quotes.keyPrefix,
      // Never the global quotes:* channels: other tests and a running dashboard listen there.
      TICKSTREAM_QUOTE_CHANNEL_PREFIX: ctx.config.quotes.channelPrefix,
    };
    const r = await runCli(
      ['replay', '--sink', 'quotes', '--name', 'cli', '--page', '2', '--from', '2024-01-01'],
      env,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Replay "cli" complete\.\n[\s\S]*written\s+315\n/);
    expect((await readQuotes(ctx.redis, ctx.config.quotes, ['AAPL'])).size).toBe(1);

    const again = await runCli(['replay', '--resume', 'cli'], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/Replay "cli" is already complete \(315 ticks\)/);

    const bad = await runCli(['replay', '--resume', 'cli', '--from', '2024-01-01'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--resume takes the range from the checkpoint; leave out --from/);

    const unknown = await runCli(['replay', '--sink', 'nope'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown sink "nope"/);

    const noArchive = await runCli(
      ['replay', '--source', 'postgres', '--sink', 'quotes', '--archive-schema', uniqueName('none')],
      env,
    );
    expect(noArchive.code).toBe(2);
    expect(noArchive.stderr).toMatch(/schema "none_[0-9a-f]+" holds no archive/);
  });
});

describe('replay from the PostgreSQL archive', () => {
  async function archived(ctx: Ctx): Promise<Tick[]> {
    const ticks: Tick[] = [];
    for await (const b of new FileSource({ paths: [SAMPLE_CSV] }).batches()) ticks.push(...b);
    const sink = archiveSink(ctx);
    await sink.start();
    await sink.write(ticks);
    await sink.flush();
    return ticks;
  }

  async function run(
    ctx: Ctx,
    sink: Sink,
    name: string,
    o: {
      from?: bigint;
      to?: bigint;
      symbols?: string[];
      resume?: boolean;
      signal?: AbortSignal;
      onPage?: () => void;
    } = {},
  ): Promise<ReplaySummary> {
    const checkpoint = new ReplayCheckpoint(ctx.redis, ctx.config.streams.prefix, name);
    const state =
      o.resume === true
        ? (await checkpoint.load())!
        : await checkpoint.create(
            archiveReplayMeta(
              { from: o.from ?? 0n, to: o.to ?? 9_223_372_036_854_775_807n },
              sink.name,
              ctx.config.streams,
              ctx.schema!,
              o.symbols,
            ),
          );
    return replayArchive({
      pool: ctx.pool!,
      sink,
      checkpoint,
      state,
      log,
      retry: RETRY,
      pageSize: 40,
      ...(o.signal !== undefined ? { signal: o.signal } : {}),
      ...(o.onPage !== undefined ? { onPage: o.onPage } : {}),
    });
  }

  it('writes the archived ticks in time order; twice stores the same', async () => {
    const ctx = setup(true);
    const ticks = await archived(ctx);
    const sink = new RecordingSink();
    const order: bigint[] = [];
    const proxy: Sink = {
      name: 'recording',
      start: () => sink.start(),
      write: async (b) => {
        order.push(...b.map((t) => t.ts));
        await sink.write(b);
      },
      flush: () => sink.flush(),
      close: () => sink.close(),
    };
    const first = await run(ctx, proxy, 'pg1');
    expect(first).toMatchObject({ complete: true, ticks: SAMPLE_TICKS, pages: 8 });
    expect(order).toEqual([...order].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    expect(new Map(sink.stored)).toEqual(new Map(ticks.map((t) => [tickKey(t), t])));
    const snapshot = new Map(sink.stored);
    await run(ctx, proxy, 'pg2');
    expect(sink.stored).toEqual(snapshot);
    expect(sink.writes).toBe(2 * SAMPLE_TICKS);
  });

  it('from the archive into the quotes sink rebuilds the same quotes as a replay from the streams', async () => {
    const ctx = setup(true);
    await archived(ctx);
    await run(ctx, quotesSink(ctx), 'pgq');
    const fromArchive = await readQuotes(ctx.redis, ctx.config.quotes, ['AAPL', 'MSFT', 'NVDA']);

    const other = setup();
    await loadSample(other);
    await streamReplay(other, quotesSink(other), 'rq');
    const fromStreams = await readQuotes(other.redis, other.config.quotes, ['AAPL', 'MSFT', 'NVDA']);
    const strip = (m: Map<string, Record<string, string>>) =>
      [...m].map(([k, v]) => [k, { ...v, updated_at: '' }] as const);
    expect(strip(fromArchive)).toEqual(strip(fromStreams));
  });

  it('keeps to [from, to) and the symbols asked for', async () => {
    const ctx = setup(true);
    const ticks = await archived(ctx);
    const from = ticks[50]!.ts;
    const to = ticks[200]!.ts;
    const sink = new RecordingSink();
    await run(ctx, sink, 'pgrange', { from, to, symbols: ['NVDA', 'MSFT'] });
    const expected = ticks.filter((t) => t.ts >= from && t.ts < to && t.symbol !== 'AAPL');
    expect(expected.length).toBeGreaterThan(50);
    expect([...sink.stored.keys()].sort()).toEqual(expected.map(tickKey).sort());
  });

  it('stopped and resumed from its checkpoint: each tick written exactly once', async () => {
    const ctx = setup(true);
    await archived(ctx);
    const sink = new RecordingSink();
    const abort = new AbortController();
    let pages = 0;
    const first = await run(ctx, sink, 'pgstop', {
      signal: abort.signal,
      onPage: () => {
        if (++pages === 2) abort.abort();
      },
    });
    expect(first).toMatchObject({ complete: false, ticks: 80 });
    const rest = await run(ctx, sink, 'pgstop', { resume: true });
    expect(rest).toMatchObject({ complete: true, ticks: SAMPLE_TICKS - 80 });
    expect(sink.writes).toBe(SAMPLE_TICKS);
    expect(sink.stored.size).toBe(SAMPLE_TICKS);
  });
});
