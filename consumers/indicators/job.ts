import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import { withClient, type PgPool } from '../../shared/pg.ts';
import { orThrow, Script, type RedisClient } from '../../shared/redis.ts';
import { TIMEFRAME_NS, type TimeframeName } from '../bars/aggregate.ts';
import { barIdentityFields } from '../bars/store.ts';
import { computeAt, INDICATOR_COUNT, paramsKey, paramsOf, VALUE_NAMES } from './compute.ts';
import { IndicatorStore, rowOf, type IndicatorRow } from './store.ts';

/**
 * One indicator job: for every active symbol, the indicators of its newest `recentBars` closed bars of one
 * timeframe, each from the window of bars ending at it (compute.ts), into PostgreSQL and Redis.
 *
 * CPU and lock renewal: symbols are processed in chunks; each chunk is one query, a few milliseconds of math,
 * one upsert and one Redis pipeline, and the job yields to the event loop between chunks, so BullMQ's lock
 * renewal timer is never starved however many symbols there are. Progress is reported per chunk.
 *
 * Idempotent and deterministic: values are a function of stored bars, rows are keyed by bar, and the upsert
 * writes only changed rows; the Redis hash only moves forward in bar time.
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
  const started = Date.now();
  const { pool, redis, settings } = deps;
  const tf = data.tf;
  const tfNs = TIMEFRAME_NS[tf];
  const params = paramsOf(settings);
  const pkey = paramsKey(params);
  const store = new IndicatorStore(deps.schema);
  const symbols = await withClient(pool, (c) => store.activeSymbols(c, settings.activeWindowMs));
  const result: IndicatorJobResult = {
    tf,
    symbols: symbols.length,
    computed: 0,
    written: 0,
    warmingUp: 0,
    ms: 0,
  };
  const limit = settings.window + settings.recentBars - 1;
  // VWAP(n) of the newest bars needs volumes of the newest n + recentBars - 1 bars only.
  const volumeBars = settings.vwapPeriod + settings.recentBars - 1;
  for (let i = 0; i < symbols.length; i += settings.chunkSymbols) {
    const chunk = symbols.slice(i, i + settings.chunkSymbols);
    const bars = await withClient(pool, (c) => store.closedBars(c, tf, chunk, limit, volumeBars));
    const rows: IndicatorRow[] = [];
    const latest: IndicatorRow[] = [];
    for (const [symbol, series] of bars) {
      const from = Math.max(0, series.length - settings.recentBars);
      let row: IndicatorRow | undefined;
      for (let j = from; j < series.length; j++) {
        const r = computeAt(series, series[j]!.start, tfNs, settings.window, settings.gaps, params);
        row = rowOf(symbol, tf, r, pkey);
        rows.push(row);
        if (r.status !== 'ok') result.warmingUp++;
      }
      if (row !== undefined) latest.push(row);
    }
    result.computed += rows.length;
    result.written += await withClient(pool, (c) => store.upsert(c, tf, rows));
    await projectLatest(redis, settings.keyPrefix, latest);
    await progress(Math.round(((i + chunk.length) * 100) / symbols.length));
    await yieldToLoop();
  }
  result.ms = Date.now() - started;
  deps.log.debug({ ...result, indicators: result.computed * INDICATOR_COUNT }, 'indicators computed');
  return result;
}

async function projectLatest(
  redis: RedisClient,
  prefix: string,
  rows: readonly IndicatorRow[],
): Promise<void> {
  if (rows.length === 0) return;
  const calls: [string, ...string[]][] = [];
  const now = String(Date.now());
  for (const r of rows) {
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
    calls.push([indicatorKey(prefix, r.symbol, r.tf), r.start.toString().padStart(20, '0'), ...fields]);
  }
  orThrow(await PROJECT_INDICATORS.runMany(redis, calls));
}
