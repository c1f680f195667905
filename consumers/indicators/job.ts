import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import { inTransaction, withClient, type PgClient, type PgPool } from '../../shared/pg.ts';
import { batch, orThrow, Script, type RedisClient } from '../../shared/redis.ts';
import { TIMEFRAME_NS, type TimeframeName } from '../bars/aggregate.ts';
import { barIdentityFields } from '../bars/store.ts';
import {
  historyBars,
  INDICATOR_COUNT,
  paramsKey,
  paramsOf,
  SeriesComputer,
  VALUE_NAMES,
  type SeriesPoint,
} from './compute.ts';
import { IndicatorStore, INT8_MAX, rowOf, type IndicatorRow, type SeriesHead } from './store.ts';

/**
 * One indicator job: for every active symbol (and every symbol whose rows a late trade or a rebuild made
 * stale), the indicators of each closed bar of one timeframe that has no row yet, or a stale one, continuing
 * the series from the state stored with the previous bar's row (compute.ts SeriesComputer): O(1) per new bar,
 * equal to TA-Lib over the symbol's whole history. `computeSeries` is the same work for any symbols and range
 * (`tickstream indicators backfill`, `tickstream bars rebuild`).
 *
 * Consistency: a chunk of series is computed in one transaction holding an advisory lock per series, so two
 * writers (two jobs, a job and a backfill) never interleave their reads and writes of one series. A bars
 * transaction that amends a closed bar marks its series stale from that bar (indicator_dirty) in the same
 * commit; the pass that recomputes it removes the mark only if no newer mark replaced it. Rows are keyed by
 * bar and written only when their values or state changed, so running anything twice writes nothing.
 *
 * CPU and lock renewal: the job yields to the event loop between passes (a chunk of symbols, a bounded number
 * of bars each), so BullMQ's lock renewal timer is never starved. Progress is reported per chunk.
 */

export interface IndicatorJobData {
  tf: TimeframeName;
}

export interface IndicatorJobResult {
  tf: TimeframeName;
  symbols: number;
  /** (symbol, bar) pairs computed. */
  computed: number;
  /** Rows inserted or changed in PostgreSQL. */
  written: number;
  /** Computed rows with some value not available yet. */
  warmingUp: number;
  /** Rows removed because their bar is gone (a rebuild). */
  deleted: number;
  ms: number;
}

export interface IndicatorJobDeps {
  pool: PgPool;
  redis: RedisClient;
  settings: Config['indicators'];
  schema: string;
  log: Logger;
}

const PROJECT_INDICATORS = new Script(`
local cur = redis.call('HGET', KEYS[1], 'start_key')
if cur and cur > ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'start_key', ARGV[1], unpack(ARGV, 2))
return 1
`);

export function indicatorKey(prefix: string, symbol: string, tf: TimeframeName): string {
  return `${prefix}${symbol}:${tf}`;
}

export function isTimeframe(v: unknown): v is TimeframeName {
  return typeof v === 'string' && Object.hasOwn(TIMEFRAME_NS, v);
}

export async function runIndicatorJob(
  deps: IndicatorJobDeps,
  data: IndicatorJobData,
  progress: (percent: number) => Promise<void> = async () => undefined,
): Promise<IndicatorJobResult> {
  const store = new IndicatorStore(deps.schema);
  const symbols = await withClient(deps.pool, async (c) => {
    const active = await store.activeSymbols(c, deps.settings.activeWindowMs);
    const dirty = await store.dirtySymbols(c, data.tf);
    return [...new Set([...active, ...dirty])].sort();
  });
  const result = await computeSeries(deps, data.tf, symbols, {
    onChunk: (done) => progress(Math.round((done * 100) / Math.max(1, symbols.length))),
  });
  deps.log.debug({ ...result, indicators: result.computed * INDICATOR_COUNT }, 'indicators computed');
  return result;
}

export interface SeriesRunOptions {
  /** Only bars starting before this (default: all). */
  to?: bigint | undefined;
  /** Bars per symbol and pass (default: 50,000 spread over the chunk, at least 100). */
  barsPerPass?: number | undefined;
  /** After each pass: symbols finished so far, bars computed by the pass. */
  onChunk?: (symbolsDone: number, computed: number) => Promise<void> | void;
}

/** Compute (or recompute where stale) the indicator rows of these symbols' closed bars of one timeframe. */
export async function computeSeries(
  deps: IndicatorJobDeps,
  tf: TimeframeName,
  symbols: readonly string[],
  options: SeriesRunOptions = {},
): Promise<IndicatorJobResult> {
  const started = Date.now();
  const { settings } = deps;
  const result: IndicatorJobResult = {
    tf,
    symbols: symbols.length,
    computed: 0,
    written: 0,
    warmingUp: 0,
    deleted: 0,
    ms: 0,
  };
  let done = 0;
  for (let i = 0; i < symbols.length; i += settings.chunkSymbols) {
    const chunk = symbols.slice(i, i + settings.chunkSymbols);
    let pending = chunk;
    while (pending.length > 0) {
      const pass = await withClient(deps.pool, (c) =>
        inTransaction(c, () => computePass(c, deps, tf, pending, options)),
      );
      result.computed += pass.computed;
      result.written += pass.written.length;
      result.warmingUp += pass.warmingUp;
      result.deleted += pass.deleted;
      await projectLatest(deps.redis, settings, pass.latest, pass.written);
      pending = pass.more;
      await options.onChunk?.(done + chunk.length - pending.length, pass.computed);
      await yieldToLoop();
    }
    done += chunk.length;
  }
  result.ms = Date.now() - started;
  return result;
}

interface PassResult {
  computed: number;
  warmingUp: number;
  deleted: number;
  written: IndicatorRow[];
  /** The newest computed row of each symbol. */
  latest: IndicatorRow[];
  /** Symbols with more bars than one pass takes. */
  more: string[];
}

async function computePass(
  c: PgClient,
  deps: IndicatorJobDeps,
  tf: TimeframeName,
  symbols: readonly string[],
  options: SeriesRunOptions,
): Promise<PassResult> {
  const { settings } = deps;
  const store = new IndicatorStore(deps.schema);
  const params = paramsOf(settings);
  const pkey = paramsKey(params);
  const tfNs = TIMEFRAME_NS[tf];
  const limit = options.barsPerPass ?? Math.max(100, Math.floor(50_000 / symbols.length));
  const out: PassResult = { computed: 0, warmingUp: 0, deleted: 0, written: [], latest: [], more: [] };
  await c.query('SET LOCAL jit = off');
  await store.lockSeries(c, tf, symbols);
  const heads = await store.seriesHeads(c, tf, symbols);
  const plans: {
    symbol: string;
    after: bigint;
    history: number;
    from: SeriesPoint | undefined;
    dirty: SeriesHead['dirty'];
  }[] = [];
  for (const head of heads) {
    let prev = head.newest;
    if (head.dirty !== undefined && prev !== undefined && head.dirty.from <= prev.start)
      prev = await store.rowBefore(c, tf, head.symbol, head.dirty.from);
    // A row without state (written before state was carried) or with other parameters cannot be continued:
    // the series is computed again from its first bar.
    const from =
      prev !== undefined && prev.state !== undefined && prev.params === pkey
        ? { start: prev.start, state: prev.state }
        : undefined;
    plans.push({
      symbol: head.symbol,
      after: from?.start ?? -1n,
      history: from === undefined ? 0 : historyBars(params),
      from,
      dirty: head.dirty,
    });
  }
  const bars = await store.seriesBars(c, tf, plans, limit, options.to ?? INT8_MAX);
  const rows: IndicatorRow[] = [];
  for (const plan of plans) {
    const list = bars.get(plan.symbol) ?? [];
    const split = list.findIndex((b) => b.start > plan.after);
    const history = split < 0 ? list : list.slice(0, split);
    const fresh = split < 0 ? [] : list.slice(split);
    const series = new SeriesComputer(params, tfNs, settings.gaps, plan.from, history);
    let row: IndicatorRow | undefined;
    for (const bar of fresh) {
      const r = series.next(bar);
      row = { ...rowOf(plan.symbol, tf, r, pkey), state: r.state };
      rows.push(row);
      if (r.status !== 'ok') out.warmingUp++;
    }
    if (row !== undefined) out.latest.push(row);
    const full = fresh.length >= limit;
    if (full) out.more.push(plan.symbol);
    if (plan.dirty !== undefined) {
      out.deleted += await store.deleteOrphans(c, tf, plan.symbol, plan.after);
      await store.settleDirty(
        c,
        tf,
        plan.symbol,
        plan.dirty.rev,
        full ? fresh.at(-1)!.start + 1n : undefined,
      );
    }
  }
  out.computed = rows.length;
  const written = new Set(
    (await store.write(c, tf, rows)).map((w) => `${w.symbol}\u0000${w.start.toString()}`),
  );
  out.written = rows.filter((r) => written.has(`${r.symbol}\u0000${r.start.toString()}`));
  return out;
}

/**
 * The newest row of each symbol into its Redis hash (which only moves forward in bar time), and the newest row
 * written of each symbol published on `<channelPrefix><symbol>:<tf>`: one message per symbol and pass.
 */
async function projectLatest(
  redis: RedisClient,
  settings: Config['indicators'],
  latest: readonly IndicatorRow[],
  written: readonly IndicatorRow[],
): Promise<void> {
  if (latest.length === 0 && written.length === 0) return;
  const calls: [string, ...string[]][] = [];
  const now = String(Date.now());
  for (const r of latest) {
    const fields: string[] = [
      ...barIdentityFields(r.symbol, r.tf, r.start),
      'status',
      r.status,
      'bars',
      String(r.bars),
      'filled',
      String(r.filled),
      'params',
      r.params,
      'computed_at',
      now,
    ];
    // "Not available" is an empty field, never a number.
    for (const k of VALUE_NAMES) fields.push(k, r.values[k] === null ? '' : String(r.values[k]));
    calls.push([
      indicatorKey(settings.keyPrefix, r.symbol, r.tf),
      r.start.toString().padStart(20, '0'),
      ...fields,
    ]);
  }
  orThrow(await PROJECT_INDICATORS.runMany(redis, calls));
  const newest = new Map<string, IndicatorRow>();
  for (const r of written) {
    const cur = newest.get(r.symbol);
    if (cur === undefined || r.start > cur.start) newest.set(r.symbol, r);
  }
  orThrow(
    await batch(
      redis,
      [...newest.values()].map((r) => [
        'PUBLISH',
        indicatorKey(settings.channelPrefix, r.symbol, r.tf),
        indicatorMessage(r),
      ]),
    ),
  );
}

/** The pub/sub message of an indicator row: its values (null when not available) and what names its bar. */
export function indicatorMessage(r: IndicatorRow): string {
  return JSON.stringify({
    symbol: r.symbol,
    tf: r.tf,
    start: r.start.toString(),
    time: new Date(Number(r.start / 1_000_000n)).toISOString(),
    status: r.status,
    ...r.values,
  });
}
