import {
  Collector,
  MappingError,
  contentSeq,
  id,
  isoNs,
  num,
  obj,
  quote,
  safeMap,
  str,
  trade,
  type FeedEvent,
  type FeedMapper,
  type MapResult,
  type MapperOptions,
  type MapperSpec,
} from './mapper.ts';

/**
 * Alpaca market data stream, stocks (`iex` or `sip`) and crypto (`crypto`: the v1beta3 US crypto feed).
 * The key and secret come from the configuration (APCA_API_KEY_ID / APCA_API_SECRET_KEY) and are sent only in
 * the `auth` message; they are never logged. Messages arrive as arrays.
 * - `t` → trades: `i` (the trade id of its exchange) is `seq`, `t` (RFC 3339 with nanoseconds) the exchange
 *   time, `x` the exchange (our `venue`; `crypto/us` for crypto), crypto's `tks` the taker side.
 * - `q` → quotes: no id, so `seq` is a hash of the quote's content; `venue` is the feed.
 * - `success`/`subscription` confirm; `error` 401/402/404/405/409 (credentials, auth timeout, symbol limit,
 *   subscription level) are fatal; 406 (connection limit) and 500 are retried with backoff.
 * Alpaca trade ids are not consecutive across a symbol's trades, so no gap can be detected from them.
 */
export const ALPACA_URLS = {
  iex: 'wss://stream.data.alpaca.markets/v2/iex',
  sip: 'wss://stream.data.alpaca.markets/v2/sip',
  crypto: 'wss://stream.data.alpaca.markets/v1beta3/crypto/us',
} as const;
export type AlpacaFeed = keyof typeof ALPACA_URLS;

export interface AlpacaOptions extends MapperOptions {
  feed: AlpacaFeed;
  keyId: string;
  secretKey: string;
}

const FATAL_CODES = new Set([401, 402, 404, 405, 409]);

export class AlpacaMapper implements FeedMapper {
  readonly venue = 'alpaca';

  constructor(private readonly o: AlpacaOptions) {}

  get spec(): MapperSpec {
    return { module: import.meta.url, name: 'AlpacaMapper', options: this.o };
  }

  url(): string {
    return this.o.url ?? ALPACA_URLS[this.o.feed];
  }

  onOpen(): string[] {
    // The subscription follows the "authenticated" answer (map below).
    return [JSON.stringify({ action: 'auth', key: this.o.keyId, secret: this.o.secretKey })];
  }

  private subscription(action: 'subscribe' | 'unsubscribe'): string {
    return JSON.stringify({
      action,
      ...(this.o.channels.includes('trades') ? { trades: this.o.symbols } : {}),
      ...(this.o.channels.includes('quotes') ? { quotes: this.o.symbols } : {}),
    });
  }

  onClose(): string[] {
    return [this.subscription('unsubscribe')];
  }

  map(message: unknown, receivedNs: bigint): MapResult {
    void receivedNs; // Alpaca stamps every trade and quote with its own time
    return safeMap(() => {
      const items = Array.isArray(message) ? message : [message];
      const c = new Collector();
      const send: string[] = [];
      let fatal: string | undefined;
      for (const item of items) {
        try {
          const m = obj(item, 'message');
          switch (m.T) {
            case 't':
              c.ticks.push(this.trade(m));
              break;
            case 'q':
              c.ticks.push(this.quote(m));
              break;
            case 'success':
              if (m.msg === 'authenticated') send.push(this.subscription('subscribe'));
              break;
            case 'subscription':
              c.events.push({
                kind: 'subscribed',
                detail: JSON.stringify({ trades: m.trades, quotes: m.quotes }),
              });
              break;
            case 'error': {
              const code = Number(m.code);
              const e: FeedEvent = { kind: 'error', detail: `${code} ${String(m.msg)}` };
              c.events.push(e);
              if (FATAL_CODES.has(code)) fatal = `Alpaca refused the connection: ${e.detail}`;
              break;
            }
            default:
              break; // bars, statuses, corrections and future types are not ours
          }
        } catch (err) {
          // One bad element of an array must not drop the others.
          if (!(err instanceof MappingError)) throw err;
          c.events.push({ kind: 'malformed', detail: err.message, raw: JSON.stringify(item) });
        }
      }
      const r = c.result();
      return { ...r, ...(send.length > 0 ? { send } : {}), ...(fatal === undefined ? {} : { fatal }) };
    });
  }

  private trade(m: Record<string, unknown>): ReturnType<typeof trade> {
    const crypto = this.o.feed === 'crypto';
    const tks = m.tks;
    return trade({
      type: 'trade',
      source: this.venue,
      symbol: str(m, 'S'),
      ts: isoNs(m, 't'),
      seq: id(m, 'i'),
      venue: crypto ? 'crypto/us' : typeof m.x === 'string' ? m.x : this.o.feed,
      price: num(m, 'p'),
      size: num(m, 's'),
      side: tks === 'B' ? 'buy' : tks === 'S' ? 'sell' : '',
    });
  }

  private quote(m: Record<string, unknown>): ReturnType<typeof quote> {
    const symbol = str(m, 'S');
    const bidPrice = num(m, 'bp');
    const bidSize = num(m, 'bs');
    const askPrice = num(m, 'ap');
    const askSize = num(m, 'as');
    const t = str(m, 't');
    return quote({
      type: 'quote',
      source: this.venue,
      symbol,
      ts: isoNs(m, 't'),
      seq: contentSeq(t, String(m.bx ?? ''), String(m.ax ?? ''), bidPrice, bidSize, askPrice, askSize),
      venue: this.o.feed === 'crypto' ? 'crypto/us' : this.o.feed,
      bidPrice,
      bidSize,
      askPrice,
      askSize,
    });
  }
}
