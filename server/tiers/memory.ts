import { LRUCache } from 'lru-cache';
import { counter, gauge, histogram } from '../metrics.ts';
import { TierError, withTimeout, type Kind, type Loader, type Outcome, type TierName } from './port.ts';

/**
 * L1: one bounded LRU (lru-cache) per kind, with the kind's TTL, in front of the store tiers (ADR 0011).
 *
 * What it owns:
 * - Read-through: `getMany` answers fresh entries from memory and sends the misses down the loaders (Redis,
 *   then PostgreSQL/QuestDB), each with the tier timeout; a value found fills L1. Store tiers are not filled
 *   from below: the Redis hashes belong to the projector and the bars sink, whose scripts guard them against
 *   regression.
 * - Single flight: a key already being loaded is not loaded again; concurrent callers wait on the one read.
 *   The misses of one call go down as one batch (one round trip per tier).
 * - Grace: expired entries are kept (until the LRU evicts them). When a tier fails or times out, a key that
 *   L1 still holds is served marked stale with its age; a key it does not hold is `unavailable` (503).
 * - Push: `update` changes an entry in place (pub/sub), resetting its age; `invalidate` drops the kinds the
 *   subscription keeps current when it was lost.
 */

export interface Entry<V> {
  value: V;
  /** Clock ms when the value was read from a store or last pushed. */
  at: number;
  source: TierName;
}

export interface MemoryTierOptions {
  ttlMs: Readonly<Record<Kind, number>>;
  max: number;
  timeoutMs: number;
  /** A monotonic clock in ms (tests move it by hand). */
  now?: () => number;
}

export interface KindStats {
  hits: number;
  misses: number;
  coalesced: number;
  stale: number;
  evictions: number;
  size: number;
  hitRatio: number | null;
}

export interface StoreTierStats {
  reads: number;
  keys: number;
  found: number;
  errors: number;
  timeouts: number;
}

export const KINDS: readonly Kind[] = ['quote', 'bar', 'bars', 'indicators', 'history', 'trades'];

type LookupResult = 'hit' | 'miss' | 'coalesced' | 'stale';
const RESULTS: readonly LookupResult[] = ['hit', 'miss', 'coalesced', 'stale'];
/**
 * L1 lookups of every MemoryTier in the process, by kind and result. Plain numbers on the hot path, read into
 * the counter when /metrics is scraped: a prom-client `inc` (label hashing) costs more than the hit it counts.
 */
const lookupCounts = new Map(KINDS.map((kind) => [kind, { hit: 0, miss: 0, coalesced: 0, stale: 0 }]));
counter(
  'tickstream_api_cache_requests_total',
  'L1 lookups by kind and result',
  ['kind', 'result'],
  function collect() {
    this.reset();
    for (const [kind, counts] of lookupCounts)
      for (const result of RESULTS) this.inc({ kind, result }, counts[result]);
  },
);
const evictions = counter('tickstream_api_cache_evictions_total', 'L1 entries evicted (LRU full)', ['kind']);
const entries = gauge('tickstream_api_cache_entries', 'L1 entries held per kind', ['kind']);
const tierReads = counter('tickstream_api_tier_reads_total', 'reads from a store tier, by outcome', [
  'tier',
  'kind',
  'outcome',
]);

const tierSeconds = histogram(
  'tickstream_api_tier_read_seconds',
  'latency of one (batched) read from a store tier',
  ['tier', 'kind'],
  [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
);

export class MemoryTier {
  private readonly caches = new Map<Kind, LRUCache<string, Entry<unknown>>>();
  private readonly inflight = new Map<string, Promise<Outcome<unknown>>>();
  private readonly kindStats = new Map<Kind, Omit<KindStats, 'size' | 'hitRatio'>>();
  private readonly tierStats = new Map<string, StoreTierStats>();
  readonly now: () => number;

  constructor(private readonly options: MemoryTierOptions) {
    const now = options.now ?? (() => performance.now());
    this.now = now;
    for (const kind of KINDS) {
      this.kindStats.set(kind, { hits: 0, misses: 0, coalesced: 0, stale: 0, evictions: 0 });
      this.caches.set(
        kind,
        new LRUCache<string, Entry<unknown>>({
          max: options.max,
          ttl: options.ttlMs[kind],
          ttlResolution: 0,
          perf: { now },
          // Expired entries stay until evicted: they are what grace serves while a store is down.
          noDeleteOnStaleGet: true,
          dispose: (_v, _k, reason) => {
            if (reason === 'evict') {
              this.kindStats.get(kind)!.evictions++;
              evictions.inc({ kind });
            }
          },
        }),
      );
    }
  }

  /**
   * Read `keys` of one kind through L1 and the loaders. Never rejects: each key's outcome says whether it
   * was found (and whether stale), missing everywhere, or unavailable (a tier failed and L1 has nothing).
   */
  async getMany<V>(
    kind: Kind,
    keys: readonly string[],
    loaders: readonly Loader<V>[],
  ): Promise<Map<string, Outcome<V>>> {
    const stats = this.kindStats.get(kind)!;
    if (keys.length === 1) {
      const hit = this.fresh<V>(kind, keys[0]!);
      if (hit !== undefined) return new Map([[keys[0]!, hit]]);
    }
    const out = new Map<string, Outcome<V>>();
    const waits: Promise<unknown>[] = [];
    const todo: string[] = [];
    for (const key of new Set(keys)) {
      const hit = this.fresh<V>(kind, key);
      if (hit !== undefined) {
        out.set(key, hit);
        continue;
      }
      const pending = this.inflight.get(flightId(kind, key)) as Promise<Outcome<V>> | undefined;
      if (pending !== undefined) {
        stats.coalesced++;
        lookupCounts.get(kind)!.coalesced++;
        waits.push(pending.then((o) => out.set(key, o)));
        continue;
      }
      stats.misses++;
      lookupCounts.get(kind)!.miss++;
      todo.push(key);
    }
    if (todo.length > 0) {
      const batch = this.load(kind, todo, loaders);
      for (const key of todo) {
        const id = flightId(kind, key);
        const one = batch.then((m) => m.get(key)!);
        // Registered before any await, so a caller arriving in the same tick already waits on this read.
        this.inflight.set(id, one as Promise<Outcome<unknown>>);
        void one.finally(() => {
          if (this.inflight.get(id) === one) this.inflight.delete(id);
        });
        waits.push(one.then((o) => out.set(key, o)));
      }
    }
    await Promise.all(waits);
    return out;
  }

  /**
   * The hot path: a fresh L1 entry as an outcome (counted as a hit), or undefined (nothing counted; the
   * caller reads through with `getMany`). No batch bookkeeping, no promise.
   */
  fresh<V>(kind: Kind, key: string): Outcome<V> | undefined {
    const e = this.cache(kind).get(key) as Entry<V> | undefined;
    if (e === undefined) return undefined;
    this.kindStats.get(kind)!.hits++;
    lookupCounts.get(kind)!.hit++;
    return { status: 'ok', value: e.value, stale: false, ageMs: this.now() - e.at, source: 'memory' };
  }

  private async load<V>(
    kind: Kind,
    keys: readonly string[],
    loaders: readonly Loader<V>[],
  ): Promise<Map<string, Outcome<V>>> {
    const cache = this.cache(kind);
    const stats = this.kindStats.get(kind)!;
    const out = new Map<string, Outcome<V>>();
    let remaining = [...keys];
    const failures: string[] = [];
    for (const loader of loaders) {
      if (remaining.length === 0) break;
      const ts = this.storeStats(loader.tier, kind);
      ts.reads++;
      ts.keys += remaining.length;
      let found: Map<string, V>;
      const end = tierSeconds.startTimer({ tier: loader.tier, kind });
      try {
        found = await withTimeout(loader.load(remaining), this.options.timeoutMs, loader.tier);
        end();
      } catch (err) {
        const timeout = err instanceof TierError && err.timeout;
        if (timeout) ts.timeouts++;
        else ts.errors++;
        tierReads.inc({ tier: loader.tier, kind, outcome: timeout ? 'timeout' : 'error' });
        failures.push(`${loader.tier} ${timeout ? 'timed out' : 'failed'}`);
        // Grace: what L1 still holds is served marked stale; the rest tries the next tier.
        const next: string[] = [];
        for (const key of remaining) {
          const e = cache.get(key, { allowStale: true }) as Entry<V> | undefined;
          if (e === undefined) {
            next.push(key);
            continue;
          }
          stats.stale++;
          lookupCounts.get(kind)!.stale++;
          out.set(key, {
            status: 'ok',
            value: e.value,
            stale: true,
            ageMs: this.now() - e.at,
            source: 'memory',
          });
        }
        remaining = next;
        continue;
      }
      tierReads.inc({ tier: loader.tier, kind, outcome: 'ok' });
      ts.found += found.size;
      const at = this.now();
      const next: string[] = [];
      for (const key of remaining) {
        const value = found.get(key);
        if (value === undefined) {
          next.push(key);
          continue;
        }
        cache.set(key, { value, at, source: loader.tier });
        out.set(key, { status: 'ok', value, stale: false, ageMs: 0, source: loader.tier });
      }
      remaining = next;
    }
    for (const key of remaining) {
      out.set(
        key,
        failures.length > 0 ? { status: 'unavailable', reason: failures.join(', ') } : { status: 'missing' },
      );
    }
    return out;
  }

  /** The entry as held, fresh or not, without touching its recency. */
  peek<V>(kind: Kind, key: string): Entry<V> | undefined {
    return this.cache(kind).peek(key, { allowStale: true }) as Entry<V> | undefined;
  }

  /**
   * Push: replace an entry in place. `fn` gets the held value (undefined when absent) and returns the new one,
   * or undefined to leave L1 as it is. Returns whether L1 changed.
   */
  update<V>(kind: Kind, key: string, fn: (current: V | undefined) => V | undefined): boolean {
    const cache = this.cache(kind);
    const cur = cache.peek(key, { allowStale: true }) as Entry<V> | undefined;
    const value = fn(cur?.value);
    if (value === undefined) return false;
    cache.set(key, { value, at: this.now(), source: cur?.source ?? 'redis' });
    return true;
  }

  /** Keys of a kind held now (fresh or not). */
  keys(kind: Kind): string[] {
    return [...this.cache(kind).keys()];
  }

  /** Drop everything of these kinds, or the keys `match` selects. Returns how many entries went. */
  invalidate(kinds: readonly Kind[] = KINDS, match?: (key: string) => boolean): number {
    let n = 0;
    for (const kind of kinds) {
      const cache = this.cache(kind);
      if (match === undefined) {
        n += cache.size;
        cache.clear();
        continue;
      }
      for (const key of [...cache.keys()]) {
        if (match(key)) {
          cache.delete(key);
          n++;
        }
      }
    }
    return n;
  }

  stats(): { memory: Record<Kind, KindStats>; tiers: Record<string, StoreTierStats> } {
    const memory = {} as Record<Kind, KindStats>;
    for (const kind of KINDS) {
      const s = this.kindStats.get(kind)!;
      const lookups = s.hits + s.misses + s.coalesced;
      memory[kind] = {
        ...s,
        size: this.cache(kind).size,
        hitRatio: lookups === 0 ? null : Math.round((s.hits / lookups) * 10_000) / 10_000,
      };
    }
    return { memory, tiers: Object.fromEntries(this.tierStats) };
  }

  /** Refresh the size gauges (called before a scrape). */
  exportGauges(): void {
    for (const kind of KINDS) entries.set({ kind }, this.cache(kind).size);
  }

  private cache(kind: Kind): LRUCache<string, Entry<unknown>> {
    return this.caches.get(kind)!;
  }

  private storeStats(tier: TierName, kind: Kind): StoreTierStats {
    const id = `${tier}:${kind}`;
    let s = this.tierStats.get(id);
    if (s === undefined)
      this.tierStats.set(id, (s = { reads: 0, keys: 0, found: 0, errors: 0, timeouts: 0 }));
    return s;
  }
}

function flightId(kind: Kind, key: string): string {
  return `${kind}\u0000${key}`;
}
