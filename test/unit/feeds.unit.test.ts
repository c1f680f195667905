import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Histogram, register } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { AlpacaMapper } from '../../producers/feeds/alpaca.ts';
import { BinanceMapper } from '../../producers/feeds/binance.ts';
import { CoinbaseMapper } from '../../producers/feeds/coinbase.ts';
import { createMapper } from '../../producers/feeds/index.ts';
import { KrakenMapper } from '../../producers/feeds/kraken.ts';
import {
  SequenceTracker,
  contentSeq,
  num,
  plainDecimal,
  type MapperOptions,
} from '../../producers/feeds/mapper.ts';
import { parseChannels } from '../../cli/commands/produce-feed.ts';
import { mulberry32 } from '../../producers/synthetic.ts';
import { feedMetrics } from '../../producers/feeds/metrics.ts';

// Venue messages written from each venue's documentation (test/fixtures/feeds/README.md).
function fixtures(venue: string): Record<string, unknown> {
  return JSON.parse(
    readFileSync(join(import.meta.dirname, '..', 'fixtures', 'feeds', `${venue}.json`), 'utf8'),
  ) as Record<string, unknown>;
}

const RX = 1_796_026_800_000_000_000n; // a receive time, for messages that carry none
const both: MapperOptions = { symbols: ['BTC-USD'], channels: ['trades', 'quotes'] };

describe('Coinbase mapper', () => {
  const f = fixtures('coinbase');

  it('maps a match exactly: trade id as seq, ISO time to the microsecond, the taker side', () => {
    const m = new CoinbaseMapper(both);
    const r = m.map(f.last_match, RX);
    expect(r.events).toEqual([]);
    expect(r.ticks).toEqual([
      {
        type: 'trade',
        source: 'coinbase',
        symbol: 'BTC-USD',
        ts: 1_796_026_767_028_459_000n,
        seq: 10,
        venue: 'coinbase',
        price: 400.23,
        size: 5.23512,
        side: 'buy', // the maker sold
      },
    ]);
    const next = m.map(f.match, RX).ticks[0]!;
    expect(next).toMatchObject({ seq: 11, price: 400.24, size: 0.00000001, side: 'sell' });
  });

  it('maps a ticker to a quote with its sequence and exchange time', () => {
    const r = new CoinbaseMapper(both).map(f.ticker, RX);
    expect(r.ticks).toEqual([
      {
        type: 'quote',
        source: 'coinbase',
        symbol: 'BTC-USD',
        ts: 1_796_026_767_228_459_000n,
        seq: 52,
        venue: 'coinbase',
        bidPrice: 400.23,
        bidSize: 0.46688654,
        askPrice: 400.25,
        askSize: 1.5663704,
      },
    ]);
  });

  it('reports a trade-id gap, drops a replayed match, and keeps the trade after the gap', () => {
    const m = new CoinbaseMapper(both);
    m.map(f.match, RX);
    const replay = m.map(f.match, RX);
    expect(replay.ticks).toEqual([]);
    expect(replay.events.map((e) => e.kind)).toEqual(['duplicate']);
    const after = m.map(f.match_after_gap, RX);
    expect(after.ticks.map((t) => t.seq)).toEqual([15]);
    expect(after.events).toEqual([
      { kind: 'gap', symbol: 'BTC-USD', detail: '3 trade ids missing before 15' },
    ]);
  });

  it('reports trades a heartbeat names that never arrived, once, after a second heartbeat', () => {
    const m = new CoinbaseMapper(both);
    m.map(f.match, RX); // trade 11 seen; the heartbeat says the venue is at 20
    expect(m.map(f.heartbeat, RX).events).toEqual([]); // a match may still be in flight
    const second = m.map(f.heartbeat, RX);
    expect(second.events).toEqual([
      { kind: 'gap', symbol: 'BTC-USD', detail: 'heartbeat: trades 12..20 not received' },
    ]);
    expect(m.map(f.heartbeat, RX).events).toEqual([]);
    // The next trade (21) follows the reported range: no second gap.
    const next = m.map({ ...(f.match as object), trade_id: 21 }, RX);
    expect(next.events).toEqual([]);
    expect(next.ticks).toHaveLength(1);
  });

  it('treats a subscription error as fatal and ignores unknown message types', () => {
    const m = new CoinbaseMapper(both);
    expect(m.map(f.error, RX).fatal).toMatch(/NOPE-USD is not a valid product/);
    expect(m.map(f.unknown, RX)).toEqual({ ticks: [], events: [] });
  });

  it('reports a malformed match instead of throwing', () => {
    const r = new CoinbaseMapper(both).map({ ...(f.match as object), price: 'abc' }, RX);
    expect(r.ticks).toEqual([]);
    expect(r.events).toEqual([{ kind: 'malformed', detail: 'field "price": expected a decimal number' }]);
  });

  it('subscribes to matches, ticker and heartbeat for the chosen channels', () => {
    expect(
      JSON.parse(new CoinbaseMapper({ symbols: ['BTC-USD'], channels: ['trades'] }).onOpen()[0]!),
    ).toEqual({
      type: 'subscribe',
      product_ids: ['BTC-USD'],
      channels: ['heartbeat', 'matches'],
    });
  });
});

describe('Binance mapper', () => {
  const f = fixtures('binance');
  const o: MapperOptions = { symbols: ['BTCUSDT'], channels: ['trades', 'quotes'] };

  it('names every stream in the combined-stream URL with microsecond times', () => {
    expect(new BinanceMapper({ ...o, url: 'ws://127.0.0.1:1' }).url()).toBe(
      'ws://127.0.0.1:1/stream?streams=btcusdt@trade/btcusdt@bookTicker&timeUnit=MICROSECOND',
    );
  });

  it('maps a trade exactly: microseconds to nanoseconds, buyer-is-maker to a selling taker', () => {
    const m = new BinanceMapper(o);
    expect(m.map(f.trade, RX).ticks).toEqual([
      {
        type: 'trade',
        source: 'binance',
        symbol: 'BTCUSDT',
        ts: 1_796_026_767_136_000_000n,
        seq: 12345,
        venue: 'binance',
        price: 91234.56,
        size: 0.001,
        side: 'sell',
      },
    ]);
    expect(m.map(f.trade_next, RX).ticks[0]).toMatchObject({ seq: 12346, side: 'buy', size: 0.25 });
    const gap = m.map(f.trade_after_gap, RX);
    expect(gap.events).toEqual([
      { kind: 'gap', symbol: 'BTCUSDT', detail: '3 trade ids missing before 12350' },
    ]);
  });

  it('stamps a book ticker with the receive time and marks its venue', () => {
    const m = new BinanceMapper(o);
    expect(m.map(f.bookTicker, RX).ticks).toEqual([
      {
        type: 'quote',
        source: 'binance',
        symbol: 'BTCUSDT',
        ts: RX,
        seq: 400900217,
        venue: 'binance@rx',
        bidPrice: 91234.56,
        bidSize: 31.21,
        askPrice: 91234.57,
        askSize: 40.66,
      },
    ]);
    // The same update seen again (after a reconnect) is dropped, whatever its receive time.
    expect(m.map(f.bookTicker, RX + 5n).ticks).toEqual([]);
  });

  it('reports request errors, ignores results and unknown streams', () => {
    const m = new BinanceMapper(o);
    expect(m.map(f.error, RX).events).toEqual([
      { kind: 'error', detail: '2 Invalid request: unknown stream' },
    ]);
    expect(m.map(f.result, RX)).toEqual({ ticks: [], events: [] });
    expect(m.map(f.unknown, RX)).toEqual({ ticks: [], events: [] });
  });
});

describe('Kraken mapper', () => {
  const f = fixtures('kraken');
  const o: MapperOptions = { symbols: ['BTC/USD'], channels: ['trades', 'quotes'] };

  it('maps every trade of an update, with the taker side and microsecond time', () => {
    const r = new KrakenMapper(o).map(f.trade, RX);
    expect(r.ticks).toEqual([
      {
        type: 'trade',
        source: 'kraken',
        symbol: 'BTC/USD',
        ts: 1_796_026_767_925_533_000n,
        seq: 4665846,
        venue: 'kraken',
        price: 91234.5,
        size: 0.00125,
        side: 'buy',
      },
      {
        type: 'trade',
        source: 'kraken',
        symbol: 'BTC/USD',
        ts: 1_796_026_767_925_533_000n,
        seq: 4665847,
        venue: 'kraken',
        price: 91234.4,
        size: 0.5,
        side: 'sell',
      },
    ]);
  });

  it('reports a gap in trade ids', () => {
    const m = new KrakenMapper(o);
    m.map(f.trade, RX);
    expect(m.map(f.trade_after_gap, RX).events).toEqual([
      { kind: 'gap', symbol: 'BTC/USD', detail: '2 trade ids missing before 4665850' },
    ]);
  });

  it('maps a ticker: receive time and marked venue without a timestamp, exchange time with one', () => {
    const m = new KrakenMapper(o);
    const [rx] = m.map(f.ticker, RX).ticks;
    expect(rx).toEqual({
      type: 'quote',
      source: 'kraken',
      symbol: 'BTC/USD',
      ts: RX,
      seq: contentSeq('BTC/USD', 91234.4, 0.83, 91234.5, 1.25),
      venue: 'kraken@rx',
      bidPrice: 91234.4,
      bidSize: 0.83,
      askPrice: 91234.5,
      askSize: 1.25,
    });
    const [stamped] = m.map(f.ticker_timestamped, RX).ticks;
    expect(stamped).toMatchObject({ ts: 1_796_026_770_123_456_000n, venue: 'kraken' });
  });

  it('is fatal on a refused subscription, quiet on status, heartbeat and acknowledgements', () => {
    const m = new KrakenMapper(o);
    expect(m.map(f.subscribe_error, RX).fatal).toBe(
      'Kraken refused the subscription: Currency pair not supported NOPE/USD (NOPE/USD)',
    );
    expect(m.map(f.status, RX).ticks).toEqual([]);
    expect(m.map(f.heartbeat, RX)).toEqual({ ticks: [], events: [] });
    expect(m.map(f.subscribed_trade, RX).events.map((e) => e.kind)).toEqual(['subscribed']);
  });

  it('subscribes per channel with bbo tickers and unsubscribes likewise', () => {
    const m = new KrakenMapper(o);
    expect(m.onOpen().map((s) => JSON.parse(s) as unknown)).toEqual([
      { method: 'subscribe', params: { channel: 'trade', symbol: ['BTC/USD'], snapshot: false }, req_id: 1 },
      {
        method: 'subscribe',
        params: { channel: 'ticker', symbol: ['BTC/USD'], event_trigger: 'bbo' },
        req_id: 2,
      },
    ]);
    expect(m.onClose().map((s) => (JSON.parse(s) as { method: string }).method)).toEqual([
      'unsubscribe',
      'unsubscribe',
    ]);
  });
});

describe('Alpaca mapper', () => {
  const f = fixtures('alpaca');
  const o = {
    symbols: ['AAPL'],
    channels: ['trades', 'quotes'] as const,
    feed: 'iex' as const,
    keyId: 'PKTESTKEY',
    secretKey: 'not-a-real-secret',
  };

  it('authenticates first, and subscribes once authenticated', () => {
    const m = new AlpacaMapper({ ...o, channels: [...o.channels] });
    expect(JSON.parse(m.onOpen()[0]!)).toEqual({
      action: 'auth',
      key: 'PKTESTKEY',
      secret: 'not-a-real-secret',
    });
    expect(m.map(f.connected, RX).send).toBeUndefined();
    expect(m.map(f.authenticated, RX).send?.map((s) => JSON.parse(s) as unknown)).toEqual([
      { action: 'subscribe', trades: ['AAPL'], quotes: ['AAPL'] },
    ]);
  });

  it('maps trades and quotes with nanosecond times', () => {
    const m = new AlpacaMapper({ ...o, channels: [...o.channels] });
    const r = m.map(f.trades_and_quote, RX);
    expect(r.ticks).toEqual([
      {
        type: 'trade',
        source: 'alpaca',
        symbol: 'AAPL',
        ts: 1_796_053_904_208_000_123n,
        seq: 96921,
        venue: 'V',
        price: 226.55,
        size: 100,
        side: '',
      },
      {
        type: 'quote',
        source: 'alpaca',
        symbol: 'AAPL',
        ts: 1_796_053_905_335_689_322n,
        seq: contentSeq('2026-11-30T15:51:45.335689322Z', 'V', 'V', 226.54, 2, 226.56, 4),
        venue: 'iex',
        bidPrice: 226.54,
        bidSize: 2,
        askPrice: 226.56,
        askSize: 4,
      },
    ]);
    // The same message again maps to the same ticks (same identity: stored once).
    expect(m.map(f.trades_and_quote, RX).ticks).toEqual(r.ticks);
  });

  it('maps a crypto trade with the taker side', () => {
    const m = new AlpacaMapper({ ...o, channels: ['trades'], feed: 'crypto', symbols: ['BTC/USD'] });
    expect(m.map(f.crypto_trade, RX).ticks[0]).toMatchObject({
      symbol: 'BTC/USD',
      venue: 'crypto/us',
      side: 'buy',
      seq: 6151,
      ts: 1_796_053_904_208_123_000n,
    });
  });

  it('keeps the good elements of an array with a bad one, and ignores unknown types', () => {
    const r = new AlpacaMapper({ ...o, channels: [...o.channels] }).map(f.mixed_bad, RX);
    expect(r.ticks.map((t) => t.seq)).toEqual([96923]);
    expect(r.events).toHaveLength(1);
    expect(r.events[0]).toMatchObject({ kind: 'malformed', detail: 'field "p": expected a decimal number' });
  });

  it('is fatal on bad credentials, not on the connection limit', () => {
    const m = new AlpacaMapper({ ...o, channels: [...o.channels] });
    expect(m.map(f.auth_failed, RX).fatal).toBe('Alpaca refused the connection: 402 auth failed');
    expect(m.map(f.connection_limit, RX).fatal).toBeUndefined();
  });

  it('needs a key and secret', () => {
    expect(() => createMapper('alpaca', { symbols: ['AAPL'], channels: ['trades'] })).toThrow(
      /APCA_API_KEY_ID and APCA_API_SECRET_KEY/,
    );
    expect(() => createMapper('nasdaq', { symbols: ['AAPL'], channels: ['trades'] })).toThrow(
      /unknown venue "nasdaq"/,
    );
  });
});

describe('feed helpers', () => {
  it('tracks per-symbol sequences: consecutive, gap, duplicate', () => {
    const s = new SequenceTracker();
    expect(s.check('A', 5)).toBe('ok');
    expect(s.check('A', 6)).toBe('ok');
    expect(s.check('A', 6)).toBe('duplicate');
    expect(s.check('A', 10)).toBe(3);
    expect(s.check('B', 10)).toBe('ok');
  });

  it('converts decimal strings exactly as Number() does, and refuses what is not a plain decimal', () => {
    const random = mulberry32(16);
    const samples = ['0', '00012', '0.1', '0.00000001', '91234.56000000', '999999999999999', '1e-9', '-1.5'];
    for (let i = 0; i < 20_000; i++) {
      const digits = 1 + Math.floor(random() * 16);
      let d = '';
      for (let k = 0; k < digits; k++) d += String(Math.floor(random() * 10));
      const point = Math.floor(random() * (digits + 1));
      samples.push(point === 0 || point === digits ? d : `${d.slice(0, point)}.${d.slice(point)}`);
    }
    for (const v of samples) {
      const fast = plainDecimal(v);
      // The fast path gives Number()'s double or declines; num() gives Number()'s double either way.
      if (!Number.isNaN(fast)) expect(fast, v).toBe(Number(v));
      expect(num({ v }, 'v'), v).toBe(Number(v));
    }
    expect(plainDecimal('9007199254740993')).toBeNaN(); // 16 digits: above 2^53, the general way
    for (const junk of ['', '.5', '5.', '1..2', '0x10', ' 1', '1 ', 'Infinity', '1_000', '+1', '１']) {
      expect(plainDecimal(junk), junk).toBeNaN();
      expect(() => num({ v: junk }, 'v'), junk).toThrow('expected a decimal number');
    }
  });

  it('hashes content: the same parts the same seq, different or shifted parts another', () => {
    expect(contentSeq('BTC/USD', 91234.4, 0.83)).toBe(contentSeq('BTC/USD', 91234.4, 0.83));
    expect(contentSeq('BTC/USD', 0, 1)).toBe(contentSeq('BTC/USD', -0, 1));
    const seqs = new Set([
      contentSeq('BTC/USD', 91234.4, 0.83),
      contentSeq('BTC/USD', 0.83, 91234.4),
      contentSeq('BTC/USD', 91234.41, 0.83),
      contentSeq('BTC/US', 'D', 91234.4, 0.83),
      contentSeq('ETH/USD', 91234.4, 0.83),
    ]);
    expect(seqs.size).toBe(5);
  });

  it('keeps content hashes stable across versions: they are stored ticks’ identities', () => {
    // Values of the first released version: a different hash would store a re-sent quote a second time.
    expect(contentSeq('BTC/USD', 91234.4, 0.83, 91234.5, 1.25)).toBe(3153860027);
    expect(contentSeq('2026-11-30T15:51:45.335689322Z', 'V', 'V', 226.54, 2, 226.56, 4)).toBe(4153727750);
  });

  it('exposes the lag histogram exactly as a prom-client Histogram would', async () => {
    const buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    const reference = new Histogram({
      name: 'reference_lag_seconds',
      help: 'h',
      labelNames: ['venue'],
      buckets,
    });
    try {
      const series = feedMetrics().lag.venue('unit-test-venue');
      for (const v of [0.0005, 0.001, 0.003, 0.2, 7, 11, 0.001, 1e-7, -0.002]) {
        series.observe(v);
        reference.observe({ venue: 'unit-test-venue' }, v);
      }
      const lines = (await register.metrics()).split('\n');
      const ours = lines.filter(
        (l) => l.startsWith('tickstream_feed_lag_seconds') && l.includes('unit-test-venue'),
      );
      const theirs = lines
        .filter((l) => l.startsWith('reference_lag_seconds'))
        .map((l) => l.replace('reference_lag_seconds', 'tickstream_feed_lag_seconds'));
      expect(ours).toHaveLength(buckets.length + 3);
      expect(ours).toEqual(theirs);
      expect(lines).toContain('# TYPE tickstream_feed_lag_seconds histogram');
    } finally {
      register.removeSingleMetric('reference_lag_seconds');
    }
  });

  it('parses --channels strictly', () => {
    expect(parseChannels('quotes,trades,quotes')).toEqual(['quotes', 'trades']);
    expect(() => parseChannels('trades,book')).toThrow('--channels: "book" is not one of trades, quotes');
  });
});
