import { readFileSync } from 'node:fs';
import {
  createBuffer,
  createTransport,
  type Sender,
  type SenderOptions,
  type SenderTransport,
} from '@questdb/nodejs-client';
import type { Config } from '../../shared/config.ts';
import { ConfigError, SinkError, errorMessage, isRetriable } from '../../shared/errors.ts';
import { backoffMs, once, sleep } from '../../shared/lifecycle.ts';
import type { Logger } from '../../shared/logger.ts';
import { packagePath } from '../../shared/paths.ts';
import type { Tick } from '../../shared/model.ts';
import {
  IlpFlushTimeout,
  QuestDbError,
  QuestDbHttp,
  checkDedupTable,
  classifyIlpError,
  ilpSenderOptions,
  ddlStatements,
  flushWithin,
  hotTables,
  parseClientConf,
  questdbEndpoint,
  resumeWalHint,
  serverVersion,
  supportsTimestampNs,
  walTables,
} from '../../shared/questdb.ts';
import { IlpRows } from '../../shared/ilp.ts';
import type { Sink } from '../sink.ts';

/**
 * The hot writer: trades and quotes into QuestDB over ILP through the official client's transport (HTTP,
 * auth, TLS, retries), configured by QuestDB's own configuration string (QDB_CLIENT_CONF) exactly as given.
 * The rows are built by shared/ilp.ts, byte for byte what the client's buffer writes (ADR 0017).
 *
 * - start() creates the tables from infra/questdb/tables.sql through /exec (idempotent), with the exchange
 *   time as designated timestamp (TIMESTAMP_NS where the server has it) and DEDUP UPSERT KEYS over the tick
 *   identity, then checks that the keys are really in place: without them a redelivery would store twice.
 * - Each batch is one ILP request: write() builds its rows, flush() sends them. Designated timestamps are
 *   always the tick's bigint nanoseconds, so a unit mistake cannot put a tick in 1970. write/flush/close run one at a time (a flush in flight never overlaps another, and a
 *   failed flush cannot discard rows written meanwhile).
 * - The client's auto-flush is switched off whatever the string says: an automatic flush in the middle of a
 *   batch would send rows the worker has not decided to acknowledge yet and split one batch into several
 *   requests. Everything else in the string is the client's business.
 * - After any failure the rows are reset, so the worker's retry sends exactly its batch again; each request
 *   sends its own copy of the rows, so a retry the transport still makes of a failed one sends that batch.
 *   A flush that never settles (client 4.2's default undici transport does not when the connection is
 *   refused) is abandoned after retry_timeout + request_timeout: the request is inert by then, and a new
 *   transport is built from the already negotiated options.
 *   Retriable (unreachable, timeout, 5xx, auth): the entries stay pending. Not retriable (QuestDB rejected a
 *   row: 400): the worker splits the batch and dead-letters the tick at fault. A request that fails writes
 *   nothing for a single table; across two tables QuestDB may have committed one of them, which DEDUP turns
 *   into a harmless rewrite on retry.
 */

const DDL_FILE = packagePath('infra', 'questdb', 'tables.sql');

type TimestampType = 'TIMESTAMP_NS' | 'TIMESTAMP';

export interface QuestDbSinkOptions {
  settings: Config['questdb'];
  log: Logger;
}

/** Rows encoded between turns of the event loop in write() (a few milliseconds of encoding). */
export const YIELD_EVERY_ROWS = 4096;

export interface QuestDbSinkStats {
  rows: number;
  flushes: number;
  failedFlushes: number;
  /** Flushes not sent because /ping did not answer after a failure. */
  probesFailed: number;
}

/** The ILP columns of one tick: symbols first (ILP requires it), then fields, then the designated time. */
export async function appendTick(
  sender: Sender,
  tables: { trades: string; quotes: string },
  t: Tick,
): Promise<void> {
  if (t.type === 'trade') {
    sender.table(tables.trades).symbol('source', t.source).symbol('symbol', t.symbol);
    // Empty strings would be empty symbols; leaving the column out stores NULL, which is what '' means here.
    if (t.venue !== '') sender.symbol('venue', t.venue);
    if (t.side !== '') sender.symbol('side', t.side);
    sender.intColumn('seq', t.seq).floatColumn('price', t.price).floatColumn('size', t.size);
  } else {
    sender.table(tables.quotes).symbol('source', t.source).symbol('symbol', t.symbol);
    if (t.venue !== '') sender.symbol('venue', t.venue);
    sender
      .intColumn('seq', t.seq)
      .floatColumn('bid_price', t.bidPrice)
      .floatColumn('bid_size', t.bidSize)
      .floatColumn('ask_price', t.askPrice)
      .floatColumn('ask_size', t.askSize);
  }
  await sender.at(t.ts, 'ns');
}

/** The statements of infra/questdb/tables.sql with the placeholders filled in. */
export function tableStatements(
  prefix: string,
  ts: TimestampType,
  source = readFileSync(DDL_FILE, 'utf8'),
): string[] {
  return ddlStatements(source, { prefix, ts });
}

/** Moved to shared/questdb.ts (the bars outbox uses it too); re-exported for existing importers. */
export { classifyIlpError };

const IDENTITY = ['ts', 'source', 'symbol', 'seq'];
/** The client's `max_buf_size` when the configuration string gives none. */
const DEFAULT_MAX_BUF_SIZE = 100 * 1024 * 1024;

interface IlpClient {
  transport: SenderTransport;
  rows: IlpRows;
}
const PING_TIMEOUT_MS = 2000;

export class QuestDbSink implements Sink {
  readonly name = 'questdb';
  readonly tables: { trades: string; quotes: string };
  readonly stats: QuestDbSinkStats = { rows: 0, flushes: 0, failedFlushes: 0, probesFailed: 0 };
  /** The designated timestamp type of the trades table, known after start(). */
  timestampType: TimestampType | undefined;
  private readonly settings: Config['questdb'];
  private readonly clientConf: string;
  private readonly http: QuestDbHttp;
  private readonly log: Logger;
  /** The client's transport (HTTP, auth, TLS, retries) and our rows (shared/ilp.ts), made together. */
  private client: IlpClient | undefined;
  /** The client options after negotiation with the server, to rebuild a transport without asking again. */
  private senderOptions: SenderOptions | undefined;
  private tablesReady = false;
  /** The last flush failed for a reason that was not the data's: probe /ping before sending a batch. */
  private unhealthy = false;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(options: QuestDbSinkOptions) {
    const { settings } = options;
    if (settings.clientConf === undefined) {
      throw new ConfigError('the questdb sink needs QDB_CLIENT_CONF (e.g. "http::addr=localhost:9000;")');
    }
    this.settings = settings;
    this.clientConf = settings.clientConf;
    if (parseClientConf(settings.clientConf).protocol.startsWith('tcp')) {
      // Acknowledging a stream entry promises the rows are stored; ILP over TCP never says whether they were.
      throw new ConfigError(
        'QDB_CLIENT_CONF: the hot writer needs ILP over HTTP (http:: or https::); tcp:: does not confirm writes, ' +
          'so entries would be acknowledged for rows the server may have dropped',
      );
    }
    this.http = new QuestDbHttp(questdbEndpoint(settings)!, settings.requestTimeoutMs);
    this.tables = hotTables(settings.tablePrefix);
    this.log = options.log;
  }

  /** Create and check the tables and the client, retrying while QuestDB is unreachable (startTimeoutMs). */
  async start(): Promise<void> {
    await this.serial(async () => {
      const deadline = Date.now() + this.settings.startTimeoutMs;
      for (let attempt = 1; ; attempt++) {
        try {
          if (!this.tablesReady) await this.ensureTables();
          this.client ??= await this.createClient();
          return;
        } catch (err) {
          if (!isRetriable(err) || Date.now() >= deadline) throw err;
          const waitMs = Math.min(backoffMs(attempt, 250, 5000), Math.max(0, deadline - Date.now()));
          this.log.warn({ err, attempt, waitMs }, 'QuestDB not ready: retrying');
          await sleep(waitMs);
        }
      }
    });
  }

  write(ticks: readonly Tick[]): Promise<void> {
    return this.serial(async () => {
      const { rows } = (this.client ??= await this.createClient());
      try {
        for (let i = 0; i < ticks.length; i++) {
          rows.add(ticks[i]!);
          // About a microsecond a row: a read of 65k ticks would still hold the event loop for tens of
          // milliseconds, and /healthz, /metrics and timers with it.
          if (i % YIELD_EVERY_ROWS === YIELD_EVERY_ROWS - 1) await new Promise((r) => setImmediate(r));
        }
      } catch (err) {
        // A value the client would refuse (shared/ilp.ts checks what it checks): the data is at fault, and the
        // rows already appended must not ride along with the next flush.
        this.discard();
        // The reason goes to the dead letter, which records the message only: it stays in the message.
        throw new SinkError(`QuestDB client rejected a row: ${errorMessage(err)}`, { retriable: false });
      }
    });
  }

  flush(): Promise<void> {
    return this.serial(() => this.flushNow());
  }

  /** Flush what is staged, then close the client. The client's own close() would drop the buffer. */
  readonly close = once(async () => {
    try {
      await this.flush();
    } finally {
      await this.serial(async () => {
        const client = this.client;
        this.client = undefined;
        if (client !== undefined) await client.transport.close();
      });
    }
  });

  private async flushNow(): Promise<void> {
    const client = this.client;
    if (client === undefined || client.rows.rows === 0) return;
    const rows = client.rows.rows;
    if (!this.tablesReady) {
      try {
        await this.ensureTables();
      } catch (err) {
        // Whatever is wrong with the tables, it is not the ticks' fault: keep them pending, never dead-letter.
        this.stats.failedFlushes++;
        this.discard();
        throw new SinkError('QuestDB tables not ready', { retriable: true, cause: err });
      }
    }
    if (this.unhealthy && !(await this.http.ping(Math.min(this.settings.flushTimeoutMs, PING_TIMEOUT_MS)))) {
      // After an outage, a cheap probe instead of the whole batch: the batch goes once QuestDB answers.
      this.stats.failedFlushes++;
      this.stats.probesFailed++;
      this.discard();
      throw new SinkError(`QuestDB unavailable: ${this.http.endpoint.url}/ping does not answer`, {
        retriable: true,
      });
    }
    try {
      await this.sendGuarded(client);
    } catch (err) {
      this.stats.failedFlushes++;
      this.discard();
      if (isRetriable(err)) {
        this.unhealthy = true;
        this.renewTransport(client);
      }
      if (err instanceof QuestDbError || err instanceof SinkError) throw err;
      const c = classifyIlpError(err);
      if (c.retriable && c.status !== undefined && c.status < 500) this.tablesReady = false;
      const status = c.status === undefined ? '' : ` (HTTP ${c.status})`;
      if (c.retriable) {
        this.unhealthy = true;
        this.renewTransport(client);
        throw new SinkError(`QuestDB unavailable${status}`, { retriable: true, cause: err });
      }
      // Not retriable: the worker dead-letters with the message alone, so the server's reason is in it.
      throw new SinkError(`QuestDB rejected the batch${status}: ${c.reason}`, { retriable: false });
    }
    this.unhealthy = false;
    client.rows.reset();
    this.stats.rows += rows;
    this.stats.flushes++;
  }

  /** The rows in one request, abandoned when it outlives the client's own retry and request timeouts. */
  private async sendGuarded(client: IlpClient): Promise<void> {
    const options = this.senderOptions;
    try {
      // A copy, as the client's own flush sends: a failed request may still be retried by its transport after
      // this call has given up on it, and the rows' buffer is rewritten for the next attempt meanwhile.
      await flushWithin(client.transport.send(Buffer.from(client.rows.view())), options);
    } catch (err) {
      // Retriable: flushNow replaces the transport the abandoned request holds (renewTransport).
      if (err instanceof IlpFlushTimeout) {
        throw new SinkError('QuestDB unavailable', { retriable: true, cause: err });
      }
      throw err;
    }
  }

  /**
   * After a failure that was not the data's, a fresh transport, as a fresh client gave before: over https its
   * own connection pool (a failed one can stay stuck on the dead connection, requests timing out even once
   * QuestDB is back); over http the client's transports share one default pool.
   */
  private renewTransport(failed: IlpClient): void {
    const options = this.senderOptions;
    if (this.client !== failed || options === undefined) return;
    this.client = { transport: createTransport(options), rows: failed.rows };
    failed.transport
      .close()
      .catch((err: unknown) => this.log.debug({ err }, 'closing a failed QuestDB transport'));
  }

  /** Forget everything staged: the worker writes the whole batch again after any failure. */
  private discard(): void {
    this.client?.rows.reset();
  }

  private async createClient(): Promise<IlpClient> {
    const log = this.log;
    const options = await ilpSenderOptions(this.clientConf, log, {
      flushTimeoutMs: this.settings.flushTimeoutMs,
    });
    this.senderOptions = options;
    const client = this.newClient(options);
    // Every ILP version sends the designated timestamp in nanoseconds, and the server stores all nine digits in
    // a TIMESTAMP_NS column (QuestDB 9.1 over version 1: field-exact). Doubles go as text in version 1 (the
    // shortest text that reads back as the same double) and in binary from version 2: exact either way.
    log.debug({ protocolVersion: options.protocol_version }, 'QuestDB client ready');
    return client;
  }

  private newClient(options: SenderOptions): IlpClient {
    const version = options.protocol_version;
    if (version !== '1' && version !== '2' && version !== '3') {
      throw new ConfigError(`QDB_CLIENT_CONF: ILP protocol version ${String(version)} is not supported`);
    }
    // The client's own checks of the table names (characters, length), once: the rows are written here.
    const probe = createBuffer(options);
    probe.table(this.tables.trades);
    probe.reset().table(this.tables.quotes);
    return {
      transport: createTransport(options),
      rows: new IlpRows({
        protocolVersion: version,
        tables: this.tables,
        maxBytes: options.max_buf_size ?? DEFAULT_MAX_BUF_SIZE,
        initialBytes: options.init_buf_size ?? undefined,
      }),
    };
  }

  /** CREATE TABLE IF NOT EXISTS for both tables, then check their designated timestamp and dedup keys. */
  private async ensureTables(): Promise<void> {
    const { type, certain } = await this.wantedTimestampType();
    try {
      for (const sql of tableStatements(this.settings.tablePrefix, type)) await this.http.exec(sql);
    } catch (err) {
      if (certain || type !== 'TIMESTAMP_NS' || isRetriable(err)) throw err;
      this.log.info({ err }, 'server refused TIMESTAMP_NS: falling back to TIMESTAMP (microseconds)');
      for (const sql of tableStatements(this.settings.tablePrefix, 'TIMESTAMP')) await this.http.exec(sql);
    }
    for (const table of [this.tables.trades, this.tables.quotes]) await this.checkTable(table);
    await this.warnIfSuspended();
    this.tablesReady = true;
  }

  private async wantedTimestampType(): Promise<{ type: TimestampType; certain: boolean }> {
    if (this.settings.timestamp === 'ns') return { type: 'TIMESTAMP_NS', certain: true };
    if (this.settings.timestamp === 'us') return { type: 'TIMESTAMP', certain: true };
    const version = await serverVersion(this.http);
    if (version === undefined) return { type: 'TIMESTAMP_NS', certain: false };
    this.log.info({ version: `${version.major}.${version.minor}.${version.patch}` }, 'QuestDB server');
    return { type: supportsTimestampNs(version) ? 'TIMESTAMP_NS' : 'TIMESTAMP', certain: true };
  }

  private async checkTable(table: string): Promise<void> {
    const type = (await checkDedupTable(
      this.http,
      table,
      IDENTITY,
      'the tick identity',
      this.log,
    )) as TimestampType;
    if (table === this.tables.trades) this.timestampType = type;
    if (type !== 'TIMESTAMP_NS') {
      this.log.info(
        { table, type },
        'designated timestamp in microseconds: the nanosecond digits are dropped',
      );
    }
  }

  private async warnIfSuspended(): Promise<void> {
    const ours = new Set([this.tables.trades, this.tables.quotes]);
    for (const t of await walTables(this.http)) {
      if (ours.has(t.name) && t.suspended) {
        this.log.warn(
          { table: t.name, error: t.errorMessage, hint: resumeWalHint(t.name) },
          'WAL table is suspended: writes are accepted but not applied until it is resumed',
        );
      }
    }
  }

  /** One operation at a time, in call order; a failure does not block the next one. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}
