import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { WebSocket } from 'ws';
import { buildApp } from '../../server/app.ts';
import type { ServerContext } from '../../server/context.ts';
import { Hub } from '../../server/push/hub.ts';
import { Subscriber } from '../../server/push/subscriber.ts';
import { ReadModel, type PostgresReads, type RedisReads } from '../../server/tiers/index.ts';
import { MemoryTier } from '../../server/tiers/memory.ts';
import { nsToIso, type BarView, type Kind, type Loader, type QuoteView } from '../../server/tiers/port.ts';
import { decodeCursor, encodeCursor } from '../../server/tiers/postgres.ts';
import { parseTime } from '../../server/params.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { RedisClient } from '../../shared/redis.ts';
import { testConfig } from '../helpers/index.ts';

const TTL: Record<Kind, number> = {
  quote: 5000,
  bar: 60_000,
  bars: 60_000,
  indicators: 60_000,
  history: 300_000,
  trades: 300_000,
};

function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

function memory(c = clock(), timeoutMs = 50) {
  return new MemoryTier({ ttlMs: TTL, max: 100, timeoutMs, now: c.now });
}

function quote(symbol: string, ts: bigint, bid = 10): QuoteView {
  return {
    symbol,
    bid,
    bid_size: 1,
    ask: bid + 1,
    ask_size: 1,
    quote_ts: ts.toString(),
    quote_venue: 'X',
    last: null,
    last_size: null,
    trade_ts: null,
    trade_venue: null,
    ts: ts.toString(),
    time: nsToIso(ts),
    updated_at: Date.now(),
  };
}

function bar(symbol: string, start: bigint, close: number, closed = true): BarView {
  return {
    symbol,
    tf: '1m',
    start: start.toString(),
    time: '',
    open: close,
    high: close,
    low: close,
    close,
    volume: 1,
    vwap: close,
    trades: 1,
    closed,
  };
}

/** A store tier stand-in: a map, a read counter, and a switch to fail or hang. */
class StandInTier<V> {
  readonly data = new Map<string, V>();
  reads: string[][] = [];
  mode: 'ok' | 'fail' | 'hang' = 'ok';
  gate: Promise<void> | undefined;

  loader(tier: Loader<V>['tier'] = 'redis'): Loader<V> {
    return {
      tier,
      load: async (keys) => {
        this.reads.push([...keys]);
        if (this.gate !== undefined) await this.gate;
        if (this.mode === 'fail') throw new Error('store down (stand-in)');
        if (this.mode === 'hang') await new Promise(() => undefined);
        return new Map(keys.flatMap((k) => (this.data.has(k) ? [[k, this.data.get(k)!] as const] : [])));
      },
    };
  }
}

describe('L1 tier (lru-cache) read-through', () => {
  it('misses, reads the tier below, fills L1, then hits', async () => {
    const m = memory();
    const store = new StandInTier<string>();
    store.data.set('A', 'a1');
    const first = (await m.getMany('quote', ['A'], [store.loader()])).get('A');
    expect(first).toMatchObject({ status: 'ok', value: 'a1', stale: false, source: 'redis' });
    const second = (await m.getMany('quote', ['A'], [store.loader()])).get('A');
    expect(second).toMatchObject({ status: 'ok', value: 'a1', stale: false, source: 'memory' });
    expect(store.reads).toEqual([['A']]);
    expect(m.stats().memory.quote).toMatchObject({ hits: 1, misses: 1, size: 1, hitRatio: 0.5 });
  });

  it('falls through to the next tier for keys the first does not hold, and says missing when none does', async () => {
    const m = memory();
    const redis = new StandInTier<string>();
    const pg = new StandInTier<string>();
    redis.data.set('A', 'from-redis');
    pg.data.set('B', 'from-pg');
    const out = await m.getMany('quote', ['A', 'B', 'C'], [redis.loader('redis'), pg.loader('postgres')]);
    expect(out.get('A')).toMatchObject({ value: 'from-redis', source: 'redis' });
    expect(out.get('B')).toMatchObject({ value: 'from-pg', source: 'postgres' });
    expect(out.get('C')).toEqual({ status: 'missing' });
    expect(redis.reads).toEqual([['A', 'B', 'C']]);
    expect(pg.reads).toEqual([['B', 'C']]);
  });

  it('expires an entry after its kind TTL and reads it again', async () => {
    const c = clock();
    const m = memory(c);
    const store = new StandInTier<string>();
    store.data.set('A', 'v1');
    await m.getMany('quote', ['A'], [store.loader()]);
    c.advance(4999);
    expect((await m.getMany('quote', ['A'], [store.loader()])).get('A')).toMatchObject({ source: 'memory' });
    store.data.set('A', 'v2');
    c.advance(2);
    expect((await m.getMany('quote', ['A'], [store.loader()])).get('A')).toMatchObject({
      value: 'v2',
      source: 'redis',
    });
    expect(store.reads).toHaveLength(2);
    // Another kind keeps its own, longer TTL.
    await m.getMany('bars', ['A'], [store.loader()]);
    c.advance(10_000);
    expect((await m.getMany('bars', ['A'], [store.loader()])).get('A')).toMatchObject({ source: 'memory' });
  });

  it('coalesces 100 concurrent misses of one key into one backend read', async () => {
    const m = memory(clock(), 5000);
    const store = new StandInTier<string>();
    store.data.set('HOT', 'v');
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    const all = Promise.all(Array.from({ length: 100 }, () => m.getMany('quote', ['HOT'], [store.loader()])));
    open();
    const results = await all;
    expect(store.reads).toEqual([['HOT']]);
    expect(results.every((r) => r.get('HOT')?.status === 'ok')).toBe(true);
    expect(m.stats().memory.quote).toMatchObject({ misses: 1, coalesced: 99 });
  });

  it('reads all misses of a batch in one call and joins keys another caller is already loading', async () => {
    const m = memory(clock(), 5000);
    const store = new StandInTier<string>();
    for (const k of ['A', 'B', 'C', 'D']) store.data.set(k, k.toLowerCase());
    await m.getMany('quote', ['A'], [store.loader()]);
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    const inflight = m.getMany('quote', ['B'], [store.loader()]);
    const batch = m.getMany('quote', ['A', 'B', 'C', 'D'], [store.loader()]);
    open();
    const [, out] = await Promise.all([inflight, batch]);
    expect(store.reads).toEqual([['A'], ['B'], ['C', 'D']]);
    expect([...out.values()].map((o) => (o.status === 'ok' ? o.value : o.status))).toEqual([
      'a',
      'b',
      'c',
      'd',
    ]);
  });

  it('grace: serves the expired value marked stale with its age when the tier fails, 503 material when empty', async () => {
    const c = clock();
    const m = memory(c);
    const store = new StandInTier<string>();
    store.data.set('A', 'old');
    await m.getMany('quote', ['A'], [store.loader()]);
    c.advance(7000);
    store.mode = 'fail';
    const out = await m.getMany('quote', ['A', 'B'], [store.loader()]);
    expect(out.get('A')).toEqual({ status: 'ok', value: 'old', stale: true, ageMs: 7000, source: 'memory' });
    expect(out.get('B')).toEqual({ status: 'unavailable', reason: 'redis failed' });
    expect(m.stats().memory.quote.stale).toBe(1);
    expect(m.stats().tiers['redis:quote']).toMatchObject({ errors: 1 });
    // The store is back: a fresh read replaces the stale value.
    store.mode = 'ok';
    store.data.set('A', 'new');
    expect((await m.getMany('quote', ['A'], [store.loader()])).get('A')).toMatchObject({
      value: 'new',
      stale: false,
    });
  });

  it('grace on a timeout: a hanging tier counts as failed after the tier timeout', async () => {
    const c = clock();
    const m = memory(c, 30);
    const store = new StandInTier<string>();
    store.data.set('A', 'v');
    await m.getMany('quote', ['A'], [store.loader()]);
    c.advance(6000);
    store.mode = 'hang';
    expect((await m.getMany('quote', ['A'], [store.loader()])).get('A')).toMatchObject({
      value: 'v',
      stale: true,
    });
    expect((await m.getMany('quote', ['Z'], [store.loader()])).get('Z')).toEqual({
      status: 'unavailable',
      reason: 'redis timed out',
    });
    expect(m.stats().tiers['redis:quote']).toMatchObject({ timeouts: 2 });
  });

  it('a failed tier with nothing cached falls through to the next tier', async () => {
    const m = memory();
    const redis = new StandInTier<string>();
    const pg = new StandInTier<string>();
    redis.mode = 'fail';
    pg.data.set('A', 'pg');
    expect(
      (await m.getMany('quote', ['A'], [redis.loader('redis'), pg.loader('postgres')])).get('A'),
    ).toMatchObject({
      value: 'pg',
      source: 'postgres',
    });
  });

  it('evicts the least recently used entries beyond max and counts them', async () => {
    const m = new MemoryTier({ ttlMs: TTL, max: 2, timeoutMs: 50 });
    const store = new StandInTier<string>();
    for (const k of ['A', 'B', 'C']) store.data.set(k, k);
    await m.getMany('quote', ['A', 'B', 'C'], [store.loader()]);
    expect(m.stats().memory.quote).toMatchObject({ size: 2, evictions: 1 });
  });
});

function model(c = clock()) {
  const m = memory(c);
  const redis = { quotes: vi.fn(), openBars: vi.fn(), indicators: vi.fn(), ping: vi.fn() };
  const pg = {
    quotes: vi.fn(async () => new Map()),
    recentBars: vi.fn(),
    barsBetween: vi.fn(),
    indicators: vi.fn(async () => new Map()),
    trades: vi.fn(),
    activeSymbols: vi.fn(),
    ping: vi.fn(),
  };
  return {
    m,
    redis,
    pg,
    model: new ReadModel({
      memory: m,
      redis: redis as unknown as RedisReads,
      postgres: pg as unknown as PostgresReads,
      timeoutMs: 50,
    }),
  };
}

describe('push into L1', () => {
  it('updates a held quote in place, never moves it back, and does not insert what is not held', async () => {
    const { model: rm, redis } = model();
    redis.quotes.mockResolvedValue(new Map([['A', quote('A', 100n, 10)]]));
    await rm.quotes(['A']);
    expect(rm.pushQuote(quote('A', 200n, 11))).toBe(true);
    expect(rm.pushQuote(quote('A', 150n, 99))).toBe(false);
    expect(rm.pushQuote(quote('B', 300n, 5))).toBe(false);
    const out = await rm.quotes(['A']);
    expect(out.get('A')).toMatchObject({ status: 'ok', source: 'memory', value: { bid: 11, ts: '200' } });
    expect(redis.quotes).toHaveBeenCalledTimes(1);
  });

  it('merges a pushed bar into the held open bar and recent-bars lists', async () => {
    const { model: rm, redis, pg } = model();
    pg.recentBars.mockResolvedValue([bar('A', 60n, 1), bar('A', 120n, 2, false)]);
    redis.openBars.mockResolvedValue(new Map([['A:1m', bar('A', 120n, 2, false)]]));
    const before = await rm.bars('A', '1m', 2);
    expect(before).toMatchObject({ status: 'ok', value: { openBar: '120' } });
    rm.pushBar(bar('A', 120n, 3, true));
    rm.pushBar(bar('A', 180n, 4, false));
    const after = await rm.bars('A', '1m', 2);
    if (after.status !== 'ok') throw new Error('expected bars');
    expect(after.value.bars.map((b) => [b.start, b.close, b.closed])).toEqual([
      ['120', 3, true],
      ['180', 4, false],
    ]);
    expect(after.value.openBar).toBe('180');
    expect(pg.recentBars).toHaveBeenCalledTimes(1);
  });

  it('the subscriber updates L1 from messages and invalidates pushed kinds when it re-subscribes', async () => {
    const { model: rm, redis, m } = model();
    redis.quotes.mockResolvedValue(new Map([['A', quote('A', 100n)]]));
    await rm.quotes(['A']);
    const conn = Object.assign(new EventEmitter(), {
      psubscribe: vi.fn(async () => 3),
      punsubscribe: vi.fn(async () => 0),
    });
    const sub = new Subscriber(
      conn as unknown as RedisClient,
      { quotesPrefix: 'q:', barsPrefix: 'b:', indicatorsPrefix: 'i:' },
      rm,
      undefined,
      silentLogger(),
    );
    await sub.start();
    expect(conn.psubscribe).toHaveBeenCalledWith('q:*', 'b:*', 'i:*');
    conn.emit(
      'pmessage',
      'q:*',
      'q:A',
      JSON.stringify({ symbol: 'A', ts: '500', bid: '12.5', updated_at: '1' }),
    );
    expect(m.peek<QuoteView>('quote', 'A')?.value).toMatchObject({ ts: '500', bid: 12.5 });
    conn.emit('pmessage', 'q:*', 'q:A', 'not json');
    conn.emit('pmessage', 'b:*', 'b:A:1m', JSON.stringify({ symbol: 'A' }));
    expect(sub.stats).toMatchObject({ quotes: 1, bad: 2 });
    conn.emit('close');
    conn.emit('ready');
    expect(sub.stats.resubscribes).toBe(1);
    expect(m.peek('quote', 'A')).toBeUndefined();
    await rm.quotes(['A']);
    expect(redis.quotes).toHaveBeenCalledTimes(2);
  });
});

class FakeSocket extends EventEmitter {
  readonly OPEN = 1;
  readyState = 1;
  bufferedAmount = 0;
  sent: string[] = [];
  closed: number | undefined;
  send(payload: string) {
    this.sent.push(payload);
  }
  ping() {}
  close(code: number) {
    this.closed = code;
  }
  terminate() {}
}

describe('stream hub', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('conflates to the newest value per topic while a client is backed up, and drops a stuck client', async () => {
    vi.useFakeTimers();
    const hub = new Hub(
      { highWaterBytes: 100, stuckMs: 1000, heartbeatMs: 60_000, maxSubscriptions: 10, timeframes: ['1m'] },
      silentLogger(),
    );
    const slow = new FakeSocket();
    const fast = new FakeSocket();
    hub.add(slow as unknown as WebSocket);
    hub.add(fast as unknown as WebSocket);
    for (const s of [slow, fast])
      s.emit(
        'message',
        Buffer.from(JSON.stringify({ op: 'subscribe', channel: 'quotes', symbols: ['A', 'B'] })),
        false,
      );
    await vi.advanceTimersByTimeAsync(0);
    slow.sent = [];
    fast.sent = [];
    slow.bufferedAmount = 1000;
    for (let i = 1; i <= 5; i++) hub.publish('quotes:A', `A${i}`);
    hub.publish('quotes:B', 'B1');
    expect(fast.sent).toEqual(['A1', 'A2', 'A3', 'A4', 'A5', 'B1']);
    expect(slow.sent).toEqual([]);
    expect(hub.stats.conflated).toBe(4);
    slow.bufferedAmount = 0;
    await vi.advanceTimersByTimeAsync(50);
    expect(slow.sent).toEqual(['A5', 'B1']);
    // Backed up again and never drains: disconnected after stuckMs.
    slow.bufferedAmount = 1000;
    hub.publish('quotes:A', 'A6');
    await vi.advanceTimersByTimeAsync(1200);
    expect(slow.closed).toBe(1008);
    expect(hub.stats.slowDisconnects).toBe(1);
    expect(hub.size).toBe(1);
    hub.close();
    expect(fast.closed).toBe(1001);
  });

  it('heartbeats a slice of clients per event-loop turn, and terminates a client that missed a pong', () => {
    vi.useFakeTimers();
    const hub = new Hub(
      { highWaterBytes: 100, stuckMs: 1000, heartbeatMs: 100, maxSubscriptions: 10, timeframes: ['1m'] },
      silentLogger(),
    );
    const sockets = Array.from({ length: 120 }, () => new FakeSocket());
    for (const s of sockets) hub.add(s as unknown as WebSocket);
    const beats = () =>
      sockets.filter((s) => s.sent.some((m) => (JSON.parse(m) as { type: string }).type === 'heartbeat'))
        .length;
    vi.advanceTimersByTime(99);
    expect(beats()).toBe(0);
    // The interval's turn beats one slice; each following turn (setImmediate) the next.
    vi.advanceTimersToNextTimer();
    expect(beats()).toBe(50);
    vi.advanceTimersToNextTimer();
    expect(beats()).toBe(100);
    vi.advanceTimersToNextTimer();
    expect(beats()).toBe(120);
    // Every client but the first answers the ping; the next beat drops the first.
    for (const s of sockets.slice(1)) s.emit('pong');
    vi.advanceTimersByTime(100);
    expect(hub.stats.heartbeatDisconnects).toBe(1);
    expect(hub.size).toBe(sockets.length - 1);
    hub.close();
  });

  it('answers a bad request with an error naming the field', async () => {
    const hub = new Hub(
      { highWaterBytes: 100, stuckMs: 1000, heartbeatMs: 60_000, maxSubscriptions: 10, timeframes: ['1m'] },
      silentLogger(),
    );
    const ws = new FakeSocket();
    hub.add(ws as unknown as WebSocket);
    ws.emit(
      'message',
      Buffer.from(JSON.stringify({ op: 'subscribe', channel: 'bars', symbols: ['A'], tf: '7m' })),
      false,
    );
    ws.emit(
      'message',
      Buffer.from(JSON.stringify({ op: 'subscribe', channel: 'quotes', symbols: ['bad symbol'] })),
      false,
    );
    await new Promise((r) => setImmediate(r));
    const errors = ws.sent
      .map((s) => JSON.parse(s) as { type: string; message?: string })
      .filter((m) => m.type === 'error');
    expect(errors.map((e) => e.message)).toEqual([
      'tf: required for bars, one of 1m',
      expect.stringContaining('symbols.0: symbols:'),
    ]);
    hub.close();
  });
});

describe('read API (app on stand-in tiers)', () => {
  async function app(overrides: { adminToken?: string } = {}) {
    const config = testConfig({ api: { retryAfterS: 7, ...overrides } });
    const parts = model();
    const hub = new Hub(
      { highWaterBytes: 1e6, stuckMs: 1000, heartbeatMs: 60_000, maxSubscriptions: 10, timeframes: ['1m'] },
      silentLogger(),
    );
    const ctx: ServerContext = {
      config,
      log: silentLogger(),
      model: parts.model,
      redisTier: parts.redis as unknown as RedisReads,
      postgresTier: parts.pg as unknown as PostgresReads,
      redis: {} as RedisClient,
      hub,
    };
    return { ...parts, app: await buildApp(ctx) };
  }

  it('names the bad parameter in a 400', async () => {
    const { app: a } = await app();
    const cases: [string, string][] = [
      ['/v1/bars/AAA?limit=0', 'querystring/limit must be >= 1'],
      ['/v1/bars/AAA?limit=100000', 'querystring/limit must be <= 1000'],
      ['/v1/bars/AAA?tf=2m', 'querystring/tf must be equal to one of the allowed values'],
      ['/v1/bars/AAA?from=yesterday', 'from: expected an ISO 8601 time'],
      [
        '/v1/bars/AAA?tf=1s&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z',
        'from/to: the range spans 86400 1s bars; at most 5000',
      ],
      ['/v1/trades/AAA?cursor=xyz', 'cursor: not a cursor this API returned'],
      ['/v1/quotes?symbols=A,,B%20C', 'symbols: "B C" is not a symbol'],
      [
        `/v1/quotes?symbols=${Array.from({ length: 101 }, (_, i) => `S${i}`).join(',')}`,
        'symbols: at most 100 symbols per request (got 101)',
      ],
      ['/v1/quotes/bad%20sym', 'params/symbol must match pattern'],
    ];
    for (const [url, message] of cases) {
      const r = await a.inject({ url });
      expect(r.statusCode, url).toBe(400);
      expect(r.json<{ error: { code: string; message: string } }>().error, url).toMatchObject({
        code: 'bad_request',
        message: expect.stringContaining(message),
      });
    }
    await a.close();
  });

  it('404 names an unknown symbol; 503 with Retry-After when the stores fail and nothing is cached; then stale', async () => {
    const { app: a, redis, pg } = await app();
    redis.quotes.mockResolvedValue(new Map());
    const missing = await a.inject({ url: '/v1/quotes/NOPE' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toEqual({
      error: { code: 'unknown_symbol', message: 'unknown symbol "NOPE": no quote stored for it' },
    });

    redis.quotes.mockRejectedValue(new Error('ECONNREFUSED'));
    pg.quotes.mockRejectedValue(new Error('ECONNREFUSED'));
    const down = await a.inject({ url: '/v1/quotes/AAA' });
    expect(down.statusCode).toBe(503);
    expect(down.headers['retry-after']).toBe('7');
    expect(down.json<{ error: { code: string } }>().error.code).toBe('unavailable');

    redis.quotes.mockResolvedValue(new Map([['AAA', quote('AAA', 100n)]]));
    const ok = await a.inject({ url: '/v1/quotes/AAA' });
    expect(ok.json()).toMatchObject({
      symbol: 'AAA',
      ts: '100',
      stale: false,
      source: 'redis',
      time: '1970-01-01T00:00:00.000000100Z',
    });
    a.ctx.model.memory.invalidate(['quote'], () => false);
    redis.quotes.mockRejectedValue(new Error('ECONNREFUSED'));
    // Fresh in L1: served from memory without touching the failing store.
    expect((await a.inject({ url: '/v1/quotes/AAA' })).json()).toMatchObject({
      stale: false,
      source: 'memory',
    });
    await a.close();
  });

  it('batch quotes list found, missing and unavailable symbols', async () => {
    const { app: a, redis } = await app();
    redis.quotes.mockResolvedValue(new Map([['A', quote('A', 1n)]]));
    const r = await a.inject({ url: '/v1/quotes?symbols=A,B,A' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ quotes: [{ symbol: 'A' }], missing: ['B'], unavailable: [] });
    expect(redis.quotes).toHaveBeenCalledTimes(1);
    expect(redis.quotes).toHaveBeenCalledWith(['A', 'B']);
    await a.close();
  });

  it('admin routes are off without a token, and need the exact bearer token with one', async () => {
    const off = await app();
    const r = await off.app.inject({ method: 'POST', url: '/v1/cache/clear' });
    expect(r.statusCode).toBe(404);
    expect(r.json<{ error: { code: string } }>().error.code).toBe('admin_disabled');
    await off.app.close();

    const token = 'sixteen-chars-token!';
    const on = await app({ adminToken: token });
    on.redis.quotes.mockResolvedValue(new Map([['A', quote('A', 1n)]]));
    await on.app.inject({ url: '/v1/quotes/A' });
    const wrong = await on.app.inject({
      method: 'POST',
      url: '/v1/cache/clear',
      headers: { authorization: 'Bearer nope' },
    });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.body).not.toContain(token);
    const right = await on.app.inject({
      method: 'POST',
      url: '/v1/cache/clear',
      headers: { authorization: `Bearer ${token}` },
      payload: { kind: 'quote', symbol: 'A' },
    });
    expect(right.json()).toEqual({ cleared: 1, kind: 'quote', symbol: 'A' });
    const stats = await on.app.inject({ url: '/v1/cache/stats' });
    expect(stats.json()).toMatchObject({ memory: { quote: { size: 0, misses: 1 } } });
    expect(stats.body).not.toContain(token);
    await on.app.close();
  });
});

describe('parameters', () => {
  it('parses times exactly to the nanosecond and cursors round-trip', () => {
    expect(parseTime('from', '2026-11-30T12:00:00.123456789Z')).toBe(1_796_040_000_123_456_789n);
    expect(parseTime('from', '1700000000000')).toBe(1_700_000_000_000_000_000n);
    expect(() => parseTime('to', '2026-11-30')).toThrow(/^to: expected/);
    expect(decodeCursor(encodeCursor('123', '4', 'src'))).toEqual({ ts: '123', seq: '4', source: 'src' });
    expect(decodeCursor('garbage')).toBeUndefined();
  });
});
