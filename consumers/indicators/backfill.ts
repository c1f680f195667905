import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import { withClient, type PgPool } from '../../shared/pg.ts';
import type { RedisClient } from '../../shared/redis.ts';
import type { TimeframeName } from '../bars/aggregate.ts';
import { computeSeries, type IndicatorJobResult } from './job.ts';
import { IndicatorStore } from './store.ts';

/**
 * `tickstream indicators backfill` and the indicator half of `tickstream bars rebuild`: compute the indicator
 * row of every closed bar of some symbols and timeframes (computeSeries, the same work as the scheduled jobs).
 *
 * - Without `from`: every closed bar without a row, and every stale row, continuing each series from its newest
 *   row. Resumable: rows commit pass by pass, so a run stopped midway continues where it stopped.
 * - With `from`: the rows from `from` on are recomputed (marked stale first), continuing from the row before
 *   `from` (or from the series' first bar when there is none: a series' state needs its whole history).
 * - `to`: only bars starting before it.
 * Idempotent: values are a function of the stored bars and rows are written only when they change, so a
 * second run writes nothing.
 */

export interface BackfillOptions {
  tfs: readonly TimeframeName[];
  /** Default: every symbol with bars. */
  symbols?: readonly string[] | undefined;
  from?: bigint | undefined;
  to?: bigint | undefined;
  /** Closed bars in the range per timeframe before the work starts, then bars computed as it goes. */
  onTotal?: (bars: number) => void;
  onProgress?: (bars: number) => void;
}

export interface BackfillDeps {
  pool: PgPool;
  redis: RedisClient;
  settings: Config['indicators'];
  schema: string;
  log: Logger;
}

export async function backfillIndicators(
  deps: BackfillDeps,
  o: BackfillOptions,
): Promise<IndicatorJobResult[]> {
  const store = new IndicatorStore(deps.schema);
  const symbols = o.symbols ?? (await withClient(deps.pool, (c) => store.symbolsWithBars(c)));
  const results: IndicatorJobResult[] = [];
  if (o.onTotal !== undefined) {
    let total = 0;
    for (const tf of o.tfs)
      total += await withClient(deps.pool, (c) => store.closedBarCount(c, tf, symbols, o.from, o.to));
    o.onTotal(total);
  }
  for (const tf of o.tfs) {
    if (o.from !== undefined) {
      const from = o.from;
      await withClient(deps.pool, (c) => store.markStale(c, tf, symbols, from));
    }
    results.push(
      await computeSeries(deps, tf, symbols, {
        to: o.to,
        onChunk: (_done, computed) => o.onProgress?.(computed),
      }),
    );
  }
  return results;
}

/** Recompute the stale rows (a rebuild marked them) of these timeframes, optionally only of some symbols. */
export async function recomputeStale(
  deps: BackfillDeps,
  tfs: readonly TimeframeName[],
  symbols?: readonly string[],
): Promise<IndicatorJobResult[]> {
  const store = new IndicatorStore(deps.schema);
  const only = symbols === undefined ? undefined : new Set(symbols);
  const results: IndicatorJobResult[] = [];
  for (const tf of tfs) {
    const stale = (await withClient(deps.pool, (c) => store.dirtySymbols(c, tf))).filter(
      (s) => only === undefined || only.has(s),
    );
    results.push(await computeSeries(deps, tf, stale));
  }
  return results;
}
