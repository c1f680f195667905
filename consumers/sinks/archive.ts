import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { errorMessage, SinkError, TickstreamError } from '../../shared/errors.ts';
import { once } from '../../shared/lifecycle.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Quote, Tick, Trade } from '../../shared/model.ts';
import {
  closePgPool,
  copyText,
  createPgPool,
  inTransaction,
  isRetriablePgError,
  pgErrorCode,
  pgTarget,
  quoteIdent,
  withClient,
  type PgClient,
  type PgPool,
} from '../../shared/pg.ts';
import { RejectedTicksError, type Rejection, type Sink } from '../sink.ts';
import {
  assertSchemaCurrent,
  assertTimescaleVersion,
  BARS_1M_POLICY_WINDOW_MS,
  daysAhead,
  ensureDayPartitions,
  migrate,
  migrateOptions,
  MigrationError,
  refreshBars1m,
  type ArchiveMode,
  type ArchiveSettings,
} from '../../shared/schema/migrate.ts';

/**
 * The archive: every trade and quote in PostgreSQL (TimescaleDB hypertables, or tables range-partitioned by
 * day), for history older than the streams keep and for replay. Tables and columns: docs/archive.md.
 *
 * A flush is one transaction, and flush() resolves only once it is committed: the worker acknowledges after
 * that, never before. Inside it:
 *   SAVEPOINT; COPY straight into the tables (text format, streamed while it is encoded)
 *   and only if that hits the unique key (some ticks are stored already: redelivery, replay):
 *   ROLLBACK TO SAVEPOINT; COPY into a session-local staging table
 *   → INSERT INTO <table> SELECT … FROM staging ON CONFLICT DO NOTHING
 *   then COMMIT.
 * New ticks, the steady state, go in at the speed of a plain COPY; a tick already stored inserts nothing.
 *
 * Failures: anything that is the server's state (down, restarting, out of connections, disk full) is a
 * retriable SinkError, and the entries stay pending until it is back. Ticks PostgreSQL would refuse are found
 * before COPY and reported with RejectedTicksError after the rest is committed; a refusal nobody foresaw (a
 * data exception, class 22, or constraint violation, class 23) is a non-retriable SinkError, and the worker
 * splits the batch until the offending tick is alone.
 *
 * On plain PostgreSQL the sink creates day partitions: ahead of the wall clock at start and hourly, and for
 * any day a batch touches (late ticks, backfills) just before writing it, each in its own short transaction.
 */
export interface ArchiveSinkOptions {
  settings: ArchiveSettings;
  log: Logger;
  /** A pool owned by the caller (not closed by the sink). When absent the sink opens and closes its own. */
  pool?: PgPool;
  /**
   * Check ticks against what PostgreSQL accepts before COPY (default true). Off, refused ticks reach the
   * server and are isolated by the worker's bisection instead; tests use it to exercise that path.
   */
  validate?: boolean;
  /** Try COPY straight into the tables before staging (default true); the benchmark measures both. */
  directCopy?: boolean;
  /**
   * Check before COMMIT on the staging path that every tick of the batch is in the table (default true). Only
   * the benchmark turns it off, to measure what it costs.
   */
  verify?: boolean;
  /**
   * The clock that places the archive window (TICKSTREAM_ARCHIVE_DAYS_BACK/AHEAD) in ms since the epoch
   * (default Date.now); a test fixes it so that its days stay inside or outside across UTC midnight.
   */
  windowClock?: () => number;
}

export interface ArchiveStats {
  flushes: number;
  /** Flushes written by the direct COPY (no duplicate in the batch). */
  directFlushes: number;
  /** Rows newly stored. */
  inserted: number;
  /** Ticks already in the archive (redelivery, replay). */
  duplicates: number;
  rejected: number;
  partitionsCreated: number;
  /** Staged batches rolled back because the table did not hold every tick after the insert. */
  shortfalls: number;
  /** TimescaleDB: refreshes of trades_1m over history written behind its refresh policy's window. */
  aggregateRefreshes: number;
  /** TimescaleDB with TICKSTREAM_PG_BACKFILL_DECOMPRESS: chunks decompressed before writing into them. */
  chunksDecompressed: number;
}

export const ARCHIVE_TABLES = { trade: 'trades', quote: 'quotes' } as const;
export const TRADE_COLUMNS = [
  'ts',
  'ts_ns',
  'source',
  'symbol',
  'seq',
  'venue',
  'price',
  'size',
  'side',
] as const;
export const QUOTE_COLUMNS = [
  'ts',
  'ts_ns',
  'source',
  'symbol',
  'seq',
  'venue',
  'bid_price',
  'bid_size',
  'ask_price',
  'ask_size',
] as const;

const NS_PER_DAY = 86_400_000_000_000n;
const MS_PER_DAY = 86_400_000;
const MAX_INT8 = 9_223_372_036_854_775_807n;
const MAINTENANCE_INTERVAL_MS = 3_600_000;
const ROWS_PER_CHUNK = 512;
const STAGED_RUNS_AFTER_CONFLICT = 8;
const AGGREGATE_REFRESH_MS = 10_000;
/** Trades this close to the policy's window edge are refreshed by hand too: the policy may just miss them. */
const AGGREGATE_REFRESH_MARGIN_MS = 600_000;

export class ArchiveSink implements Sink {
  readonly name = 'archive';
  readonly stats: ArchiveStats = {
    flushes: 0,
    directFlushes: 0,
    inserted: 0,
    duplicates: 0,
    rejected: 0,
    partitionsCreated: 0,
    shortfalls: 0,
    aggregateRefreshes: 0,
    chunksDecompressed: 0,
  };
  private readonly settings: ArchiveSettings;
  private readonly log: Logger;
  private readonly pool: PgPool;
  private readonly ownsPool: boolean;
  private readonly validate: boolean;
  private readonly directCopy: boolean;
  private readonly verify: boolean;
  /** Batches left to send through staging after a conflict before trying the direct COPY again. */
  private stagedRuns = 0;
  private readonly q: string;
  private readonly stagingReady = new WeakSet<PgClient>();
  /** Days (since the epoch, UTC) whose partitions are known to exist. */
  private readonly knownDays = new Set<number>();
  private mode: ArchiveMode | undefined;
  private staged: Tick[] = [];
  private nextMaintenance = 0;
  private starting: Promise<void> | undefined;
  /** TimescaleDB: exchange-time range of trades written behind trades_1m's refresh window, not refreshed yet. */
  private stale: { from: bigint; to: bigint } | undefined;
  private refreshing: Promise<void> | undefined;
  private nextRefresh = 0;
  private readonly windowClock: () => number;

  constructor(options: ArchiveSinkOptions) {
    this.settings = options.settings;
    this.log = options.log;
    this.ownsPool = options.pool === undefined;
    this.pool =
      options.pool ??
      createPgPool(options.settings, { log: options.log, applicationName: 'tickstream:archive' });
    this.validate = options.validate ?? true;
    this.directCopy = options.directCopy ?? true;
    this.verify = options.verify ?? true;
    this.windowClock = options.windowClock ?? Date.now;
    this.q = quoteIdent(options.settings.schema);
  }

  /** Migrate (or check the schema version), then create the partitions ahead. Idempotent. */
  start(): Promise<void> {
    this.starting ??= this.prepare().catch((err: unknown) => {
      this.starting = undefined;
      throw err;
    });
    return this.starting;
  }

  private async prepare(): Promise<void> {
    try {
      this.mode = this.settings.migrateOnStart
        ? (await migrate(this.pool, migrateOptions(this.settings, this.log))).mode
        : await assertSchemaCurrent(this.pool, this.settings.schema);
      // Checked at every start, not only at migrate: the extension can be updated under an existing schema.
      if (this.mode === 'timescale') await assertTimescaleVersion(this.pool);
    } catch (err) {
      if (err instanceof TickstreamError) throw err;
      throw new SinkError(
        `archive: cannot prepare PostgreSQL at ${pgTarget(this.settings.url)}: ${errorMessage(err)}`,
        {
          retriable: isRetriablePgError(err),
          cause: err,
        },
      );
    }
    this.log.info({ schema: this.settings.schema, mode: this.mode }, 'archive ready');
    await this.maintain();
  }

  /**
   * Plain PostgreSQL housekeeping: partitions for today and `partitionsAhead` days, and, with a retention
   * set, dropping the days past it. Runs at start and then hourly from flush(); TimescaleDB does both itself.
   */
  async maintain(): Promise<void> {
    if (this.mode !== 'plain') return;
    await this.ensureDays(daysAhead(this.settings.partitionsAhead));
    if (this.settings.retention !== 'off') {
      const dropped = await this.sql(async (client) => {
        let n = 0;
        for (const table of Object.values(ARCHIVE_TABLES)) {
          const r = await client.query<{ n: number }>(
            `SELECT ${this.q}.drop_day_partitions_before($1, ((now() AT TIME ZONE 'UTC') - $2::interval)::date) AS n`,
            [table, this.settings.retention],
          );
          n += r.rows[0]?.n ?? 0;
        }
        return n;
      });
      if (dropped > 0) {
        this.knownDays.clear();
        this.log.info({ dropped, retention: this.settings.retention }, 'dropped partitions past retention');
      }
    }
    this.nextMaintenance = Date.now() + MAINTENANCE_INTERVAL_MS;
  }

  async write(ticks: readonly Tick[]): Promise<void> {
    for (const t of ticks) this.staged.push(t);
  }

  async flush(): Promise<void> {
    const ticks = this.staged;
    this.staged = [];
    if (ticks.length === 0) return;
    if (this.mode === undefined) {
      throw new SinkError('archive sink flushed before start()', { retriable: true });
    }
    const plan = this.plan(ticks);
    if (this.mode === 'plain') {
      if (Date.now() >= this.nextMaintenance) {
        await this.maintain().catch((err: unknown) => {
          this.nextMaintenance = Date.now() + 60_000;
          this.log.warn({ err }, 'archive maintenance failed: retrying later');
        });
      }
      await this.ensureDays(plan.days);
    }
    if (this.mode === 'timescale' && this.settings.backfillDecompress && plan.days.length > 0) {
      await this.decompressFor(plan);
    }
    let inserted = 0;
    if (plan.trades + plan.quotes > 0) {
      for (let attempt = 1; ; attempt++) {
        try {
          inserted = await withClient(this.pool, (client) => this.writeBatch(client, ticks, plan));
          break;
        } catch (err) {
          // A partition dropped behind our cache (retention, or by hand): recreate and write again once.
          if (attempt === 1 && this.mode === 'plain' && isMissingPartition(err)) {
            this.knownDays.clear();
            await this.ensureDays(plan.days);
            continue;
          }
          if (err instanceof ArchiveShortfallError) throw err;
          throw this.failure(err);
        }
      }
    }
    if (this.mode === 'timescale' && inserted > 0) this.noteStale(ticks, plan);
    const accepted = plan.trades + plan.quotes;
    this.stats.flushes++;
    this.stats.inserted += inserted;
    this.stats.duplicates += accepted - inserted;
    if (plan.rejections.length > 0) {
      this.stats.rejected += plan.rejections.length;
      throw new RejectedTicksError(plan.rejections);
    }
  }

  /** Flush what is staged, bring trades_1m up to date over what was written, then release the pool. */
  readonly close = once(async () => {
    try {
      await this.flush();
    } finally {
      await this.refreshing;
      if (this.stale !== undefined) {
        this.nextRefresh = 0;
        this.refreshStale();
        await this.refreshing;
      }
      if (this.ownsPool) await closePgPool(this.pool);
    }
  });

  /**
   * TimescaleDB's refresh policy materialises trades_1m over the last 3 hours only; history written further
   * back (a file, a replay, a late feed) would stay invisible in it until refreshed by hand. Trades written
   * there are noted here and refreshed in the background, at most every AGGREGATE_REFRESH_MS, and at close.
   * Not part of the delivery contract (the ticks are committed already), so a failure is logged and retried.
   */
  private noteStale(ticks: readonly Tick[], plan: BatchPlan): void {
    if (plan.trades === 0) return;
    const horizon = BigInt(Date.now() - BARS_1M_POLICY_WINDOW_MS + AGGREGATE_REFRESH_MARGIN_MS) * 1_000_000n;
    let from = this.stale?.from;
    let to = this.stale?.to;
    for (let i = 0; i < ticks.length; i++) {
      const t = ticks[i]!;
      if (t.type !== 'trade' || plan.ok[i] === 0 || t.ts >= horizon) continue;
      if (from === undefined || t.ts < from) from = t.ts;
      if (to === undefined || t.ts > to) to = t.ts;
    }
    if (from === undefined || to === undefined) return;
    this.stale = { from, to };
    this.refreshStale();
  }

  private refreshStale(): void {
    const range = this.stale;
    if (range === undefined || this.refreshing !== undefined || Date.now() < this.nextRefresh) return;
    this.stale = undefined;
    this.nextRefresh = Date.now() + AGGREGATE_REFRESH_MS;
    this.refreshing = refreshBars1m(this.pool, this.settings.schema, range.from, range.to)
      .then(
        (done) => {
          this.stats.aggregateRefreshes++;
          this.log.info(done, 'refreshed trades_1m over backfilled history');
        },
        (err: unknown) => {
          this.stale =
            this.stale === undefined
              ? range
              : {
                  from: range.from < this.stale.from ? range.from : this.stale.from,
                  to: range.to > this.stale.to ? range.to : this.stale.to,
                };
          this.log.warn({ err }, 'could not refresh trades_1m over backfilled history: retrying later');
        },
      )
      .finally(() => {
        this.refreshing = undefined;
      });
  }

  private plan(ticks: readonly Tick[]): BatchPlan {
    const ok = new Uint8Array(ticks.length);
    const rejections: Rejection[] = [];
    const days = new Set<number>();
    let trades = 0;
    let quotes = 0;
    let dayLo = -1n;
    let dayHi = -1n;
    const window = archiveWindow(this.settings, this.windowClock());
    for (let i = 0; i < ticks.length; i++) {
      const t = ticks[i]!;
      if (this.validate) {
        const reason = rejectReason(t) ?? windowReason(t, window);
        if (reason !== undefined) {
          rejections.push({ index: i, reason });
          continue;
        }
      }
      ok[i] = 1;
      if (t.type === 'trade') trades++;
      else quotes++;
      if (t.ts < dayLo || t.ts >= dayHi) {
        const day = t.ts / NS_PER_DAY;
        days.add(Number(day));
        dayLo = day * NS_PER_DAY;
        dayHi = dayLo + NS_PER_DAY;
      }
    }
    return { ok, rejections, days: [...days], trades, quotes };
  }

  /**
   * One transaction. Optimistic first: COPY straight into the tables inside a savepoint, which succeeds
   * whenever the batch holds only new ticks (the steady state) at the full speed of COPY. A unique violation
   * means some ticks are stored already (redelivery, replay): roll back to the savepoint and take the staging
   * path, which skips them, and keep taking it for the next few batches, as duplicates come in runs.
   */
  private async writeBatch(client: PgClient, ticks: readonly Tick[], plan: BatchPlan): Promise<number> {
    await this.ensureStaging(client);
    return inTransaction(client, async () => {
      if (this.directCopy && this.stagedRuns === 0) {
        await client.query('SAVEPOINT archive_direct');
        try {
          const n = await this.copyEach(client, ticks, plan, (table) => `${this.q}.${table}`);
          await client.query('RELEASE SAVEPOINT archive_direct');
          this.stats.directFlushes++;
          return n;
        } catch (err) {
          if (pgErrorCode(err) !== '23505') throw err;
          await client.query('ROLLBACK TO SAVEPOINT archive_direct');
          this.stagedRuns = STAGED_RUNS_AFTER_CONFLICT;
        }
      } else if (this.stagedRuns > 0) {
        this.stagedRuns--;
      }
      await this.copyEach(client, ticks, plan, (table) => this.stagingName(table));
      let inserted = 0;
      for (const [type, table] of Object.entries(ARCHIVE_TABLES)) {
        if ((type === 'trade' ? plan.trades : plan.quotes) === 0) continue;
        const cols = (type === 'trade' ? TRADE_COLUMNS : QUOTE_COLUMNS).join(', ');
        const r = await client.query(
          `INSERT INTO ${this.q}.${table} (${cols}) SELECT ${cols} FROM ${this.stagingName(table)} ON CONFLICT DO NOTHING`,
        );
        inserted += r.rowCount ?? 0;
        // Every staged row inserted: nothing can be missing (the common case right after a conflict).
        const staged = type === 'trade' ? plan.trades : plan.quotes;
        if (this.verify && (r.rowCount ?? 0) < staged) await this.verifyStaged(client, table);
      }
      return inserted;
    });
  }

  /**
   * Before COMMIT on the staging path: every identity of the batch must now be in the table. ON CONFLICT DO
   * NOTHING reports skipped rows only as a smaller row count, which is indistinguishable from duplicates; a
   * store that skips new rows (TimescaleDB 2.16.0–2.18.0 on compressed chunks, timescale/timescaledb#7672)
   * would otherwise have them counted as duplicates and acknowledged. A shortfall rolls the batch back and is
   * not retriable: the worker halves the batch until every tick is stored, or dead-letters the one that is not.
   */
  private async verifyStaged(client: PgClient, table: string): Promise<void> {
    const { rows } = await client.query<{ missing: number }>(
      `SELECT count(*)::int AS missing FROM ${this.stagingName(table)} s
        WHERE NOT EXISTS (SELECT 1 FROM ${this.q}.${table} t
                           WHERE t.ts = s.ts AND t.ts_ns = s.ts_ns AND t.seq = s.seq
                             AND t.source = s.source AND t.symbol = s.symbol)`,
    );
    const missing = rows[0]?.missing ?? 0;
    if (missing === 0) return;
    this.stats.shortfalls++;
    throw new ArchiveShortfallError(table, missing);
  }

  /** COPY the batch's trades and quotes into `target(table)`; returns the rows copied. */
  private async copyEach(
    client: PgClient,
    ticks: readonly Tick[],
    plan: BatchPlan,
    target: (table: string) => string,
  ): Promise<number> {
    const encoder = new RowEncoder();
    let rows = 0;
    for (const [type, table] of Object.entries(ARCHIVE_TABLES) as [Tick['type'], string][]) {
      if ((type === 'trade' ? plan.trades : plan.quotes) === 0) continue;
      const cols = (type === 'trade' ? TRADE_COLUMNS : QUOTE_COLUMNS).join(', ');
      const copy = client.query(copyFrom(`COPY ${target(table)} (${cols}) FROM STDIN`));
      await pipeline(Readable.from(copyChunks(ticks, plan.ok, type, encoder)), copy);
      rows += copy.rowCount;
    }
    return rows;
  }

  /**
   * Session-local staging tables, created once per connection: temporary (no WAL), no indexes or checks, and
   * emptied at every commit. Named after the schema so sinks of different schemas can share a connection.
   */
  private async ensureStaging(client: PgClient): Promise<void> {
    if (this.stagingReady.has(client)) return;
    for (const table of Object.values(ARCHIVE_TABLES)) {
      await client.query(
        `CREATE TEMP TABLE IF NOT EXISTS ${this.stagingName(table)} (LIKE ${this.q}.${table}) ON COMMIT DELETE ROWS`,
      );
    }
    this.stagingReady.add(client);
  }

  /**
   * TICKSTREAM_PG_BACKFILL_DECOMPRESS: writing into a compressed chunk decompresses the affected segments row
   * by row and runs an order of magnitude slower (docs/operations.md); TimescaleDB's documented backfill is
   * decompress → write → recompress. Chunks are decompressed here, each in its own statement, and left to the
   * compression policy, which recompresses chunks older than TICKSTREAM_PG_COMPRESS_AFTER on its next run.
   */
  private async decompressFor(plan: BatchPlan): Promise<void> {
    const lo = Math.min(...plan.days) * MS_PER_DAY;
    const hi = (Math.max(...plan.days) + 1) * MS_PER_DAY;
    const chunks = await this.sql(async (client) => {
      const { rows } = await client.query<{ chunk: string }>(
        `SELECT format('%I.%I', chunk_schema, chunk_name) AS chunk FROM timescaledb_information.chunks
          WHERE hypertable_schema = $1 AND hypertable_name = ANY($2::text[]) AND is_compressed
            AND range_start < $4::timestamptz AND range_end > $3::timestamptz`,
        [
          this.settings.schema,
          Object.values(ARCHIVE_TABLES),
          new Date(lo).toISOString(),
          new Date(hi).toISOString(),
        ],
      );
      for (const { chunk } of rows) {
        await client.query(`SELECT decompress_chunk($1::regclass, if_compressed => true)`, [chunk]);
      }
      return rows.length;
    }, 'decompressing chunks for a backfill');
    if (chunks > 0) {
      this.stats.chunksDecompressed += chunks;
      this.log.info(
        { chunks },
        'decompressed chunks for a backfill (the compression policy recompresses them)',
      );
    }
  }

  private stagingName(table: string): string {
    return quoteIdent(`stage_${this.settings.schema}_${table}`);
  }

  private async ensureDays(days: readonly number[]): Promise<void> {
    const missing = days.filter((d) => !this.knownDays.has(d));
    if (missing.length === 0) return;
    const created = await this.sql((client) => ensureDayPartitions(client, this.settings.schema, missing));
    for (const d of missing) this.knownDays.add(d);
    if (created > 0) {
      this.stats.partitionsCreated += created;
      this.log.debug({ created, days: missing.length }, 'created day partitions');
    }
  }

  /** Housekeeping statements; their failures are the server's (retriable). */
  private async sql<T>(fn: (client: PgClient) => Promise<T>, what = 'partition maintenance'): Promise<T> {
    try {
      return await withClient(this.pool, fn);
    } catch (err) {
      throw new SinkError(`archive: ${what} failed: ${errorMessage(err)}`, {
        retriable: true,
        cause: err,
      });
    }
  }

  private failure(err: unknown): SinkError {
    const retriable = isRetriablePgError(err) || isMissingPartition(err);
    const code = pgErrorCode(err);
    return new SinkError(
      `archive write failed${code === undefined ? '' : ` (${code})`}: ${errorMessage(err)}`,
      {
        retriable,
        cause: err,
      },
    );
  }
}

/** The table lacks ticks of a batch after INSERT … ON CONFLICT DO NOTHING: a store fault, never duplicates. */
export class ArchiveShortfallError extends SinkError {
  override name = 'ArchiveShortfallError';
  constructor(
    readonly table: string,
    readonly missing: number,
  ) {
    super(
      `archive: ${missing} tick(s) of the batch were not in ${table} after INSERT … ON CONFLICT DO NOTHING ` +
        `(not duplicates: the store skipped new rows; TimescaleDB 2.16.0–2.18.0 does so on compressed chunks); ` +
        `the batch was rolled back`,
      { retriable: false },
    );
  }
}

interface BatchPlan {
  /** 1 for the ticks to write, 0 for those rejected before COPY. */
  ok: Uint8Array;
  rejections: Rejection[];
  days: number[];
  trades: number;
  quotes: number;
}

function isMissingPartition(err: unknown): boolean {
  return pgErrorCode(err) === '23514' && /no partition of relation/i.test(errorMessage(err));
}

/**
 * Why PostgreSQL would refuse this tick, or undefined. Mirrors the tables' types and CHECK constraints; the
 * message model already enforces most of it, but ticks built in-process (files, replay) reach sinks too.
 */
export function rejectReason(t: Tick): string | undefined {
  if (t.ts < 0n || t.ts > MAX_INT8) return `ts ${t.ts} is outside PostgreSQL's bigint range (ts_ns column)`;
  if (!Number.isSafeInteger(t.seq) || t.seq < 0) return `seq ${t.seq} is not a non-negative integer`;
  // Checked without allocating: this runs for every tick of every batch.
  if (t.source.includes('\u0000')) return nulReason('source');
  if (t.symbol.includes('\u0000')) return nulReason('symbol');
  if (t.venue.includes('\u0000')) return nulReason('venue');
  if (t.type === 'trade') {
    if (!(Number.isFinite(t.price) && t.price > 0)) return `price ${t.price} must be a positive number`;
    if (!(Number.isFinite(t.size) && t.size >= 0)) return `size ${t.size} must be a non-negative number`;
    if (t.side !== 'buy' && t.side !== 'sell' && t.side !== '')
      return `side "${String(t.side)}" is not buy, sell or ""`;
  } else {
    if (!(Number.isFinite(t.bidPrice) && t.bidPrice > 0 && Number.isFinite(t.askPrice) && t.askPrice > 0)) {
      return `bid/ask prices ${t.bidPrice}/${t.askPrice} must be positive numbers`;
    }
    if (!(Number.isFinite(t.bidSize) && t.bidSize >= 0 && Number.isFinite(t.askSize) && t.askSize >= 0)) {
      return `bid/ask sizes ${t.bidSize}/${t.askSize} must be non-negative numbers`;
    }
  }
  return undefined;
}

/** The days the archive takes, in ns since the epoch: [from, to). */
export interface ArchiveWindow {
  readonly fromNs: bigint;
  readonly toNs: bigint;
  readonly daysBack: number;
  readonly daysAhead: number;
}

/**
 * From `archiveDaysBack` days before today (UTC) to the end of `archiveDaysAhead` days after it. Every day a
 * batch touches becomes a partition (or a TimescaleDB chunk), so a file of ticks spread over decades would
 * create thousands of tables: ticks outside the window are refused with a reason naming their day instead.
 */
export function archiveWindow(
  settings: Pick<ArchiveSettings, 'archiveDaysBack' | 'archiveDaysAhead'>,
  nowMs: number,
): ArchiveWindow {
  const today = BigInt(Math.floor(nowMs / 86_400_000));
  return {
    fromNs: (today - BigInt(settings.archiveDaysBack)) * NS_PER_DAY,
    toNs: (today + BigInt(settings.archiveDaysAhead) + 1n) * NS_PER_DAY,
    daysBack: settings.archiveDaysBack,
    daysAhead: settings.archiveDaysAhead,
  };
}

/** Why the archive will not take this tick's day, or undefined. */
export function windowReason(t: Tick, w: ArchiveWindow): string | undefined {
  if (t.ts >= w.fromNs && t.ts < w.toNs) return undefined;
  const day = (ns: bigint) => new Date(Number(ns / NS_PER_DAY) * 86_400_000).toISOString().slice(0, 10);
  const tickDay = t.ts > MAX_DATE_NS ? 'beyond 2262' : day(t.ts);
  return (
    `day ${tickDay} is outside the archive window ${day(w.fromNs)} to ${day(w.toNs - NS_PER_DAY)} ` +
    `(TICKSTREAM_ARCHIVE_DAYS_BACK=${w.daysBack}, TICKSTREAM_ARCHIVE_DAYS_AHEAD=${w.daysAhead})`
  );
}

/** Date can show days up to the year 275760; the model stops at 2262. */
const MAX_DATE_NS = 8_640_000_000_000_000_000_000n;

function nulReason(field: string): string {
  return `${field} contains a NUL character, which PostgreSQL text cannot store`;
}

/**
 * Rows in COPY text format, in the column order of TRADE_COLUMNS / QUOTE_COLUMNS. `ts` is the exchange time
 * truncated to the microsecond; the date part is cached per second, since a batch is mostly one second.
 */
export class RowEncoder {
  private lastSec = '';
  private lastPrefix = '';

  /** ISO-8601 UTC with microseconds, from a decimal nanosecond string. */
  timestamp(ns: string): string {
    const padded = ns.length > 9 ? ns : ns.padStart(10, '0');
    const sec = padded.slice(0, -9);
    if (sec !== this.lastSec) {
      this.lastSec = sec;
      this.lastPrefix = new Date(Number(sec) * 1000).toISOString().slice(0, 19);
    }
    return `${this.lastPrefix}.${padded.slice(-9, -3)}Z`;
  }

  trade(t: Trade): string {
    const ns = t.ts.toString();
    return `${this.timestamp(ns)}\t${ns}\t${copyText(t.source)}\t${copyText(t.symbol)}\t${t.seq}\t${copyText(t.venue)}\t${t.price}\t${t.size}\t${t.side}\n`;
  }

  quote(t: Quote): string {
    const ns = t.ts.toString();
    return `${this.timestamp(ns)}\t${ns}\t${copyText(t.source)}\t${copyText(t.symbol)}\t${t.seq}\t${copyText(t.venue)}\t${t.bidPrice}\t${t.bidSize}\t${t.askPrice}\t${t.askSize}\n`;
  }
}

/** COPY payload for the ticks of one type, in chunks so that encoding overlaps with the server parsing. */
export function* copyChunks(
  ticks: readonly Tick[],
  ok: Uint8Array | undefined,
  type: Tick['type'],
  encoder: RowEncoder = new RowEncoder(),
): Generator<string> {
  let chunk = '';
  let rows = 0;
  for (let i = 0; i < ticks.length; i++) {
    const t = ticks[i]!;
    if (t.type !== type || (ok !== undefined && ok[i] === 0)) continue;
    chunk += t.type === 'trade' ? encoder.trade(t) : encoder.quote(t);
    if (++rows === ROWS_PER_CHUNK) {
      yield chunk;
      chunk = '';
      rows = 0;
    }
  }
  if (chunk !== '') yield chunk;
}

/** Where to resume reading: the identity of the last tick read (a Tick itself will do). */
export interface ArchivePosition {
  readonly ts: bigint;
  readonly seq: number;
  readonly source: string;
  readonly symbol: string;
}

export interface ArchiveRange {
  /** Exchange time in nanoseconds, inclusive. */
  from: bigint;
  /** Exchange time in nanoseconds, exclusive. */
  to: bigint;
  symbols?: readonly string[];
  sources?: readonly string[];
  /** Both by default. */
  types?: readonly Tick['type'][];
  /** Ticks per yielded batch, and rows per query per table (default 5000). */
  batchSize?: number;
  /** Resume strictly after this tick (for a checkpointed replay). */
  after?: ArchivePosition;
}

/**
 * Read ticks back from the archive for a time range, trades and quotes merged, in (ts, seq, source, symbol)
 * order, in batches. Keyset pagination over the primary key: each page is a short indexed query, no
 * transaction or cursor stays open between batches, and a consumer can resume from the last tick it handled.
 */
export async function* readArchive(
  pool: PgPool,
  schema: string,
  range: ArchiveRange,
): AsyncGenerator<Tick[], void, undefined> {
  // Bounds outside what ts_ns can hold (an open-ended range) are clamped to it.
  range = {
    ...range,
    from: range.from < 0n ? 0n : range.from,
    to: range.to > MAX_INT8 ? MAX_INT8 : range.to,
  };
  if (range.to <= range.from) return;
  const size = Math.max(1, range.batchSize ?? 5000);
  const types = range.types ?? ['trade', 'quote'];
  const cursors = types.map((type) => new TableCursor(pool, schema, type, range, size));
  let batch: Tick[] = [];
  for (;;) {
    let best: TableCursor | undefined;
    let bestTick: Tick | undefined;
    for (const c of cursors) {
      const t = c.head() ?? (await c.fill());
      if (t !== undefined && (bestTick === undefined || compareTicks(t, bestTick) < 0)) {
        best = c;
        bestTick = t;
      }
    }
    if (best === undefined || bestTick === undefined) break;
    best.advance();
    batch.push(bestTick);
    if (batch.length >= size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

export function compareTicks(a: ArchivePosition, b: ArchivePosition): number {
  if (a.ts !== b.ts) return a.ts < b.ts ? -1 : 1;
  if (a.seq !== b.seq) return a.seq - b.seq;
  if (a.source !== b.source) return a.source < b.source ? -1 : 1;
  if (a.symbol !== b.symbol) return a.symbol < b.symbol ? -1 : 1;
  return 0;
}

class TableCursor {
  private rows: Tick[] = [];
  private i = 0;
  private done = false;
  private last: ArchivePosition | undefined;
  private readonly encoder = new RowEncoder();

  constructor(
    private readonly pool: PgPool,
    private readonly schema: string,
    private readonly type: Tick['type'],
    private readonly range: ArchiveRange,
    private readonly size: number,
  ) {
    this.last = range.after;
  }

  head(): Tick | undefined {
    return this.rows[this.i];
  }

  advance(): void {
    this.i++;
  }

  async fill(): Promise<Tick | undefined> {
    if (this.done) return undefined;
    const { text, values } = this.query();
    const result = await this.pool.query<unknown[]>({ text, values, rowMode: 'array' });
    const rows = result.rows.map((r) => (this.type === 'trade' ? tradeOf(r) : quoteOf(r)));
    this.rows = rows;
    this.i = 0;
    if (rows.length < this.size) this.done = true;
    if (rows.length > 0) this.last = rows[rows.length - 1];
    return rows[0];
  }

  private query(): { text: string; values: unknown[] } {
    const r = this.range;
    const table = `${quoteIdent(this.schema)}.${ARCHIVE_TABLES[this.type]}`;
    const cols = this.type === 'trade' ? TRADE_COLUMNS : QUOTE_COLUMNS;
    const values: unknown[] = [
      this.encoder.timestamp(r.from.toString()),
      // ts is ts_ns truncated to the microsecond, so the last nanosecond before `to` bounds it from above.
      this.encoder.timestamp((r.to - 1n).toString()),
      r.from.toString(),
      r.to.toString(),
    ];
    const where = ['ts >= $1', 'ts <= $2', 'ts_ns >= $3', 'ts_ns < $4'];
    if (r.symbols !== undefined) {
      values.push([...r.symbols]);
      where.push(`symbol = ANY($${values.length}::text[])`);
    }
    if (r.sources !== undefined) {
      values.push([...r.sources]);
      where.push(`source = ANY($${values.length}::text[])`);
    }
    if (this.last !== undefined) {
      const ns = this.last.ts.toString();
      values.push(this.encoder.timestamp(ns), ns, String(this.last.seq), this.last.source, this.last.symbol);
      const n = values.length;
      where.push(
        `(ts, ts_ns, seq, source, symbol) > ($${n - 4}::timestamptz, $${n - 3}::bigint, $${n - 2}::bigint, $${n - 1}, $${n})`,
      );
    }
    return {
      text:
        `SELECT ${cols.slice(1).join(', ')} FROM ${table} WHERE ${where.join(' AND ')} ` +
        `ORDER BY ts, ts_ns, seq, source, symbol LIMIT ${this.size}`,
      values,
    };
  }
}

// Row layouts: the table columns without ts (ts_ns carries the exact time); int8 and numeric arrive as text.
function tradeOf(r: unknown[]): Trade {
  return {
    type: 'trade',
    ts: BigInt(r[0] as string),
    source: r[1] as string,
    symbol: r[2] as string,
    seq: Number(r[3]),
    venue: r[4] as string,
    price: Number(r[5]),
    size: Number(r[6]),
    side: r[7] as Trade['side'],
  };
}

function quoteOf(r: unknown[]): Quote {
  return {
    type: 'quote',
    ts: BigInt(r[0] as string),
    source: r[1] as string,
    symbol: r[2] as string,
    seq: Number(r[3]),
    venue: r[4] as string,
    bidPrice: Number(r[5]),
    bidSize: Number(r[6]),
    askPrice: Number(r[7]),
    askSize: Number(r[8]),
  };
}

/** Exact row counts, optionally for one source (the demo prints them). */
export async function archiveCounts(
  pool: PgPool,
  schema: string,
  filter: { source?: string } = {},
): Promise<{ trades: number; quotes: number }> {
  const q = quoteIdent(schema);
  const where = filter.source === undefined ? '' : 'WHERE source = $1';
  const values = filter.source === undefined ? [] : [filter.source];
  const { rows } = await pool.query<{ trades: string; quotes: string }>(
    `SELECT (SELECT count(*) FROM ${q}.trades ${where}) AS trades, (SELECT count(*) FROM ${q}.quotes ${where}) AS quotes`,
    values,
  );
  return { trades: Number(rows[0]?.trades ?? 0), quotes: Number(rows[0]?.quotes ?? 0) };
}

export { MigrationError };
