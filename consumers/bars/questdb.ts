import { readFileSync } from 'node:fs';
import { Sender, type SenderOptions } from '@questdb/nodejs-client';
import type { Config } from '../../shared/config.ts';
import { ConfigError, SinkError, errorMessage } from '../../shared/errors.ts';
import { backoffMs } from '../../shared/lifecycle.ts';
import type { Logger } from '../../shared/logger.ts';
import { packagePath } from '../../shared/paths.ts';
import { inTransaction, withClient, type PgPool } from '../../shared/pg.ts';
import {
  IlpFlushTimeout,
  barsTable,
  checkDedupTable,
  classifyIlpError,
  createIlpSender,
  ddlStatements,
  flushWithin,
  parseClientConf,
  requireQuestDbHttp,
  type QuestDbHttp,
} from '../../shared/questdb.ts';
import type { BarRow, BarStore } from './store.ts';

/**
 * Closed bars into QuestDB (table `<prefix>bars`) through an outbox in PostgreSQL, so that neither a crash nor
 * a QuestDB outage loses one, and an outage never holds the bars pipeline back.
 *
 * - The outbox is the bars table itself (infra/migrations/0004 and 0006): a closed bar whose `qdb_synced_rev`
 *   is NULL is not yet in QuestDB. Closing or amending a bar gives it a new rev and sets qdb_synced_rev back to
 *   NULL in the bars transaction, so the outbox entry commits with the bar.
 * - A push, in one PostgreSQL transaction: take the outbox's advisory lock (try: another process pushing
 *   means nothing to do now), read up to `batch` unsynced bars, oldest bar first, send them as one ILP
 *   request over HTTP, and once QuestDB confirmed it mark them synced at the rev sent (a bar amended
 *   meanwhile keeps its new rev unsynced). One pusher at a time per schema means an older revision can never
 *   reach QuestDB after a newer one. DEDUP UPSERT KEYS(ts, symbol, tf) makes a bar sent twice (a crash
 *   between the request and the commit) replace itself.
 * - When: kick() after each bars commit that closed or amended a bar, start() for what an earlier run left,
 *   and a timer every `intervalMs` (rows closed by a rebuild or skipped while another process pushed).
 *   Pushes never overlap; a full batch is followed at once by the next. A failure is logged, leaves the rows
 *   where they are and is retried with backoff (capped at `intervalMs`); kicks wait for that retry. The bars
 *   flush does not wait for any of this: PostgreSQL already has the bars.
 * - This object owns its ILP client and closes it; the pool belongs to the bars sink.
 */

const DDL_FILE = packagePath('infra', 'questdb', 'bars.sql');
const KEYS = ['ts', 'symbol', 'tf'];
/** Advisory lock class of the outbox ("qdbo"); the schema's hash is the second key. */
const OUTBOX_LOCK = 0x7164626f;

export interface BarsQuestDbOptions {
  pool: PgPool;
  store: BarStore;
  settings: Config['questdb'];
  /** Bars per ILP request. */
  batch: number;
  /** The idle sweep's period and the retry backoff's ceiling. */
  intervalMs: number;
  log: Logger;
}

export interface BarsQuestDbStats {
  /** Bars QuestDB confirmed. */
  sent: number;
  /** Of those, bars marked synced (the rest changed meanwhile, or a bars writer held them: sent again). */
  marked: number;
  requests: number;
  failures: number;
  /** Pushes that found another process holding the outbox. */
  busy: number;
  lastError: string | undefined;
}

export type PushResult = { busy: true } | { busy: false; sent: number; marked: number };

/** The ILP row of a bar: symbols first (ILP requires it), then fields, then the bar start. */
export async function appendBar(sender: Sender, table: string, r: BarRow): Promise<void> {
  sender
    .table(table)
    .symbol('symbol', r.symbol)
    .symbol('tf', r.tf)
    .floatColumn('open', r.open)
    .floatColumn('high', r.high)
    .floatColumn('low', r.low)
    .floatColumn('close', r.close)
    .floatColumn('volume', Number(r.volume));
  // No volume, no VWAP: leaving the column out stores NULL.
  if (r.vwap !== null) sender.floatColumn('vwap', r.vwap);
  sender.intColumn('trades', r.trades).intColumn('late', r.late).intColumn('rev', Number(r.rev));
  // Nanoseconds with their unit, whatever the column's: a unit mistake cannot put a bar in 1970.
  await sender.at(r.start, 'ns');
}

/** The statements of infra/questdb/bars.sql for a table prefix. */
export function barsTableStatements(prefix: string, source = readFileSync(DDL_FILE, 'utf8')): string[] {
  return ddlStatements(source, { prefix });
}

export class BarsQuestDbOutbox {
  readonly table: string;
  readonly stats: BarsQuestDbStats = {
    sent: 0,
    marked: 0,
    requests: 0,
    failures: 0,
    busy: 0,
    lastError: undefined,
  };
  private readonly o: BarsQuestDbOptions;
  private readonly clientConf: string;
  private readonly http: QuestDbHttp;
  private ilp: { sender: Sender; options: SenderOptions } | undefined;
  private tableReady = false;
  private running: Promise<void> | undefined;
  private again = false;
  /** Consecutive failed pushes; while above 0, kicks wait for the retry timer. */
  private failing = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(options: BarsQuestDbOptions) {
    const { settings } = options;
    if (settings.clientConf === undefined) {
      throw new ConfigError(
        'the bars QuestDB outbox needs QDB_CLIENT_CONF (e.g. "http::addr=localhost:9000;")',
      );
    }
    if (parseClientConf(settings.clientConf).protocol.startsWith('tcp')) {
      // Marking a bar as in QuestDB needs the server's word for it; ILP over TCP never gives it.
      throw new ConfigError(
        'QDB_CLIENT_CONF: bars go to QuestDB over ILP over HTTP (http:: or https::); tcp:: does not confirm ' +
          'writes, so bars would be marked as stored that the server may have dropped',
      );
    }
    this.o = options;
    this.clientConf = settings.clientConf;
    this.http = requireQuestDbHttp(settings);
    this.table = barsTable(settings.tablePrefix);
  }

  /** Send what earlier runs left in the outbox, then keep sweeping. Never throws: QuestDB may be down. */
  start(): void {
    this.trigger();
  }

  /** Bars were closed or amended: push soon, unless a failed push is waiting for its retry. */
  kick(): void {
    if (this.failing === 0) this.trigger();
  }

  /** Resolves once no push is running (a kick during one runs another right after it). */
  async idle(): Promise<void> {
    while (this.running !== undefined) await this.running;
  }

  /** Stop the timer, let a running push finish (bounded by the client's timeouts), close the client. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      clearTimeout(this.timer);
      await this.idle();
      const ilp = this.ilp;
      this.ilp = undefined;
      if (ilp !== undefined) await ilp.sender.close();
    })();
    return this.closing;
  }

  /** One push: lock, read a batch, send it, mark it. Throws when PostgreSQL or QuestDB fails. */
  async pushOnce(): Promise<PushResult> {
    const { pool, store } = this.o;
    return withClient(pool, (client) =>
      inTransaction(client, async () => {
        const { rows } = await client.query<{ ok: boolean }>(
          'SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS ok',
          [OUTBOX_LOCK, store.settings.schema],
        );
        if (rows[0]?.ok !== true) {
          this.stats.busy++;
          return { busy: true };
        }
        const bars = await store.unsyncedBars(client, this.o.batch);
        if (bars.length === 0) return { busy: false, sent: 0, marked: 0 };
        await this.send(bars);
        const marked = await store.markSynced(client, bars);
        this.stats.sent += bars.length;
        this.stats.marked += marked;
        return { busy: false, sent: bars.length, marked };
      }),
    );
  }

  private trigger(): void {
    if (this.closed) return;
    if (this.running !== undefined) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.drain().finally(() => {
      this.running = undefined;
    });
  }

  /** Push until the outbox is empty (or busy elsewhere), then arm the timer for the next sweep or retry. */
  private async drain(): Promise<void> {
    const { intervalMs, log } = this.o;
    let nextMs = intervalMs;
    try {
      do {
        this.again = false;
        const r = await this.pushOnce();
        if (r.busy) {
          // The other process's push may have read its batch before our bars committed: look again soon.
          nextMs = Math.min(intervalMs, 1000);
          break;
        }
        if (r.sent === this.o.batch) this.again = true;
      } while (this.again && !this.closed);
      if (this.failing > 0) log.info({ table: this.table }, 'QuestDB outbox: sending bars again');
      this.failing = 0;
    } catch (err) {
      this.failing++;
      this.stats.failures++;
      this.stats.lastError = errorMessage(err);
      nextMs = backoffMs(this.failing, Math.min(250, intervalMs), intervalMs);
      // Every failure would flood the log during a long outage: the first, then every tenth.
      const level = this.failing === 1 || this.failing % 10 === 0 ? 'warn' : 'debug';
      log[level](
        { err, table: this.table, attempt: this.failing, retryInMs: nextMs },
        'QuestDB outbox: bars not sent, they stay in the outbox',
      );
    }
    if (!this.closed) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.trigger();
      }, nextMs);
      this.timer.unref();
    }
  }

  /** One ILP request with these bars; on any failure the client's buffer is emptied. */
  private async send(bars: readonly BarRow[]): Promise<void> {
    if (!this.tableReady) await this.ensureTable();
    this.ilp ??= await createIlpSender(this.clientConf, this.o.log);
    const { sender, options } = this.ilp;
    try {
      for (const b of bars) await appendBar(sender, this.table, b);
      await flushWithin(sender.flush(), options);
      this.stats.requests++;
    } catch (err) {
      sender.reset();
      if (err instanceof IlpFlushTimeout) {
        // The abandoned request holds the old client's transport; a fresh client starts clean.
        this.ilp = { sender: new Sender(options), options };
        throw new SinkError(`QuestDB unavailable: ${err.message}`, { retriable: true, cause: err });
      }
      const c = classifyIlpError(err);
      // A missing or changed table answers 4xx: check (and create) it again before the next attempt.
      if (c.retriable && c.status !== undefined && c.status < 500) this.tableReady = false;
      throw new SinkError(
        `QuestDB ${c.retriable ? 'unavailable' : 'rejected the bars'}${c.status === undefined ? '' : ` (HTTP ${c.status})`}: ${c.reason}`,
        { retriable: c.retriable, cause: err },
      );
    }
  }

  /** CREATE TABLE IF NOT EXISTS through /exec, then check its designated timestamp and dedup keys. */
  private async ensureTable(): Promise<void> {
    for (const sql of barsTableStatements(this.o.settings.tablePrefix)) await this.http.exec(sql);
    await checkDedupTable(this.http, this.table, KEYS, 'the bar key', this.o.log);
    this.tableReady = true;
  }
}
