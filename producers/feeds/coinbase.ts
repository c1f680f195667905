import {
  NONE,
  SequenceTracker,
  id,
  isoNs,
  monotonicTick,
  num,
  obj,
  quote,
  safeMap,
  sequencedTrade,
  str,
  trade,
  type FeedMapper,
  type MapResult,
  type MapperOptions,
  type MapperSpec,
} from './mapper.ts';

/**
 * Coinbase Exchange public WebSocket feed (no key needed).
 * - `matches` → trades: `trade_id` is `seq` (consecutive per product, so a jump is a gap); `side` is the
 *   maker's side, so the taker (our `side`) is the opposite; `last_match` (sent on subscribe) is the same
 *   trade as a later replay and maps identically.
 * - `ticker` → quotes: best bid/ask and sizes, `sequence` is `seq`, `time` the exchange time.
 * - `heartbeat` keeps an idle product's connection alive; `last_trade_id` there reveals trades missed on a
 *   quiet product.
 * - `subscriptions` confirms; `error` (e.g. an unknown product) is fatal: a reconnect would be refused too.
 */
export const COINBASE_URL = 'wss://ws-feed.exchange.coinbase.com';

export class CoinbaseMapper implements FeedMapper {
  readonly venue = 'coinbase';
  private readonly tradeIds = new SequenceTracker();
  private readonly quoteSeqs = new SequenceTracker();
  private readonly namedByHeartbeat = new Map<string, number>();

  constructor(private readonly o: MapperOptions) {}

  get spec(): MapperSpec {
    return { module: import.meta.url, name: 'CoinbaseMapper', options: this.o };
  }

  url(): string {
    return this.o.url ?? COINBASE_URL;
  }

  private channels(): string[] {
    const c: string[] = ['heartbeat'];
    if (this.o.channels.includes('trades')) c.push('matches');
    if (this.o.channels.includes('quotes')) c.push('ticker');
    return c;
  }

  onOpen(): string[] {
    return [JSON.stringify({ type: 'subscribe', product_ids: this.o.symbols, channels: this.channels() })];
  }

  onClose(): string[] {
    return [JSON.stringify({ type: 'unsubscribe', product_ids: this.o.symbols, channels: this.channels() })];
  }

  map(message: unknown, receivedNs: bigint): MapResult {
    void receivedNs; // every Coinbase message this mapper turns into ticks carries its exchange time
    return safeMap(() => {
      const m = obj(message, 'message');
      switch (m.type) {
        case 'match':
        case 'last_match':
          return this.match(m);
        case 'ticker':
          return this.ticker(m);
        case 'heartbeat':
          return this.heartbeat(m);
        case 'subscriptions':
          return { ticks: [], events: [{ kind: 'subscribed', detail: JSON.stringify(m.channels ?? []) }] };
        case 'error':
          return {
            ticks: [],
            events: [{ kind: 'error', detail: `${String(m.message)}: ${String(m.reason ?? '')}` }],
            fatal: `Coinbase refused the subscription: ${String(m.message)} ${String(m.reason ?? '')}`.trim(),
          };
        default:
          return NONE;
      }
    });
  }

  private match(m: Record<string, unknown>): MapResult {
    const symbol = str(m, 'product_id');
    const makerSide = str(m, 'side');
    const t = trade({
      type: 'trade',
      source: this.venue,
      symbol,
      ts: isoNs(m, 'time'),
      seq: id(m, 'trade_id'),
      venue: 'coinbase',
      price: num(m, 'price'),
      size: num(m, 'size'),
      side: makerSide === 'sell' ? 'buy' : makerSide === 'buy' ? 'sell' : '',
    });
    return sequencedTrade(this.tradeIds, t);
  }

  private ticker(m: Record<string, unknown>): MapResult {
    const symbol = str(m, 'product_id');
    return monotonicTick(
      this.quoteSeqs,
      quote({
        type: 'quote',
        source: this.venue,
        symbol,
        ts: isoNs(m, 'time'),
        seq: id(m, 'sequence'),
        venue: 'coinbase',
        bidPrice: num(m, 'best_bid'),
        bidSize: num(m, 'best_bid_size'),
        askPrice: num(m, 'best_ask'),
        askSize: num(m, 'best_ask_size'),
      }),
    );
  }

  private heartbeat(m: Record<string, unknown>): MapResult {
    if (!this.o.channels.includes('trades')) return NONE;
    const symbol = str(m, 'product_id');
    const venueLast = id(m, 'last_trade_id');
    // A heartbeat can overtake a match sent just before it on another channel, so a trade id is called lost
    // only when the previous heartbeat (a second earlier) already named it and it has still not arrived.
    const named = this.namedByHeartbeat.get(symbol);
    this.namedByHeartbeat.set(symbol, venueLast);
    const seen = this.tradeIds.last(symbol);
    if (named === undefined || seen === undefined || named <= seen) return NONE;
    this.tradeIds.advance(symbol, named);
    return {
      ticks: [],
      events: [{ kind: 'gap', symbol, detail: `heartbeat: trades ${seen + 1}..${named} not received` }],
    };
  }
}
