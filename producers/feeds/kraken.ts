import {
  Collector,
  NONE,
  RX_MARK,
  MappingError,
  SequenceTracker,
  contentSeq,
  id,
  isoNs,
  num,
  obj,
  quote,
  safeMap,
  str,
  trade,
  type FeedMapper,
  type MapResult,
  type MapperOptions,
  type MapperSpec,
} from './mapper.ts';

/**
 * Kraken spot WebSocket v2 (public, no key).
 * - `trade` → trades: `trade_id` (sequential per pair) is `seq`, `timestamp` (RFC 3339, µs) the exchange
 *   time, `side` the taker's side. Prices come as JSON numbers.
 * - `ticker` → quotes (event_trigger `bbo`: an update on every change of the best bid/offer). A ticker
 *   carries no exchange time unless it has `timestamp`; without one it is stamped with the receive time,
 *   its venue marked `kraken@rx`, and `seq` is a hash of its content.
 * - `heartbeat` arrives every second once subscribed; `status` on connect; a subscribe answer with
 *   `success: false` (unknown pair) is fatal.
 */
export const KRAKEN_URL = 'wss://ws.kraken.com/v2';

const RX_VENUE = `kraken${RX_MARK}`;

export class KrakenMapper implements FeedMapper {
  readonly venue = 'kraken';
  private readonly tradeIds = new SequenceTracker();
  private reqId = 0;

  constructor(private readonly o: MapperOptions) {}

  get spec(): MapperSpec {
    return { module: import.meta.url, name: 'KrakenMapper', options: this.o };
  }

  url(): string {
    return this.o.url ?? KRAKEN_URL;
  }

  private requests(method: 'subscribe' | 'unsubscribe'): string[] {
    const out: string[] = [];
    const symbol = [...this.o.symbols];
    if (this.o.channels.includes('trades'))
      out.push(
        JSON.stringify({
          method,
          params: { channel: 'trade', symbol, ...(method === 'subscribe' ? { snapshot: false } : {}) },
          req_id: ++this.reqId,
        }),
      );
    if (this.o.channels.includes('quotes'))
      out.push(
        JSON.stringify({
          method,
          params: { channel: 'ticker', symbol, ...(method === 'subscribe' ? { event_trigger: 'bbo' } : {}) },
          req_id: ++this.reqId,
        }),
      );
    return out;
  }

  onOpen(): string[] {
    return this.requests('subscribe');
  }

  onClose(): string[] {
    return this.requests('unsubscribe');
  }

  map(message: unknown, receivedNs: bigint): MapResult {
    return safeMap(() => {
      const m = obj(message, 'message');
      if (m.method === 'subscribe') {
        if (m.success === false) {
          const detail = `${String(m.error ?? 'refused')}${m.symbol === undefined ? '' : ` (${String(m.symbol)})`}`;
          return {
            ticks: [],
            events: [{ kind: 'error', detail }],
            fatal: `Kraken refused the subscription: ${detail}`,
          };
        }
        return { ticks: [], events: [{ kind: 'subscribed', detail: JSON.stringify(m.result ?? {}) }] };
      }
      if (m.channel === 'trade' && (m.type === 'update' || m.type === 'snapshot')) return this.trades(m);
      if (m.channel === 'ticker' && (m.type === 'update' || m.type === 'snapshot'))
        return this.tickers(m, receivedNs);
      return NONE; // heartbeat, status, pong, unknown channels
    });
  }

  private rows(m: Record<string, unknown>): readonly unknown[] {
    if (!Array.isArray(m.data)) throw new MappingError('data: expected an array');
    return m.data as unknown[];
  }

  private trades(m: Record<string, unknown>): MapResult {
    const c = new Collector();
    for (const row of this.rows(m)) {
      const r = obj(row, 'data row');
      const side = r.side;
      c.sequencedTrade(
        this.tradeIds,
        trade({
          type: 'trade',
          source: this.venue,
          symbol: str(r, 'symbol'),
          ts: isoNs(r, 'timestamp'),
          seq: id(r, 'trade_id'),
          venue: 'kraken',
          price: num(r, 'price'),
          size: num(r, 'qty'),
          side: side === 'buy' || side === 'sell' ? side : '',
        }),
      );
    }
    return c.result();
  }

  private tickers(m: Record<string, unknown>, receivedNs: bigint): MapResult {
    const c = new Collector();
    for (const row of this.rows(m)) {
      const r = obj(row, 'data row');
      const exchangeTime = typeof r.timestamp === 'string';
      const bidPrice = num(r, 'bid');
      const bidSize = num(r, 'bid_qty');
      const askPrice = num(r, 'ask');
      const askSize = num(r, 'ask_qty');
      const symbol = str(r, 'symbol');
      c.ticks.push(
        quote({
          type: 'quote',
          source: this.venue,
          symbol,
          ts: exchangeTime ? isoNs(r, 'timestamp') : receivedNs,
          seq: contentSeq(symbol, bidPrice, bidSize, askPrice, askSize),
          venue: exchangeTime ? 'kraken' : RX_VENUE,
          bidPrice,
          bidSize,
          askPrice,
          askSize,
        }),
      );
    }
    return c.result();
  }
}
