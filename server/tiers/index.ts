import type { MemoryTier } from './memory.ts';
import type { PostgresTier } from './postgres.ts';
import type { QuestDbTier } from './questdb.ts';
import type { RedisTier } from './redis.ts';
import {
  withTimeout,
  type BarView,
  type IndicatorView,
  type Loader,
  type Outcome,
  type QuoteView,
  type TradePage,
} from './port.ts';

/**
 * The read model: which tiers each resource goes through, in order, and how pushed updates change L1.
 *   quote       L1 → Redis quote hash → PostgreSQL archive (newest quote and trade)
 *   bars        L1 → PostgreSQL bars (newest N), overlaid with the open bar: L1 → Redis bar hash
 *   history     L1 → QuestDB bars when configured, else PostgreSQL bars
 *   indicators  L1 → Redis indicator hash → PostgreSQL indicators
 *   trades      L1 (closed ranges only) → PostgreSQL archive
 */
export type RedisReads = Pick<RedisTier, 'quotes' | 'openBars' | 'indicators' | 'ping'>;
export type PostgresReads = Pick<
  PostgresTier,
  'quotes' | 'recentBars' | 'barsBetween' | 'indicators' | 'trades' | 'activeSymbols' | 'ping'
>;
export type QuestDbReads = Pick<QuestDbTier, 'barsBetween'>;

export interface ReadModelDeps {
  memory: MemoryTier;
  redis: RedisReads;
  postgres: PostgresReads;
  questdb?: QuestDbReads | undefined;
  timeoutMs: number;
  /** Trade pages ending later than this before now are not cached (they may still grow). */
  tradesSettleMs?: number;
}

export interface BarsAnswer {
  bars: BarView[];
  /** Start of the open bar in `bars`, or null. */
  openBar: string | null;
}

export class ReadModel {
  readonly memory: MemoryTier;
  private readonly d: ReadModelDeps;
  /** Limits asked of each symbol:tf, so a pushed bar can update every cached list of it. */
  private readonly barLimits = new Map<string, Set<number>>();

  constructor(deps: ReadModelDeps) {
    this.d = deps;
    this.memory = deps.memory;
  }

  /** One quote: answered from L1 without a promise or a batch when it holds it fresh (the hot path). */
  quote(symbol: string): Outcome<QuoteView> | Promise<Outcome<QuoteView>> {
    return this.memory.fresh<QuoteView>('quote', symbol) ?? this.quotes([symbol]).then((m) => m.get(symbol)!);
  }

  quotes(symbols: readonly string[]): Promise<Map<string, Outcome<QuoteView>>> {
    const { redis, postgres } = this.d;
    return this.memory.getMany<QuoteView>('quote', symbols, [
      { tier: 'redis', load: (keys) => redis.quotes(keys) },
      { tier: 'postgres', load: (keys) => postgres.quotes(keys) },
    ]);
  }

  async bars(symbol: string, tf: string, limit: number): Promise<Outcome<BarsAnswer>> {
    const id = `${symbol}:${tf}`;
    let limits = this.barLimits.get(id);
    if (limits === undefined) this.barLimits.set(id, (limits = new Set()));
    limits.add(limit);
    const { redis, postgres } = this.d;
    const [list, open] = await Promise.all([
      this.memory
        .getMany<BarView[]>(
          'bars',
          [`${id}:${limit}`],
          [
            {
              tier: 'postgres',
              load: async (keys) => {
                const rows = await postgres.recentBars(symbol, tf, limit);
                return rows.length === 0 ? new Map() : new Map([[keys[0]!, rows]]);
              },
            },
          ],
        )
        .then((m) => m.get(`${id}:${limit}`)!),
      this.memory
        .getMany<BarView>('bar', [id], [{ tier: 'redis', load: (keys) => redis.openBars(keys) }])
        .then((m) => m.get(id)!),
    ]);
    if (list.status !== 'ok' && open.status !== 'ok') {
      return list.status === 'unavailable'
        ? list
        : open.status === 'unavailable'
          ? open
          : { status: 'missing' };
    }
    const bars = list.status === 'ok' ? [...list.value] : [];
    if (open.status === 'ok') mergeBar(bars, open.value, limit);
    const last = bars[bars.length - 1];
    const stale = (list.status === 'ok' && list.stale) || (open.status === 'ok' && open.stale);
    const ageMs = Math.max(list.status === 'ok' ? list.ageMs : 0, open.status === 'ok' ? open.ageMs : 0);
    return {
      status: 'ok',
      value: { bars, openBar: last !== undefined && !last.closed ? last.start : null },
      stale,
      ageMs,
      source: list.status === 'ok' ? list.source : open.status === 'ok' ? open.source : 'memory',
    };
  }

  async history(symbol: string, tf: string, fromNs: bigint, toNs: bigint): Promise<Outcome<BarView[]>> {
    const key = `${symbol}:${tf}:${fromNs}:${toNs}`;
    const { postgres, questdb } = this.d;
    const loaders: Loader<BarView[]>[] = [];
    if (questdb !== undefined)
      loaders.push({
        tier: 'questdb',
        load: async (keys) => new Map([[keys[0]!, await questdb.barsBetween(symbol, tf, fromNs, toNs)]]),
      });
    loaders.push({
      tier: 'postgres',
      load: async (keys) => new Map([[keys[0]!, await postgres.barsBetween(symbol, tf, fromNs, toNs)]]),
    });
    return (await this.memory.getMany('history', [key], loaders)).get(key)!;
  }

  async indicators(symbol: string, tf: string): Promise<Outcome<IndicatorView>> {
    const { redis, postgres } = this.d;
    const key = `${symbol}:${tf}`;
    return (
      await this.memory.getMany<IndicatorView>(
        'indicators',
        [key],
        [
          { tier: 'redis', load: (keys) => redis.indicators(keys) },
          { tier: 'postgres', load: (keys) => postgres.indicators(keys) },
        ],
      )
    ).get(key)!;
  }

  async trades(q: Parameters<PostgresReads['trades']>[0]): Promise<Outcome<TradePage>> {
    const { postgres } = this.d;
    const settled = Number(q.toNs / 1_000_000n) < Date.now() - (this.d.tradesSettleMs ?? 60_000);
    if (!settled) {
      try {
        const value = await withTimeout(postgres.trades(q), this.d.timeoutMs, 'postgres');
        return { status: 'ok', value, stale: false, ageMs: 0, source: 'postgres' };
      } catch (err) {
        return {
          status: 'unavailable',
          reason: `postgres: ${err instanceof Error ? err.message : String(err)}`,
        };
      }
    }
    const key = JSON.stringify([q.symbol, q.fromNs.toString(), q.toNs.toString(), q.limit, q.after ?? null]);
    return (
      await this.memory.getMany<TradePage>(
        'trades',
        [key],
        [{ tier: 'postgres', load: async (keys) => new Map([[keys[0]!, await postgres.trades(q)]]) }],
      )
    ).get(key)!;
  }

  /** Fill L1 for the most recently traded symbols: quotes, open bars and indicators of these timeframes. */
  async warm(count: number, timeframes: readonly string[]): Promise<{ symbols: number }> {
    if (count === 0) return { symbols: 0 };
    const symbols = await withTimeout(this.d.postgres.activeSymbols(count), this.d.timeoutMs * 4, 'postgres');
    if (symbols.length === 0) return { symbols: 0 };
    const keys = symbols.flatMap((s) => timeframes.map((tf) => `${s}:${tf}`));
    const { redis } = this.d;
    await Promise.all([
      this.quotes(symbols),
      this.memory.getMany<BarView>('bar', keys, [{ tier: 'redis', load: (k) => redis.openBars(k) }]),
      this.memory.getMany<IndicatorView>('indicators', keys, [
        { tier: 'redis', load: (k) => redis.indicators(k) },
      ]),
    ]);
    return { symbols: symbols.length };
  }

  // Push: pub/sub messages update what L1 holds, never moving a value back in time.

  pushQuote(q: QuoteView): boolean {
    return this.memory.update<QuoteView>('quote', q.symbol, (cur) =>
      cur === undefined || BigInt(q.ts) < BigInt(cur.ts) ? undefined : q,
    );
  }

  pushBar(bar: BarView): boolean {
    const id = `${bar.symbol}:${bar.tf}`;
    let changed = this.memory.update<BarView>('bar', id, (cur) =>
      cur === undefined || BigInt(bar.start) < BigInt(cur.start) ? undefined : bar,
    );
    for (const limit of this.barLimits.get(id) ?? []) {
      changed =
        this.memory.update<BarView[]>('bars', `${id}:${limit}`, (cur) => {
          if (cur === undefined) return undefined;
          const next = [...cur];
          return mergeBar(next, bar, limit) ? next : undefined;
        }) || changed;
    }
    return changed;
  }

  pushIndicators(v: IndicatorView): boolean {
    return this.memory.update<IndicatorView>('indicators', `${v.symbol}:${v.tf}`, (cur) =>
      cur === undefined || BigInt(v.start) < BigInt(cur.start) ? undefined : v,
    );
  }

  /** The subscription was lost: what push kept current may have missed updates. */
  invalidatePushed(): number {
    return this.memory.invalidate(['quote', 'bar', 'bars', 'indicators']);
  }
}

/** Put `bar` into the oldest-first list: replace the bar with its start, or append it if newer. */
function mergeBar(list: BarView[], bar: BarView, limit: number): boolean {
  const start = BigInt(bar.start);
  for (let i = list.length - 1; i >= 0; i--) {
    const s = BigInt(list[i]!.start);
    if (s === start) {
      list[i] = bar;
      return true;
    }
    if (s < start) {
      if (i !== list.length - 1) return false;
      list.push(bar);
      while (list.length > limit) list.shift();
      return true;
    }
  }
  if (list.length === 0) {
    list.push(bar);
    return true;
  }
  return false;
}
