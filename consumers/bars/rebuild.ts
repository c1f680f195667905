import { TickstreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Tick, Trade } from '../../shared/model.ts';
import { inTransaction, withClient, type PgPool } from '../../shared/pg.ts';
import { BarBuilder, mergeAll, type Bar, type BarEvent, type Timeframe } from './aggregate.ts';
import type { BarStore } from './store.ts';

/**
 * Rebuild the bars of a time range from any source of ticks (the archive reader, a file, a test array).
 *
 * The range is widened to whole buckets of the longest timeframe, so that every bar it touches is rebuilt
 * from all of its trades; the source must deliver every trade of the widened range (`alignRange` tells the
 * caller which). In one transaction that keeps the live bars writers waiting: delete the range's bars and
 * ledger rows, then merge the source's trades through the same builder and the same SQL merge as the live
 * sink, and close what the clocks say is closed. Bars are order-independent exact merges, so the result equals
 * what the live path built from the same trades (except `late`, a delivery statistic, which is 0 here when the
 * source is in time order). Duplicate ticks in the source are merged once.
 */

export class RebuildError extends TickstreamError {
  override name = 'RebuildError';
  constructor(message: string, cause?: unknown) {
    super(message, { retriable: false, cause });
  }
}

export interface RebuildRange {
  /** Inclusive start, ns. */
  from: bigint;
  /** Exclusive end, ns. */
  to: bigint;
  /** Only these symbols (default: every symbol in the source). */
  symbols?: readonly string[] | undefined;
}

export interface RebuildResult {
  from: bigint;
  to: bigint;
  trades: number;
  duplicates: number;
  /** Ticks of the source outside the range or the symbols, or quotes: not used. */
  ignored: number;
  barsWritten: number;
  deleted: { bars: number; ledger: number };
  seconds: number;
}

/** Widen [from, to) to whole buckets of the longest timeframe. */
export function alignRange(range: RebuildRange, tfs: readonly Timeframe[]): { from: bigint; to: bigint } {
  if (range.to <= range.from)
    throw new RebuildError(`empty range: to (${range.to}) must be after from (${range.from})`);
  if (range.from < 0n) throw new RebuildError('from must not be before the epoch');
  const longest = tfs.reduce((a, b) => (b.ns > a ? b.ns : a), 0n);
  const from = range.from - (range.from % longest);
  const to = range.to % longest === 0n ? range.to : range.to - (range.to % longest) + longest;
  return { from, to };
}

const FLUSH_BARS = 5000;

export async function rebuildBars(
  pool: PgPool,
  store: BarStore,
  ticks: AsyncIterable<readonly Tick[]>,
  range: RebuildRange,
  options: { log?: Logger; onProgress?: (trades: number) => void } = {},
): Promise<RebuildResult> {
  const started = Date.now();
  const { from, to } = alignRange(range, store.settings.timeframes);
  const only = range.symbols === undefined ? undefined : new Set(range.symbols);
  const result: RebuildResult = {
    from,
    to,
    trades: 0,
    duplicates: 0,
    ignored: 0,
    barsWritten: 0,
    deleted: { bars: 0, ledger: 0 },
    seconds: 0,
  };
  await withClient(pool, (client) =>
    inTransaction(client, async () => {
      await store.lockAll(client);
      // Indicator rows from `from` on are stale for every series the range had bars of, and (below) has now.
      await store.markRangeDirty(client, { from, to, symbols: range.symbols });
      result.deleted = await store.deleteRange(client, { from, to, symbols: range.symbols });
      const builder = new BarBuilder(store.settings);
      const pending = new Map<string, Bar>();
      const events: BarEvent[] = [];
      const symbolMax = new Map<string, bigint>();
      const flushPending = async () => {
        if (pending.size === 0) return;
        result.barsWritten += (await store.mergeBars(client, [...pending.values()])).length;
        pending.clear();
      };
      for await (const batch of ticks) {
        const trades: Trade[] = [];
        for (const t of batch) {
          if (
            t.type !== 'trade' ||
            t.ts < from ||
            t.ts >= to ||
            (only !== undefined && !only.has(t.symbol))
          ) {
            result.ignored++;
            continue;
          }
          trades.push(t);
        }
        const fresh = await store.insertLedger(client, trades);
        result.duplicates += trades.length - fresh.length;
        result.trades += fresh.length;
        for (const t of fresh) {
          builder.add(t, events);
          const cur = symbolMax.get(t.symbol);
          if (cur === undefined || t.ts > cur) symbolMax.set(t.symbol, t.ts);
        }
        mergeAll(
          events.map((e) => e.bar),
          pending,
        );
        events.length = 0;
        if (pending.size >= FLUSH_BARS) await flushPending();
        options.onProgress?.(result.trades);
      }
      builder.drain(events);
      mergeAll(
        events.map((e) => e.bar),
        pending,
      );
      await flushPending();
      const clockMax = new Map<string, bigint>();
      for (const key of builder.clockKeys()) {
        const v = builder.clockOf(key);
        if (v !== undefined) clockMax.set(key, v);
      }
      await store.lockClocks(client, [...clockMax.keys()]);
      await store.advanceClocks(client, clockMax, symbolMax);
      await store.closeDue(client, [...clockMax.keys()]);
      await store.markRangeDirty(client, { from, to, symbols: range.symbols });
    }),
  );
  result.seconds = (Date.now() - started) / 1000;
  options.log?.info(
    {
      from: from.toString(),
      to: to.toString(),
      trades: result.trades,
      duplicates: result.duplicates,
      barsWritten: result.barsWritten,
      deleted: result.deleted,
      seconds: result.seconds,
    },
    'bars rebuilt',
  );
  return result;
}

/** An in-memory tick source (tests, tools): yields the ticks in batches of `size`. */
export async function* batchesOf(ticks: readonly Tick[], size = 1000): AsyncIterable<readonly Tick[]> {
  for (let i = 0; i < ticks.length; i += size) yield ticks.slice(i, i + size);
}
