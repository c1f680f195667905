import { Sender, SenderOptions } from '@questdb/nodejs-client';
import type { Config } from './config.ts';
import { ConfigError, SinkError, TickstreamError, errorMessage } from './errors.ts';
import type { Logger } from './logger.ts';

/**
 * What the QuestDB writers (the hot writer, consumers/sinks/questdb.ts, and the bars outbox,
 * consumers/bars/questdb.ts) share, and what `tickstream status` and `tickstream sql` use:
 *
 * - QuestDB's HTTP query API (`/exec`) for DDL, table checks and queries;
 * - the official ILP client set up the same way for both writers (auto-flush off, a flush that never settles
 *   abandoned) and its errors sorted into retriable or not.
 *
 * The endpoint is QDB_HTTP_URL when set, otherwise derived from the client configuration string
 * (QDB_CLIENT_CONF): same host, port 9000 for tcp:: (the ILP/TCP port 9009 does not serve HTTP), and the
 * string's username/password (Basic) or, for http(s), token (Bearer) as credentials.
 */

export interface QuestDbEndpoint {
  /** Base URL without a trailing slash, e.g. http://localhost:9000 */
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
}

export interface ClientConf {
  readonly protocol: string;
  readonly params: ReadonlyMap<string, string>;
}

/** A failed /exec call. Retriable when QuestDB was unreachable, timed out or answered 5xx. */
export class QuestDbError extends TickstreamError {
  override name = 'QuestDbError';
  /** HTTP status, when QuestDB answered. */
  readonly status: number | undefined;
  constructor(message: string, options: { retriable: boolean; status?: number; cause?: unknown }) {
    super(message, options);
    this.status = options.status;
  }
}

/**
 * Parse QuestDB's configuration string ("http::addr=host:9000;username=u;password=p;"): `;;` stands for a
 * literal semicolon inside a value, as in every QuestDB client.
 */
export function parseClientConf(conf: string): ClientConf {
  const sep = conf.indexOf('::');
  if (sep <= 0) {
    throw new ConfigError(
      'QDB_CLIENT_CONF: expected "<protocol>::addr=host:port;..." (e.g. http::addr=localhost:9000;)',
    );
  }
  const protocol = conf.slice(0, sep).toLowerCase();
  const params = new Map<string, string>();
  const rest = conf.slice(sep + 2);
  let i = 0;
  while (i < rest.length) {
    const eq = rest.indexOf('=', i);
    if (eq < 0) {
      if (rest.slice(i).trim() !== '')
        throw new ConfigError(`QDB_CLIENT_CONF: "${rest.slice(i)}" has no value`);
      break;
    }
    const key = rest.slice(i, eq).trim();
    let value = '';
    let j = eq + 1;
    for (; j < rest.length; j++) {
      const c = rest[j];
      if (c === ';') {
        if (rest[j + 1] === ';') {
          value += ';';
          j++;
          continue;
        }
        break;
      }
      value += c;
    }
    params.set(key, value);
    i = j + 1;
  }
  return { protocol, params };
}

/** The /exec endpoint for this configuration, or undefined when QuestDB is not configured at all. */
export function questdbEndpoint(settings: Config['questdb']): QuestDbEndpoint | undefined {
  const conf = settings.clientConf === undefined ? undefined : parseClientConf(settings.clientConf);
  const headers: Record<string, string> = {};
  if (conf !== undefined) {
    const user = conf.params.get('username');
    const password = conf.params.get('password');
    const token = conf.params.get('token');
    if (user !== undefined && password !== undefined) {
      headers.authorization = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    } else if (token !== undefined && (conf.protocol === 'http' || conf.protocol === 'https')) {
      // Over tcp:: the token is a JWK private key, not a bearer token.
      headers.authorization = `Bearer ${token}`;
    }
  }
  if (settings.httpUrl !== undefined) return { url: settings.httpUrl.replace(/\/+$/, ''), headers };
  if (conf === undefined) return undefined;
  const addr = conf.params.get('addr');
  if (addr === undefined || addr === '') throw new ConfigError('QDB_CLIENT_CONF: the "addr" key is missing');
  const secure = conf.protocol === 'https' || conf.protocol === 'tcps';
  if (!['http', 'https', 'tcp', 'tcps'].includes(conf.protocol)) {
    throw new ConfigError(`QDB_CLIENT_CONF: unknown protocol "${conf.protocol}" (http, https, tcp or tcps)`);
  }
  const { host, port } = splitHostPort(addr);
  const httpPort = conf.protocol.startsWith('tcp') || port === undefined ? 9000 : port;
  return { url: `${secure ? 'https' : 'http'}://${host}:${httpPort}`, headers };
}

function splitHostPort(addr: string): { host: string; port: number | undefined } {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(addr);
  if (bracketed !== null) {
    return {
      host: `[${bracketed[1]!}]`,
      port: bracketed[2] === undefined ? undefined : Number(bracketed[2]),
    };
  }
  const m = /^([^:]+)(?::(\d+))?$/.exec(addr);
  if (m === null) throw new ConfigError(`QDB_CLIENT_CONF: cannot read addr "${addr}" (expected host:port)`);
  return { host: m[1]!, port: m[2] === undefined ? undefined : Number(m[2]) };
}

export interface ExecColumn {
  readonly name: string;
  readonly type: string;
}

/** A query's answer; DDL and DML answer with no columns. */
export interface ExecResult {
  readonly columns: readonly ExecColumn[];
  readonly dataset: readonly (readonly unknown[])[];
  /** Rows the query produced in total (may exceed dataset.length when a limit applied). */
  readonly count: number;
  /** The raw JSON QuestDB sent back. */
  readonly raw: Record<string, unknown>;
}

export class QuestDbHttp {
  readonly endpoint: QuestDbEndpoint;
  private readonly timeoutMs: number;

  constructor(endpoint: QuestDbEndpoint, timeoutMs: number) {
    this.endpoint = endpoint;
    this.timeoutMs = timeoutMs;
  }

  /** Run one statement. Throws QuestDbError: retriable for unreachable/timeout/5xx, not for a rejected query. */
  async exec(sql: string, options: { limit?: number } = {}): Promise<ExecResult> {
    const params = new URLSearchParams({ query: sql, count: 'true' });
    if (options.limit !== undefined) params.set('limit', String(options.limit));
    const url = `${this.endpoint.url}/exec?${params.toString()}`;
    let response: Response;
    try {
      response = await fetch(url, {
        headers: this.endpoint.headers,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
      throw new QuestDbError(
        timedOut
          ? `QuestDB at ${this.endpoint.url} did not answer within ${this.timeoutMs} ms`
          : `cannot reach QuestDB at ${this.endpoint.url}: ${networkReason(err)}`,
        { retriable: true, cause: err },
      );
    }
    const text = await response.text();
    let body: Record<string, unknown> = {};
    try {
      const parsed: unknown = text === '' ? {} : JSON.parse(text);
      if (parsed !== null && typeof parsed === 'object') body = parsed as Record<string, unknown>;
    } catch {
      body = { error: text.slice(0, 500) };
    }
    if (!response.ok || typeof body.error === 'string') {
      const reason = typeof body.error === 'string' ? body.error : `HTTP ${response.status}`;
      const where = typeof body.position === 'number' ? ` (at position ${body.position})` : '';
      const retriable = response.status >= 500 || response.status === 429;
      throw new QuestDbError(
        retriable
          ? `QuestDB failed (HTTP ${response.status}): ${reason}`
          : `QuestDB rejected the query: ${reason}${where}`,
        { retriable, status: response.status },
      );
    }
    const columns = Array.isArray(body.columns) ? (body.columns as ExecColumn[]) : [];
    const dataset = Array.isArray(body.dataset) ? (body.dataset as unknown[][]) : [];
    const count = typeof body.count === 'number' ? body.count : dataset.length;
    return { columns, dataset, count, raw: body };
  }

  /** GET /ping: true when QuestDB's HTTP server answers with a 2xx within `timeoutMs`. */
  async ping(timeoutMs: number): Promise<boolean> {
    try {
      const response = await fetch(`${this.endpoint.url}/ping`, {
        headers: this.endpoint.headers,
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.arrayBuffer();
      return response.ok;
    } catch {
      return false;
    }
  }

  /** Rows as objects keyed by column name. */
  async rows(sql: string, options: { limit?: number } = {}): Promise<Record<string, unknown>[]> {
    return rowsOf(await this.exec(sql, options));
  }
}

export function rowsOf(result: ExecResult): Record<string, unknown>[] {
  return result.dataset.map((row) => {
    const o: Record<string, unknown> = {};
    result.columns.forEach((c, i) => (o[c.name] = row[i]));
    return o;
  });
}

export function createQuestDbHttp(settings: Config['questdb']): QuestDbHttp | undefined {
  const endpoint = questdbEndpoint(settings);
  return endpoint === undefined ? undefined : new QuestDbHttp(endpoint, settings.requestTimeoutMs);
}

/** Like createQuestDbHttp, for commands that cannot work without QuestDB. */
export function requireQuestDbHttp(settings: Config['questdb']): QuestDbHttp {
  const http = createQuestDbHttp(settings);
  if (http === undefined) {
    throw new ConfigError(
      'QuestDB is not configured: set QDB_CLIENT_CONF (e.g. "http::addr=localhost:9000;") or QDB_HTTP_URL',
    );
  }
  return http;
}

export interface ServerVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  readonly text: string;
}

/** The server's version from `build()`, or undefined when it cannot be read (old or unusual builds). */
export async function serverVersion(http: QuestDbHttp): Promise<ServerVersion | undefined> {
  let text: string;
  try {
    const result = await http.exec('select build()');
    text = String(result.dataset[0]?.[0] ?? '');
  } catch (err) {
    if (err instanceof QuestDbError && !err.retriable) return undefined;
    throw err;
  }
  return parseVersion(text);
}

export function parseVersion(text: string): ServerVersion | undefined {
  const m = /QuestDB (\d+)\.(\d+)\.(\d+)/.exec(text);
  if (m === null) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), text };
}

/** TIMESTAMP_NS arrived in QuestDB 9.1.0. */
export function supportsTimestampNs(v: ServerVersion): boolean {
  return v.major > 9 || (v.major === 9 && v.minor >= 1);
}

export interface WalTableState {
  readonly name: string;
  readonly suspended: boolean;
  readonly writerTxn: number | undefined;
  readonly sequencerTxn: number | undefined;
  readonly errorMessage: string | undefined;
}

/**
 * WAL tables and whether each is suspended. A suspended table still accepts ILP writes (they land in its WAL)
 * but applies none of them until someone runs `ALTER TABLE <name> RESUME WAL`, so readers see stale data.
 */
export async function walTables(http: QuestDbHttp): Promise<WalTableState[]> {
  const rows = await http.rows('select * from wal_tables()');
  return rows.map((r) => ({
    name: String(r.name),
    suspended: r.suspended === true || r.suspended === 'true',
    writerTxn: typeof r.writerTxn === 'number' ? r.writerTxn : undefined,
    sequencerTxn: typeof r.sequencerTxn === 'number' ? r.sequencerTxn : undefined,
    errorMessage: typeof r.errorMessage === 'string' && r.errorMessage !== '' ? r.errorMessage : undefined,
  }));
}

export function resumeWalHint(table: string): string {
  return `ALTER TABLE ${table} RESUME WAL`;
}

/** The hot tables' names under a prefix. */
export function hotTables(prefix: string): { trades: string; quotes: string } {
  return { trades: `${prefix}trades`, quotes: `${prefix}quotes` };
}

/** The closed bars' table under a prefix (consumers/bars/questdb.ts). */
export function barsTable(prefix: string): string {
  return `${prefix}bars`;
}

/** Rows for `tickstream status`: our tables always, any other table only when it is suspended. */
export async function questdbStatusRows(
  settings: Config['questdb'],
): Promise<Record<string, unknown>[] | undefined> {
  const http = createQuestDbHttp(settings);
  if (http === undefined) return undefined;
  const ours = new Set(Object.values(hotTables(settings.tablePrefix)));
  const bars = barsTable(settings.tablePrefix);
  const tables = await walTables(http);
  // The bars table only exists once the bars consumer has sent a closed bar: shown when it is there.
  const rows = tables
    .filter((t) => ours.has(t.name) || t.name === bars || t.suspended)
    .map((t) => ({
      table: t.name,
      wal: t.suspended ? 'SUSPENDED' : 'ok',
      writer_txn: t.writerTxn ?? '',
      sequencer_txn: t.sequencerTxn ?? '',
      txns_to_apply:
        t.writerTxn !== undefined && t.sequencerTxn !== undefined ? t.sequencerTxn - t.writerTxn : '',
      hint: t.suspended
        ? `${resumeWalHint(t.name)}${t.errorMessage === undefined ? '' : ` (after fixing: ${t.errorMessage})`}`
        : '',
    }));
  for (const name of ours) {
    if (!tables.some((t) => t.name === name)) {
      rows.push({
        table: name,
        wal: 'missing',
        writer_txn: '',
        sequencer_txn: '',
        txns_to_apply: '',
        hint: 'created when `tickstream consume questdb` starts',
      });
    }
  }
  return rows;
}

/**
 * The statements of a DDL file (infra/questdb/*.sql): comment lines dropped, split on `;`, whitespace folded,
 * `{{name}}` placeholders filled from `vars` (a placeholder without a value is a bug: it throws).
 */
export function ddlStatements(source: string, vars: Readonly<Record<string, string>>): string[] {
  return source
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('--'))
    .join('\n')
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) =>
      s
        .replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
          const value = vars[name];
          if (value === undefined) throw new Error(`DDL placeholder {{${name}}} has no value`);
          return value;
        })
        .replace(/\s+/g, ' '),
    );
}

/**
 * Check a table a writer relies on: `ts` must be its designated timestamp and `keys` its DEDUP UPSERT KEYS,
 * or rows written again (redelivery, a retried request) would be stored twice. Returns the type of `ts`.
 * `identity` names the keys in the error ("the tick identity").
 */
export async function checkDedupTable(
  http: QuestDbHttp,
  table: string,
  keys: readonly string[],
  identity: string,
  log: Logger,
): Promise<string> {
  const columns = await http.rows(`select * from table_columns('${table}')`);
  const designated = columns.find((c) => c.designated === true);
  if (designated === undefined || designated.column !== 'ts') {
    throw new SinkError(
      `QuestDB table ${table} exists without "ts" as designated timestamp; it was not created by tickstream ` +
        `(drop or rename it, or set TICKSTREAM_QDB_TABLE_PREFIX)`,
      { retriable: false },
    );
  }
  const type = String(designated.type);
  if (!columns.some((c) => 'upsertKey' in c)) {
    log.debug({ table }, 'server does not report upsert keys: dedup not verified');
    return type;
  }
  const present = new Set(columns.filter((c) => c.upsertKey === true).map((c) => String(c.column)));
  const missing = keys.filter((k) => !present.has(k));
  if (missing.length > 0) {
    throw new SinkError(
      `QuestDB table ${table} does not deduplicate on ${identity} (missing ${missing.join(', ')}), so rows ` +
        `written again would be stored twice. Fix it with: ALTER TABLE ${table} DEDUP ENABLE UPSERT KEYS(${keys.join(', ')})`,
      { retriable: false },
    );
  }
  return type;
}

export interface IlpSender {
  readonly sender: Sender;
  /** The client options after negotiation with the server, to rebuild a client without asking again. */
  readonly options: SenderOptions;
}

/**
 * A client from QuestDB's configuration string, as given, except that auto-flush is switched off: each
 * writer decides itself when a request goes out (one per batch), so no rows leave before it says so.
 * Over HTTP this asks the server (/settings) which ILP versions it speaks: retriable when it cannot.
 */
export async function createIlpSender(
  clientConf: string,
  log: Logger,
  timeouts: { flushTimeoutMs?: number } = {},
): Promise<IlpSender> {
  const options = await ilpSenderOptions(clientConf, log, timeouts);
  return { sender: new Sender(options), options };
}

/** The client options createIlpSender builds its client from (the hot writer uses the client's transport only). */
export async function ilpSenderOptions(
  clientConf: string,
  log: Logger,
  timeouts: { flushTimeoutMs?: number } = {},
): Promise<SenderOptions> {
  let options: SenderOptions;
  try {
    options = new SenderOptions(clientConf, {
      // The client logs a debug line per row; only its warnings and errors are worth our log.
      log: (level, message) => {
        if (level === 'warn' || level === 'error')
          log[level]({ component: 'questdb-client' }, String(message));
      },
    });
  } catch (err) {
    throw new ConfigError('QDB_CLIENT_CONF is not a valid QuestDB client configuration', err);
  }
  try {
    await SenderOptions.resolveAuto(options);
  } catch (err) {
    throw new SinkError('QuestDB unavailable (asking /settings for its ILP versions)', {
      retriable: true,
      cause: err,
    });
  }
  if (options.auto_flush !== false) options.auto_flush = false;
  if (timeouts.flushTimeoutMs !== undefined) {
    // The client's defaults (10 s per request plus 10 s of retries) made an outage take 21 s per attempt to
    // notice: one flush gets flushTimeoutMs in all, and the worker retries it after probing /ping.
    // Client 4.2's default (undici) transport aborts the whole request, its own retries included, when
    // retry_timeout runs out, whatever request_timeout says: retry_timeout is the flush's whole budget, so a
    // shorter one refuses every answer slower than it (a 1 s window made a busy QuestDB's 1.5 s answers fail
    // for ever). Not retry_timeout=0 either: the request is aborted before it is sent.
    const given = parseClientConf(clientConf).params;
    if (!given.has('request_timeout')) options.request_timeout = timeouts.flushTimeoutMs;
    if (!given.has('retry_timeout')) options.retry_timeout = timeouts.flushTimeoutMs;
  }
  return options;
}

/** A request outlived the client's own retry and request timeouts (see flushWithin). */
export class IlpFlushTimeout extends Error {
  override name = 'IlpFlushTimeout';
  constructor(ms: number) {
    super(`no answer from QuestDB within ${ms} ms`);
  }
}

/**
 * A request (`sender.flush()`, or `transport.send(rows)`), abandoned with IlpFlushTimeout when it outlives
 * retry_timeout + request_timeout (client 4.2's default undici transport never settles when the connection is
 * refused). The abandoned request is inert by then but holds the client's transport: the caller replaces it.
 */
export async function flushWithin(
  sending: Promise<unknown>,
  options: SenderOptions | undefined,
): Promise<void> {
  const limitMs = (options?.retry_timeout ?? 10_000) + (options?.request_timeout ?? 10_000) + 1000;
  let timer: NodeJS.Timeout | undefined;
  const watchdog = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new IlpFlushTimeout(limitMs)), limitMs);
  });
  try {
    await Promise.race([sending, watchdog]);
  } catch (err) {
    if (err instanceof IlpFlushTimeout) sending.catch(() => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Sort a client or server failure into "retry the batch" or "the data is at fault". */
export function classifyIlpError(err: unknown): { retriable: boolean; status?: number; reason: string } {
  const message = errorMessage(err);
  const m = /statusCode=(-?\d+), error=([\s\S]*)$/.exec(message);
  if (m === null) {
    // Timeouts, refused or reset connections, DNS: nothing wrong with the data.
    return { retriable: true, reason: message };
  }
  const status = Number(m[1]);
  const reason = serverReason(m[2]!);
  if (status >= 500 || status < 0) return { retriable: true, status, reason };
  // Authentication, a wrong endpoint or throttling must be fixed or waited out; dead-lettering good ticks
  // because of them would lose data.
  if ([401, 403, 404, 408, 429].includes(status)) return { retriable: true, status, reason };
  // A table dropped or changed under us is a schema problem, not a bad tick: recreate and retry.
  if (/table does not exist|table is dropped|non-WAL|table not found/i.test(reason)) {
    return { retriable: true, status, reason };
  }
  return { retriable: false, status, reason };
}

/** QuestDB answers ILP errors as JSON: {"code","message","line","errorId"}; keep the message and the line. */
function serverReason(body: string): string {
  try {
    const parsed = JSON.parse(body) as { message?: unknown; line?: unknown; code?: unknown };
    if (typeof parsed.message === 'string') {
      const line = typeof parsed.line === 'number' ? ` [line ${parsed.line}]` : '';
      return `${parsed.message.replace(/\s+/g, ' ')}${line}`;
    }
  } catch {
    // not JSON: keep the text as it is
  }
  return body.slice(0, 500);
}

function networkReason(err: unknown): string {
  // fetch wraps the socket error: the useful part (ECONNREFUSED, ENOTFOUND) is in `cause`.
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code === undefined ? cause.message : `${code} (${cause.message})`;
  }
  return errorMessage(err);
}
