import { userInfo } from 'node:os';
import pg from 'pg';
import type { Config } from './config.ts';
import { errorMessage, TickstreamError } from './errors.ts';
import type { Logger } from './logger.ts';

/**
 * PostgreSQL connection factory and error classification, shared by the archive sink, `tickstream migrate`,
 * `tickstream status` and replay from the archive.
 *
 * - Every pool gets `pool.on('error')`: an idle connection whose server went away (restart, failover,
 *   pg_terminate_backend) emits an error, and without a listener that would crash the process.
 * - A checked-out client has no listener of pg-pool's either, so `withClient` attaches one for as long as it
 *   holds the client, and destroys the connection instead of returning it when it failed.
 * - `isRetriablePgError` is the one place that decides whether a failure is the server's state (retry; the
 *   stream entries stay pending) or the data's fault (dead-letter the tick).
 */
export type PgPool = pg.Pool;
export type PgClient = pg.PoolClient;
export type PgSettings = Config['postgres'];

export interface PgPoolOptions {
  log: Logger;
  /** Shown in pg_stat_activity, to tell processes apart when operating. */
  applicationName?: string;
  /** Overrides settings.poolSize (tests and one-shot commands want one connection). */
  max?: number;
}

// bigint (int8) columns come back as strings by default; callers convert where they need numbers, so the
// global type parsers stay untouched (other users of `pg` in the process may rely on the defaults).
export function createPgPool(settings: PgSettings, options: PgPoolOptions): PgPool {
  // A URL without a user name means the OS user, as for psql (libpq); pg only looks at $USER, which service
  // managers and CI often leave unset. The URL's user and PGUSER still win over this fallback.
  pg.defaults.user ??= osUser();
  const pool = new pg.Pool({
    connectionString: settings.url,
    max: options.max ?? settings.poolSize,
    connectionTimeoutMillis: settings.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    application_name: options.applicationName ?? 'tickstream',
    ...(settings.statementTimeoutMs > 0 ? { statement_timeout: settings.statementTimeoutMs } : {}),
  });
  const log = options.log;
  let last = '';
  pool.on('error', (err) => {
    // The pool already discarded the broken client; the next checkout opens a new connection.
    const message = errorMessage(err);
    if (message !== last) log.warn({ err }, 'postgres idle connection error');
    last = message;
  });
  pool.on('connect', () => {
    if (last !== '') log.info('postgres connection restored');
    last = '';
  });
  return pool;
}

/** End a pool without throwing when it is already ended. */
export async function closePgPool(pool: PgPool): Promise<void> {
  if (pool.ended) return;
  try {
    await pool.end();
  } catch {
    // already ending
  }
}

/**
 * Run `fn` with a pooled client. While held, the client's connection errors are caught (they also reach the
 * query in flight); a client that failed at the connection level is destroyed rather than reused.
 */
export async function withClient<T>(pool: PgPool, fn: (client: PgClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: unknown;
  const onError = (err: Error) => {
    broken = err;
  };
  client.on('error', onError);
  try {
    return await fn(client);
  } catch (err) {
    if (isConnectionError(err)) broken ??= err;
    throw err;
  } finally {
    client.removeListener('error', onError);
    client.release(broken === undefined ? undefined : toError(broken));
  }
}

/** Run `fn` inside BEGIN … COMMIT; ROLLBACK on failure (best effort: the connection may be gone). */
export async function inTransaction<T>(client: PgClient, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    try {
      await client.query('ROLLBACK');
    } catch {
      // the connection is broken; withClient discards it
    }
    throw err;
  }
}

/** The SQLSTATE of a server error, or the Node error code of a socket error, when there is one. */
export function pgErrorCode(err: unknown): string | undefined {
  if (err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'string')
    return err.code;
  return undefined;
}

const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
]);

/** The connection, not the statement, failed: the client must not be reused. */
export function isConnectionError(err: unknown): boolean {
  const code = pgErrorCode(err);
  if (code === undefined) {
    // pg reports a dropped socket or a connect timeout without a code.
    return /connection|terminated|timeout|closed|ended/i.test(errorMessage(err));
  }
  return (
    SOCKET_CODES.has(code) ||
    code.startsWith('08') ||
    code === '57P01' || // admin_shutdown
    code === '57P02' || // crash_shutdown
    code === '57P03' // cannot_connect_now (starting up, recovery)
  );
}

/**
 * Whether retrying the same statement can succeed. Only data exceptions (class 22: value out of range, bad
 * encoding, string too long) and integrity violations (class 23: check, not-null, unique) are the rows'
 * fault. Everything else (connection loss, shutdown, disk full, deadlock, statement timeout, and even a
 * missing table) is the server's or the operator's to fix, and dead-lettering good ticks for it would lose
 * them, so it is retried while the entries stay pending.
 */
export function isRetriablePgError(err: unknown): boolean {
  // Our own errors already know (a DataError from computing a bar is the data's fault).
  if (err instanceof TickstreamError) return err.retriable;
  const code = pgErrorCode(err);
  if (code === undefined || code.length !== 5) return true;
  return !(code.startsWith('22') || code.startsWith('23'));
}

/** Where a URL points, for messages: host, port and database, never the password. */
export function pgTarget(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return 'the configured server';
  }
}

const NEEDS_ESCAPE = /[\\\t\n\r]/;
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** A text field for COPY's text format (backslash, tab, newline and carriage return escaped). */
export function copyText(s: string): string {
  return NEEDS_ESCAPE.test(s) ? s.replace(/[\\\t\n\r]/g, (c) => ESCAPES[c]!) : s;
}

/** A double-quoted SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function osUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
