import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Quote, Tick, Trade } from '../../shared/model.ts';
import { batch, orThrow, pairs, Script, type RedisClient, type Reply } from '../../shared/redis.ts';
import { SinkError } from '../../shared/errors.ts';
import type { Sink } from '../sink.ts';

/**
 * Latest-quote projector: one Redis hash per symbol (`quote:<SYMBOL>`) with the newest quote and the newest
 * trade, and a pub/sub message on `quotes:<SYMBOL>` whenever it changes.
 *
 * It never regresses. Whether a tick is newer than what is stored is decided inside Redis by a script
 * comparing fixed-width ordering keys (exchange ts, then seq), so two projectors racing, a redelivered batch
 * or a replay of old data cannot overwrite a newer value. Writing the same tick twice changes nothing.
 *
 * Hash fields: symbol, bid, bid_size, ask, ask_size, quote_ts, quote_venue, last, last_size, trade_ts,
 * trade_venue, ts (exchange ns of the newest of the two), updated_at (Redis server ms), q_ord, t_ord.
 */
const SCRIPT = `
local key = KEYS[1]
local cur = redis.call('HMGET', key, 'q_ord', 't_ord', 'quote_ts', 'trade_ts')
local q, t, qts, tts = cur[1] or '', cur[2] or '', cur[3], cur[4]
local set = {}
local function put(...) for _, v in ipairs({...}) do set[#set + 1] = v end end
if ARGV[3] == '1' and q < ARGV[4] then
  q, qts = ARGV[4], ARGV[5]
  put('q_ord', ARGV[4], 'quote_ts', ARGV[5], 'bid', ARGV[6], 'bid_size', ARGV[7], 'ask', ARGV[8],
    'ask_size', ARGV[9], 'quote_venue', ARGV[10])
end
if ARGV[11] == '1' and t < ARGV[12] then
  t, tts = ARGV[12], ARGV[13]
  put('t_ord', ARGV[12], 'trade_ts', ARGV[13], 'last', ARGV[14], 'last_size', ARGV[15], 'trade_venue', ARGV[16])
end
if #set == 0 then return 0 end
local now = redis.call('TIME')
put('symbol', ARGV[2], 'ts', (q >= t) and qts or tts, 'updated_at', tostring(now[1] * 1000 + math.floor(now[2] / 1000)))
redis.call('HSET', key, unpack(set))
local flat = redis.call('HGETALL', key)
local obj = {}
for i = 1, #flat, 2 do obj[flat[i]] = flat[i + 1] end
redis.call('PUBLISH', ARGV[1], cjson.encode(obj))
return 1
`;

const PROJECT = new Script(SCRIPT);

/** Fixed-width so that Lua's byte-wise string comparison orders by (ts, seq). */
export function orderingKey(t: Tick): string {
  return `${t.ts.toString().padStart(19, '0')}:${t.seq.toString().padStart(16, '0')}`;
}

interface Latest {
  quote?: Quote;
  quoteOrd?: string;
  trade?: Trade;
  tradeOrd?: string;
}

export interface QuotesSinkOptions {
  redis: RedisClient;
  settings: Config['quotes'];
  log: Logger;
}

export class QuotesSink implements Sink {
  readonly name = 'quotes';
  private readonly redis: RedisClient;
  private readonly settings: Config['quotes'];
  private staged = new Map<string, Latest>();
  updates = 0;

  constructor(options: QuotesSinkOptions) {
    this.redis = options.redis;
    this.settings = options.settings;
  }

  async start(): Promise<void> {}

  /** Reduce the batch to the newest quote and trade per symbol; only those reach Redis. */
  async write(ticks: readonly Tick[]): Promise<void> {
    for (const t of ticks) {
      let latest = this.staged.get(t.symbol);
      if (latest === undefined) this.staged.set(t.symbol, (latest = {}));
      const ord = orderingKey(t);
      if (t.type === 'quote') {
        if (latest.quoteOrd === undefined || latest.quoteOrd < ord) {
          latest.quote = t;
          latest.quoteOrd = ord;
        }
      } else if (latest.tradeOrd === undefined || latest.tradeOrd < ord) {
        latest.trade = t;
        latest.tradeOrd = ord;
      }
    }
  }

  async flush(): Promise<void> {
    const staged = this.staged;
    this.staged = new Map();
    if (staged.size === 0) return;
    const args: string[][] = [];
    for (const [symbol, l] of staged) {
      const q = l.quote;
      const t = l.trade;
      args.push([
        this.settings.keyPrefix + symbol,
        this.settings.channelPrefix + symbol,
        symbol,
        q ? '1' : '0',
        l.quoteOrd ?? '',
        q ? q.ts.toString() : '',
        q ? String(q.bidPrice) : '',
        q ? String(q.bidSize) : '',
        q ? String(q.askPrice) : '',
        q ? String(q.askSize) : '',
        q ? q.venue || q.source : '',
        t ? '1' : '0',
        l.tradeOrd ?? '',
        t ? t.ts.toString() : '',
        t ? String(t.price) : '',
        t ? String(t.size) : '',
        t ? t.venue || t.source : '',
      ]);
    }
    let results: Reply[];
    try {
      results = await PROJECT.runMany(this.redis, args as [string, ...string[]][]);
    } catch (err) {
      throw new SinkError('quote projection failed', { retriable: true, cause: err });
    }
    for (const [err, changed] of results) {
      // Every failure here is Redis being unavailable or busy: retry the whole (idempotent) batch.
      if (err !== null)
        throw new SinkError(`quote projection failed: ${err.message}`, { retriable: true, cause: err });
      if (changed === 1) this.updates++;
    }
  }

  async close(): Promise<void> {
    await this.flush();
  }
}

/** Read the current quote hashes of these symbols (for `tickstream quote` and tests). */
export async function readQuotes(
  redis: RedisClient,
  settings: Config['quotes'],
  symbols: readonly string[],
): Promise<Map<string, Record<string, string>>> {
  const results = orThrow(
    await batch(
      redis,
      symbols.map((s) => ['HGETALL', settings.keyPrefix + s] as const),
    ),
  );
  const out = new Map<string, Record<string, string>>();
  symbols.forEach((s, i) => {
    const flat = results[i] as string[] | undefined;
    if (flat !== undefined && flat.length > 0)
      out.set(s, Object.fromEntries(pairs(flat)) as Record<string, string>);
  });
  return out;
}

/**
 * Forget the projected quote of these symbols (`tickstream quote --reset`), returning the symbols that had
 * one. The projection never regresses, so a quote stamped in the future (a bad clock, a crafted tick) would
 * hide every real one after it; once it is gone the next real quote or trade sets the symbol again.
 */
export async function resetQuotes(
  redis: RedisClient,
  settings: Config['quotes'],
  symbols: readonly string[],
): Promise<string[]> {
  const results = orThrow(
    await batch(
      redis,
      symbols.map((s) => ['DEL', settings.keyPrefix + s] as const),
    ),
  );
  return symbols.filter((_, i) => Number(results[i]) > 0);
}
