import type { Config } from '../../shared/config.ts';
import { SinkError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Tick, Trade } from '../../shared/model.ts';
import {
  closePgPool,
  createPgPool,
  inTransaction,
  isRetriablePgError,
  pgErrorCode,
  withClient,
  type PgPool,
} from '../../shared/pg.ts';
import { barsTable } from '../../shared/questdb.ts';
import { isCluster, Script, type RedisClient } from '../../shared/redis.ts';
import { shardOf } from '../../shared/streams.ts';
import { timeframes, type TimeframeName } from '../bars/aggregate.ts';
import { BarsQuestDbOutbox } from '../bars/questdb.ts';
import { BarStore, barIdentityFields, type BarRow, type BarStoreSettings } from '../bars/store.ts';
import { RejectedTicksError, type Sink } from '../sink.ts';
import { assertSchemaCurrent, migrate, migrateOptions } from '../../shared/schema/migrate.ts';

/**
 * Bars sink (consumer group `bars`): OHLCV bars for 1s/1m/5m/1h from trades, in PostgreSQL.
 *
 * flush() runs one transaction through BarStore.applyTrades: the trades' identities go into the ledger, and
 * only trades new to the ledger are merged into the bars, so a redelivered batch changes nothing (exactly-once
 * effect on top of the worker's at-least-once delivery). Bars whose end the watermark has passed are closed in
 * the same transaction; a late trade amends its closed bar and is counted in the bar's `late`.
 *
 * After commit, the newest bar of each touched (symbol, timeframe) is projected into the Redis hash
 * `<keyPrefix><symbol>:<tf>`. The projection never regresses: a script keeps the row with the newest bucket and,
 * within a bucket, the highest revision (a sequence PostgreSQL assigns on every change). A redelivered batch
 * re-projects the stored rows of its symbols, so a crash between commit and projection heals itself.
 *
 * Trades too old for the ledger horizon are refused with a reason (dead letters), never dropped silently.
 * Quotes are ignored.
 *
 * With QuestDB configured, closed bars also go to QuestDB through an outbox (consumers/bars/questdb.ts): a
 * commit that closed or amended bars kicks a push, which runs beside the flush and never fails it.
 */

/**
 * Project many bars in one call. Per key, ARGV holds: start_key, rev_key, channel ('' for none), message, the
 * number of hash fields (name and value counted apart), then the fields. A bar is written only when it is newer
 * (bucket, then revision) than what the hash holds, and only then published.
 */
const PROJECT_BARS = new Script(`
local a = 1
local changed = 0
for i = 1, #KEYS do
  local n = tonumber(ARGV[a + 4])
  local cur = redis.call('HMGET', KEYS[i], 'start_key', 'rev_key')
  if not (cur[1] and (cur[1] > ARGV[a] or (cur[1] == ARGV[a] and cur[2] >= ARGV[a + 1]))) then
    redis.call('HSET', KEYS[i], 'start_key', ARGV[a], 'rev_key', ARGV[a + 1], unpack(ARGV, a + 5, a + 4 + n))
    if ARGV[a + 2] ~= '' then redis.call('PUBLISH', ARGV[a + 2], ARGV[a + 3]) end
    changed = changed + 1
  end
  a = a + 5 + n
end
return changed
`);

/**
 * Bars per projection call on a single Redis (under Cluster, one per call: the keys lie in other slots). A
 * script holds Redis for its whole run: 50 bars take about a millisecond, so the quote projector's reads and
 * acknowledgements wait no longer than that behind one.
 */
const PROJECT_CHUNK = 50;

export interface BarsSinkOptions {
  pool: PgPool;
  /** Whether close() ends the pool. */
  ownsPool: boolean;
  redis: RedisClient;
  store: BarStore;
  keyPrefix: string;
  /** Pub/sub channel prefix of bar updates (`<prefix><symbol>:<tf>`); undefined: no publishing. */
  channelPrefix?: string | undefined;
  pruneIntervalMs: number;
  /** Migrate the schema on start (else require it to be current). */
  migrate?: { settings: Config['postgres'] } | undefined;
  /** Closed bars to QuestDB (when configured); closed by close() before the pool. */
  questdb?: BarsQuestDbOutbox | undefined;
  log: Logger;
}

export interface BarsSinkStats {
  applied: number;
  duplicates: number;
  late: number;
  refused: number;
  closed: number;
  projected: number;
}

export function barStoreSettings(config: Pick<Config, 'bars' | 'streams' | 'postgres'>): BarStoreSettings {
  const shards = config.streams.shards;
  return {
    schema: config.postgres.schema,
    timeframes: timeframes(config.bars.timeframes),
    allowedLatenessNs: BigInt(config.bars.allowedLatenessMs) * 1_000_000n,
    ledgerHorizonNs: BigInt(config.bars.ledgerHorizonMs) * 1_000_000n,
    watermarkKey: config.bars.watermark === 'shard' ? (s) => `shard:${shardOf(s, shards)}` : (s) => s,
  };
}

/** The Redis key of a symbol's current bar. */
export function barKeyOf(prefix: string, symbol: string, tf: TimeframeName): string {
  return `${prefix}${symbol}:${tf}`;
}

/** Trades refused as older than the ledger horizon, and the span of their exchange times (ns). */
export interface HorizonRefusals {
  count: number;
  minTs: bigint | undefined;
  maxTs: bigint | undefined;
}

export class BarsSink implements Sink {
  readonly name = 'bars';
  readonly stats: BarsSinkStats = { applied: 0, duplicates: 0, late: 0, refused: 0, closed: 0, projected: 0 };
  /** What a replay must tell its user to rebuild (`tickstream replay --sink bars`). */
  readonly beyondHorizon: HorizonRefusals = { count: 0, minTs: undefined, maxTs: undefined };
  private readonly o: BarsSinkOptions;
  private staged: Trade[] = [];
  private stagedIndex: number[] = [];
  private written = 0;
  private pruneTimer: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: BarsSinkOptions) {
    this.o = options;
  }

  /** The QuestDB outbox, when QuestDB is configured. */
  get questdb(): BarsQuestDbOutbox | undefined {
    return this.o.questdb;
  }

  async start(): Promise<void> {
    const m = this.o.migrate;
    try {
      if (m !== undefined) await migrate(this.o.pool, migrateOptions(m.settings, this.o.log));
      else await assertSchemaCurrent(this.o.pool, this.o.store.settings.schema);
    } catch (err) {
      throw new SinkError(`bars: schema not ready: ${err instanceof Error ? err.message : String(err)}`, {
        retriable: isRetriablePgError(err),
        cause: err,
      });
    }
    if (this.o.pruneIntervalMs > 0 && this.pruneTimer === undefined) {
      this.pruneTimer = setInterval(() => void this.prune(), this.o.pruneIntervalMs);
      this.pruneTimer.unref();
    }
    this.o.questdb?.start();
  }

  async write(ticks: readonly Tick[]): Promise<void> {
    for (let i = 0; i < ticks.length; i++) {
      const t = ticks[i]!;
      if (t.type !== 'trade') continue;
      this.staged.push(t);
      this.stagedIndex.push(this.written + i);
    }
    this.written += ticks.length;
  }

  async flush(): Promise<void> {
    const trades = this.staged;
    const indexes = this.stagedIndex;
    this.staged = [];
    this.stagedIndex = [];
    this.written = 0;
    if (trades.length === 0) return;
    const { pool, store } = this.o;
    let result;
    try {
      result = await withClient(pool, (client) =>
        inTransaction(client, () => store.applyTrades(client, trades)),
      );
    } catch (err) {
      throw new SinkError(`bars: merge failed: ${err instanceof Error ? err.message : String(err)}`, {
        retriable: isRetriablePgError(err),
        cause: err,
      });
    }
    this.stats.applied += result.applied;
    this.stats.duplicates += result.duplicates;
    this.stats.late += result.late;
    this.stats.closed += result.closed;
    // Closed bars changed: they are in the outbox now (same transaction); the push does not hold this flush.
    if (result.closed > 0 || result.late > 0) this.o.questdb?.kick();
    let rows = result.changed;
    if (result.duplicates > 0) {
      // Some of these trades were merged before: perhaps by a run that died before projecting. Project the
      // stored state of their symbols again (the script ignores anything not newer than what Redis holds).
      const symbols = [...new Set(trades.map((t) => t.symbol))];
      try {
        rows = rows.concat(await withClient(pool, (client) => store.currentBars(client, symbols)));
      } catch (err) {
        throw new SinkError('bars: reading current bars failed', { retriable: true, cause: err });
      }
    }
    await this.project(rows);
    if (result.refused.length > 0) {
      this.stats.refused += result.refused.length;
      const h = this.beyondHorizon;
      for (const r of result.refused) {
        if (r.kind !== 'horizon') continue;
        const ts = trades[r.index]!.ts;
        h.count++;
        if (h.minTs === undefined || ts < h.minTs) h.minTs = ts;
        if (h.maxTs === undefined || ts > h.maxTs) h.maxTs = ts;
      }
      throw new RejectedTicksError(
        result.refused.map((r) => ({ index: indexes[r.index]!, reason: r.reason })),
      );
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.pruneTimer !== undefined) clearInterval(this.pruneTimer);
      try {
        await this.flush();
      } finally {
        try {
          await this.o.questdb?.close();
        } finally {
          if (this.o.ownsPool) await closePgPool(this.o.pool);
        }
      }
    })();
    return this.closing;
  }

  /**
   * Newest row per (symbol, tf) into Redis, and published on its channel when it changed the hash; failures
   * are retriable (the batch comes back and re-projects).
   */
  private async project(rows: readonly BarRow[]): Promise<void> {
    if (rows.length === 0) return;
    const newest = new Map<string, BarRow>();
    for (const r of rows) {
      const k = `${r.symbol}\u0000${r.tf}`;
      const cur = newest.get(k);
      if (cur === undefined || r.start > cur.start || (r.start === cur.start && r.rev > cur.rev))
        newest.set(k, r);
    }
    const chunk = isCluster(this.o.redis) ? 1 : PROJECT_CHUNK;
    const all = [...newest.values()];
    const prefix = this.o.channelPrefix;
    // Every chunk is sent before the first reply is awaited: Redis runs one script while the next is encoded
    // here (no key is in two chunks: one row per key above, so their order does not matter).
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < all.length; i += chunk) {
      const keys: string[] = [];
      const args: string[] = [];
      for (let j = i; j < Math.min(all.length, i + chunk); j++) {
        const r = all[j]!;
        const fields = barFields(r);
        keys.push(barKeyOf(this.o.keyPrefix, r.symbol, r.tf));
        args.push(
          r.start.toString().padStart(20, '0'),
          r.rev.toString().padStart(20, '0'),
          prefix === undefined ? '' : barKeyOf(prefix, r.symbol, r.tf),
          prefix === undefined ? '' : barMessage(fields),
          String(fields.length),
          ...fields,
        );
      }
      calls.push(PROJECT_BARS.runKeys(this.o.redis, keys, args));
    }
    try {
      for (const changed of await Promise.all(calls)) this.stats.projected += Number(changed);
    } catch (err) {
      throw new SinkError('bars: projecting into Redis failed', { retriable: true, cause: err });
    }
  }

  private async prune(): Promise<void> {
    try {
      const n = await withClient(this.o.pool, (client) => this.o.store.pruneLedger(client));
      if (n > 0) this.o.log.debug({ rows: n }, 'pruned bar ledger');
    } catch (err) {
      this.o.log.warn({ err }, 'pruning the bar ledger failed');
    }
  }
}

/** Hash fields of a bar (also what `tickstream bars` prints). */
export function barFields(r: BarRow): string[] {
  return [
    ...barIdentityFields(r.symbol, r.tf, r.start),
    'open',
    String(r.open),
    'high',
    String(r.high),
    'low',
    String(r.low),
    'close',
    String(r.close),
    'volume',
    trimDecimal(r.volume),
    'vwap',
    r.vwap === null ? '' : String(r.vwap),
    'trades',
    String(r.trades),
    'late',
    String(r.late),
    'closed',
    r.closed ? '1' : '0',
    'rev',
    r.rev.toString(),
  ];
}

/** The pub/sub message of a bar: its hash fields as stored, `closed` as a boolean. */
export function barMessage(fields: readonly string[]): string {
  const o: Record<string, string | boolean> = {};
  for (let i = 0; i < fields.length; i += 2) o[fields[i]!] = fields[i + 1]!;
  o.closed = o.closed === '1';
  return JSON.stringify(o);
}

/** "12.500000000" → "12.5", "300.000000000" → "300". */
export function trimDecimal(text: string): string {
  return text.includes('.') ? text.replace(/0+$/, '').replace(/\.$/, '') : text;
}

/** Read current bars from Redis (for `tickstream bars` and tests). */
export async function readCurrentBar(
  redis: RedisClient,
  prefix: string,
  symbol: string,
  tf: TimeframeName,
): Promise<Record<string, string> | undefined> {
  const h = await redis.hgetall(barKeyOf(prefix, symbol, tf));
  return Object.keys(h).length === 0 ? undefined : h;
}

export async function createBarsSink(deps: {
  config: Config;
  redis: RedisClient;
  log: Logger;
}): Promise<BarsSink> {
  const { config, redis, log } = deps;
  const child = log.child({ component: 'sink.bars' });
  const pool = createPgPool(config.postgres, { log: child, applicationName: 'tickstream:bars' });
  const store = new BarStore(barStoreSettings(config));
  let questdb: BarsQuestDbOutbox | undefined;
  if (config.questdb.clientConf !== undefined) {
    try {
      questdb = new BarsQuestDbOutbox({
        pool,
        store,
        settings: config.questdb,
        batch: config.bars.questdbBatch,
        intervalMs: config.bars.questdbIntervalMs,
        log: log.child({ component: 'sink.bars.questdb' }),
      });
    } catch (err) {
      await closePgPool(pool);
      throw err;
    }
  }
  return new BarsSink({
    pool,
    ownsPool: true,
    redis,
    store,
    questdb,
    keyPrefix: config.bars.keyPrefix,
    channelPrefix: config.bars.channelPrefix,
    pruneIntervalMs: config.bars.pruneIntervalMs,
    migrate: config.postgres.migrateOnStart ? { settings: config.postgres } : undefined,
    log: child,
  });
}

/**
 * `tickstream status` row of the QuestDB outbox: closed bars PostgreSQL has that QuestDB has not confirmed
 * (a backlog that grows means QuestDB is failing or no bars consumer runs). Undefined without QuestDB.
 */
export async function barsOutboxStatus(
  config: Pick<Config, 'bars' | 'streams' | 'postgres' | 'questdb'>,
  log: Logger,
): Promise<Record<string, unknown>[] | undefined> {
  if (config.questdb.clientConf === undefined) return undefined;
  const pool = createPgPool(config.postgres, { log, max: 1, applicationName: 'tickstream:status' });
  const store = new BarStore(barStoreSettings(config));
  const table = barsTable(config.questdb.tablePrefix);
  try {
    const backlog = await withClient(pool, (client) => store.unsyncedBacklog(client));
    return [
      {
        schema: config.postgres.schema,
        questdb_table: table,
        unsynced: backlog.rows,
        oldest_change: backlog.oldestChange?.toISOString() ?? '-',
      },
    ];
  } catch (err) {
    // 42P01 / 42703: no bars table, or not yet the outbox column: the schema predates this version.
    if (pgErrorCode(err) === '42P01' || pgErrorCode(err) === '42703') {
      return [{ schema: config.postgres.schema, questdb_table: table, hint: 'run tickstream migrate' }];
    }
    throw err;
  } finally {
    await closePgPool(pool);
  }
}
