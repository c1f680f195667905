import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Quote, Tick, Trade } from '../../shared/model.ts';
import { batch, isCluster, orThrow, pairs, Script, type RedisClient } from '../../shared/redis.ts';
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
/**
 * Arguments per symbol of one call (see flush), after two for the whole call: the channel prefix and the length
 * of the key prefix (a symbol is its key without the prefix). Lean on purpose: Redis reads a client's commands
 * 16 KiB at a time, one read per turn of its event loop, so every byte a flush sends is a share of a turn in
 * which the other groups' commands run too (docs/architecture.md, "Latency while everything runs").
 */
const ARGS_PER_KEY = 10;

const SCRIPT = `
local function digits(ord)
  local d = string.gsub(string.sub(ord, 1, 19), '^0+', '')
  if d == '' then return '0' end
  return d
end
local now = redis.call('TIME')
local updated = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
local channelPrefix, keyPrefixLength = ARGV[1], tonumber(ARGV[2])
local changed = 0
for k = 1, #KEYS do
  local key = KEYS[k]
  local a = 2 + (k - 1) * ${ARGS_PER_KEY}
  -- One read of the whole hash: the ordering keys to compare, and the message to publish after the update.
  local flat = redis.call('HGETALL', key)
  local obj = {}
  for i = 1, #flat, 2 do obj[flat[i]] = flat[i + 1] end
  local q, t, qts, tts = obj.q_ord or '', obj.t_ord or '', obj.quote_ts, obj.trade_ts
  local set = {}
  local n = 0
  local qo, to = ARGV[a + 1], ARGV[a + 7]
  if qo ~= '' and q < qo then
    q, qts = qo, digits(qo)
    set[1], set[2], set[3], set[4], set[5], set[6], set[7] = 'q_ord', qo, 'quote_ts', qts, 'bid', ARGV[a + 2], 'bid_size'
    set[8], set[9], set[10], set[11], set[12], set[13], set[14] =
      ARGV[a + 3], 'ask', ARGV[a + 4], 'ask_size', ARGV[a + 5], 'quote_venue', ARGV[a + 6]
    n = 14
  end
  if to ~= '' and t < to then
    t, tts = to, digits(to)
    set[n + 1], set[n + 2], set[n + 3], set[n + 4], set[n + 5] = 't_ord', to, 'trade_ts', tts, 'last'
    set[n + 6], set[n + 7], set[n + 8], set[n + 9], set[n + 10] =
      ARGV[a + 8], 'last_size', ARGV[a + 9], 'trade_venue', ARGV[a + 10]
    n = n + 10
  end
  if n > 0 then
    local symbol = string.sub(key, keyPrefixLength + 1)
    set[n + 1], set[n + 2], set[n + 3], set[n + 4], set[n + 5], set[n + 6] =
      'symbol', symbol, 'ts', (q >= t) and qts or tts, 'updated_at', updated
    redis.call('HSET', key, unpack(set))
    for i = 1, n + 6, 2 do obj[set[i]] = set[i + 1] end
    redis.call('PUBLISH', channelPrefix .. symbol, cjson.encode(obj))
    changed = changed + 1
  end
end
return changed
`;

const PROJECT = new Script(SCRIPT);

/**
 * Symbols per script call on a single Redis (under Cluster, one: the keys lie in other slots). One call for
 * many symbols rather than a pipeline of one call each: a command per symbol cost more in this process
 * (building and writing each command, a socket write apiece) than the projection costs Redis, and 100
 * symbols hold Redis for well under a millisecond.
 */
const PROJECT_CHUNK = 100;

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
    const keys: string[] = [];
    const args: string[] = [];
    for (const [symbol, l] of staged) {
      const q = l.quote;
      const t = l.trade;
      keys.push(this.settings.keyPrefix + symbol);
      args.push(
        q ? l.quoteOrd! : '',
        q ? String(q.bidPrice) : '',
        q ? String(q.bidSize) : '',
        q ? String(q.askPrice) : '',
        q ? String(q.askSize) : '',
        q ? q.venue || q.source : '',
        t ? l.tradeOrd! : '',
        t ? String(t.price) : '',
        t ? String(t.size) : '',
        t ? t.venue || t.source : '',
      );
    }
    const head = [this.settings.channelPrefix, String(Buffer.byteLength(this.settings.keyPrefix))];
    const chunk = isCluster(this.redis) ? 1 : PROJECT_CHUNK;
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < keys.length; i += chunk) {
      calls.push(
        PROJECT.runKeys(this.redis, keys.slice(i, i + chunk), [
          ...head,
          ...args.slice(i * ARGS_PER_KEY, (i + chunk) * ARGS_PER_KEY),
        ]),
      );
    }
    // Every failure here is Redis being unavailable or busy: retry the whole (idempotent) batch.
    try {
      for (const changed of await Promise.all(calls)) this.updates += Number(changed);
    } catch (err) {
      throw new SinkError('quote projection failed', { retriable: true, cause: err });
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
