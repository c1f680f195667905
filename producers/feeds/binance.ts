import {
  NONE,
  RX_MARK,
  SequenceTracker,
  epochNs,
  id,
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
 * Binance spot public market streams, one combined-stream connection (`/stream?streams=a/b/c`), with
 * `timeUnit=MICROSECOND` so that trade times come in microseconds.
 * - `<symbol>@trade` → trades: `t` (trade id, consecutive per symbol) is `seq`, `T` the trade time; `m` says
 *   the buyer was the maker, so the taker sold.
 * - `<symbol>@bookTicker` → quotes: `u` (order book update id) is `seq`. Spot book tickers carry no time, so
 *   they are stamped with the receive time and their venue is marked `binance@rx`.
 * The server pings every 20 s (ws answers); a connection lives 24 h at most, after which it reconnects.
 */
export const BINANCE_URL = 'wss://stream.binance.com:9443';

export class BinanceMapper implements FeedMapper {
  readonly venue = 'binance';
  private readonly tradeIds = new SequenceTracker();
  private readonly updateIds = new SequenceTracker();

  constructor(private readonly o: MapperOptions) {}

  get spec(): MapperSpec {
    return { module: import.meta.url, name: 'BinanceMapper', options: this.o };
  }

  url(): string {
    const streams: string[] = [];
    for (const s of this.o.symbols) {
      const l = s.toLowerCase();
      if (this.o.channels.includes('trades')) streams.push(`${l}@trade`);
      if (this.o.channels.includes('quotes')) streams.push(`${l}@bookTicker`);
    }
    return `${this.o.url ?? BINANCE_URL}/stream?streams=${streams.join('/')}&timeUnit=MICROSECOND`;
  }

  onOpen(): string[] {
    return []; // the streams are named in the URL
  }

  onClose(): string[] {
    return [];
  }

  map(message: unknown, receivedNs: bigint): MapResult {
    return safeMap(() => {
      const envelope = obj(message, 'message');
      if (envelope.data === undefined) {
        // Replies to SUBSCRIBE-style requests ({result, id}) and errors ({error:{code,msg}}).
        if (envelope.error !== undefined) {
          const e = obj(envelope.error, 'error');
          return { ticks: [], events: [{ kind: 'error', detail: `${String(e.code)} ${String(e.msg)}` }] };
        }
        return NONE;
      }
      const d = obj(envelope.data, 'data');
      if (d.e === 'trade') return this.trade(d);
      if (d.e === undefined && d.u !== undefined && d.b !== undefined) return this.bookTicker(d, receivedNs);
      if (d.e === 'serverShutdown')
        return { ticks: [], events: [{ kind: 'error', detail: 'server shutdown' }] };
      return NONE;
    });
  }

  private trade(d: Record<string, unknown>): MapResult {
    return sequencedTrade(
      this.tradeIds,
      trade({
        type: 'trade',
        source: this.venue,
        symbol: str(d, 's'),
        ts: epochNs(d, 'T', 'us'),
        seq: id(d, 't'),
        venue: 'binance',
        price: num(d, 'p'),
        size: num(d, 'q'),
        side: d.m === true ? 'sell' : d.m === false ? 'buy' : '',
      }),
    );
  }

  private bookTicker(d: Record<string, unknown>, receivedNs: bigint): MapResult {
    return monotonicTick(
      this.updateIds,
      quote({
        type: 'quote',
        source: this.venue,
        symbol: str(d, 's'),
        ts: receivedNs,
        seq: id(d, 'u'),
        venue: `binance${RX_MARK}`,
        bidPrice: num(d, 'b'),
        bidSize: num(d, 'B'),
        askPrice: num(d, 'a'),
        askSize: num(d, 'A'),
      }),
    );
  }
}
