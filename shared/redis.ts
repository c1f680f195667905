import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type ClusterOptions, type RedisOptions as IORedisOptions } from 'ioredis';
import type { Config } from './config.ts';
import { ConfigError, TickstreamError, errorMessage } from './errors.ts';
import type { Logger } from './logger.ts';
import { redactText } from './redact.ts';

/** Either a single Redis or a Cluster: both expose the same command methods. */
export type RedisClient = Redis | Cluster;

/** What a connection needs: the address, and optionally credentials, TLS files and the connect timeout. */
export type RedisSettings = Pick<Config['redis'], 'url' | 'clusterNodes'> & Partial<Config['redis']>;

export interface RedisOptions {
  /** A connection used for blocking reads (XREADGROUP BLOCK) must not be shared with other commands. */
  blocking?: boolean;
  /** Name shown by CLIENT LIST, to tell processes apart when operating. */
  connectionName?: string;
  /**
   * Commands fail at once while disconnected instead of queueing until the server is back (the read API
   * serves what it cached instead of waiting).
   */
  failFast?: boolean;
  log?: Logger;
  /**
   * Called once when the server refuses something retrying cannot fix: the credentials (WRONGPASS, NOAUTH) or
   * the database index (a failed SELECT). The connection has been closed by then. Default: the handler set
   * with `onFatalRedisError` (entry points make it end the process with exit code 1), else nothing more.
   */
  onFatal?: (err: Error) => void;
}

let processFatal: ((err: Error) => void) | undefined;

/** Entry points only: what a connection does on a fatal error when its creator gave no `onFatal`. */
export function onFatalRedisError(handler: ((err: Error) => void) | undefined): void {
  processFatal = handler;
}

/** While Redis cannot be reached, a long-running process says so this often (besides each new error). */
const DOWN_LOG_INTERVAL_MS = 10_000;

/**
 * Connection factory for single Redis (REDIS_URL) and Redis Cluster (REDIS_CLUSTER_NODES), for long-running
 * processes: ioredis reconnects with capped backoff and queues commands meanwhile; the process logs each new
 * error and a line every 10 s while the server stays unreachable. Credentials (from the URL, or
 * REDIS_USERNAME/REDIS_PASSWORD) and TLS reach every Cluster node. An authentication failure or a failed
 * SELECT is fatal (see `onFatal`), never retried.
 * Blocking connections get ioredis' blocking-command timeout so a half-dead socket cannot hang a reader
 * forever (the timeout fires a little after the command's own BLOCK).
 * Commands that run once use `connectRedis` instead, which fails fast.
 */
export function createRedis(config: { redis: RedisSettings }, options: RedisOptions = {}): RedisClient {
  return build(config.redis, options, false);
}

/**
 * For commands that run once (status, quote, dlq, trim, ...): connect within the connect timeout or throw a
 * clear error naming the server and the reason (unreachable, TLS refused, wrong password, not a Cluster).
 * The connection does not reconnect: if it drops, the command fails rather than hangs.
 */
export async function connectRedis(
  config: { redis: RedisSettings },
  options: Omit<RedisOptions, 'onFatal' | 'blocking'> = {},
): Promise<RedisClient> {
  const r = config.redis;
  const timeoutMs = r.connectTimeoutMs ?? 5000;
  let lastError: Error | undefined;
  let fatal: Error | undefined;
  const client = build(r, { ...options, onFatal: (err) => (fatal = err) }, true, (err) => (lastError = err));
  const where = describeServer(r);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      client.connect(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    // A failed SELECT is reported just after "ready": a round trip makes sure it has been seen.
    await client.ping();
  } catch (err) {
    client.disconnect();
    const reason = fatal ?? lastError ?? (err instanceof Error ? err : new Error(String(err)));
    throw new TickstreamError(`cannot connect to ${where}: ${redactText(errorMessage(reason))}`, {
      retriable: fatal === undefined,
      cause: reason,
    });
  } finally {
    clearTimeout(timer);
  }
  if (fatal !== undefined) {
    client.disconnect();
    throw new TickstreamError(`cannot use ${where}: ${redactText(errorMessage(fatal))}`, {
      retriable: false,
      cause: fatal,
    });
  }
  return client;
}

function build(
  r: RedisSettings,
  options: RedisOptions,
  oneShot: boolean,
  onError?: (err: Error) => void,
): RedisClient {
  const log = options.log;
  let downSince = 0;
  let lastLogged = 0;
  let lastError = '';
  let attempts = 0;
  let fatalSeen = false;
  const holder: { client?: RedisClient } = {};

  const fail = (err: Error) => {
    if (fatalSeen) return;
    fatalSeen = true;
    log?.fatal({ err }, 'redis refused the connection settings: not retrying (fix the configuration)');
    holder.client?.disconnect();
    (options.onFatal ?? processFatal)?.(err);
  };
  const onConnectionError = (err: Error) => {
    onError?.(err);
    if (isFatalRedisError(err)) return fail(err);
    if (log === undefined || oneShot) return;
    const now = Date.now();
    if (downSince === 0) downSince = now;
    if (err.message !== lastError || now - lastLogged >= DOWN_LOG_INTERVAL_MS) {
      // ioredis reconnects by itself: each distinct error once, then a reminder every 10 s while down.
      const again = err.message === lastError;
      log.warn(
        { err, attempts, downForMs: now - downSince },
        again ? 'redis still unreachable: retrying' : 'redis connection error: retrying',
      );
      lastLogged = now;
    }
    lastError = err.message;
  };
  const retryStrategy = (times: number): number | null => {
    if (oneShot || fatalSeen) return null;
    attempts = times;
    return Math.min(100 * 2 ** Math.min(times - 1, 5), 2000);
  };

  const common: IORedisOptions = {
    ...serverOptions(r),
    connectionName: options.connectionName ?? 'tickstream',
    maxRetriesPerRequest: options.failFast === true ? 0 : (null as null),
    enableOfflineQueue: options.failFast !== true,
    connectTimeout: r.connectTimeoutMs ?? 10_000,
    retryStrategy,
    ...(oneShot ? { lazyConnect: true } : {}),
    // Under Cluster, multi-key batches are sent as concurrent commands (see `batch`); auto-pipelining packs
    // them per node. A blocking connection runs one command at a time and gains nothing from it.
    enableAutoPipelining: r.clusterNodes.length > 0 && options.blocking !== true,
    // The client gives up on a blocking read 30 s after it was due. The grace is generous on purpose: a reply
    // that arrives after the client gave up is lost to us (its entries sit pending until reclaimed), so only a
    // dead socket should ever trip it, never a busy event loop.
    ...(options.blocking === true ? { blockingTimeout: 30_000, blockingTimeoutGrace: 10_000 } : {}),
  };
  let client: RedisClient;
  if (r.clusterNodes.length > 0) {
    const nodes = r.clusterNodes.map((n) => {
      const [host, port] = n.split(':');
      return { host: host!, port: Number(port) };
    });
    // Every node gets the credentials and TLS settings; the address comes from the node list.
    const { host: _host, port: _port, db: _db, lazyConnect: _lazy, ...redisOptions } = common;
    const clusterOptions: ClusterOptions = {
      redisOptions,
      scaleReads: 'master',
      clusterRetryStrategy: retryStrategy,
      lazyConnect: oneShot,
      // The Cluster queues commands itself while it (re)connects: the nodes' setting alone does not fail fast.
      enableOfflineQueue: options.failFast !== true,
    };
    const cluster = new Cluster(nodes, clusterOptions);
    // A node's own error (NOAUTH from one node, a TLS failure) says more than the cluster's summary.
    cluster.on('node error', (err: Error) => onConnectionError(err));
    client = cluster;
  } else {
    client = new Redis(common);
  }
  holder.client = client;
  client.on('error', (err: Error) => {
    // A Cluster's own error ("Failed to refresh slots cache") carries the node's, which says why.
    const last = (err as { lastNodeError?: unknown }).lastNodeError;
    onConnectionError(last instanceof Error ? last : err);
  });
  client.on('ready', () => {
    if (log !== undefined && downSince !== 0) {
      log.info({ downForMs: Date.now() - downSince }, 'redis connection restored');
    }
    downSince = 0;
    lastError = '';
  });
  return client;
}

/** host, port, credentials, database and TLS of REDIS_URL (and the REDIS_* settings beside it). */
function serverOptions(r: RedisSettings): IORedisOptions {
  const url = new URL(r.url);
  const username = url.username !== '' ? decodeURIComponent(url.username) : r.username;
  const password = url.password !== '' ? decodeURIComponent(url.password) : r.password;
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  const tlsOn = url.protocol === 'rediss:' || r.tlsCaFile !== undefined || r.tlsCertFile !== undefined;
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? 6379 : Number(url.port),
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    db,
    ...(tlsOn ? { tls: tlsOptions(r) } : {}),
  };
}

function tlsOptions(r: RedisSettings): ConnectionOptions {
  const read = (file: string | undefined, variable: string): Buffer | undefined => {
    if (file === undefined) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`${variable}: cannot read ${file}: ${errorMessage(err)}`, err);
    }
  };
  const ca = read(r.tlsCaFile, 'REDIS_TLS_CA_FILE');
  const cert = read(r.tlsCertFile, 'REDIS_TLS_CERT_FILE');
  const key = read(r.tlsKeyFile, 'REDIS_TLS_KEY_FILE');
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
}

/** The server a setting points at, for error messages (never with credentials). */
export function describeServer(r: RedisSettings): string {
  if (r.clusterNodes.length > 0) return `Redis Cluster ${r.clusterNodes.join(',')} (REDIS_CLUSTER_NODES)`;
  const url = new URL(r.url);
  const db = url.pathname.length > 1 ? url.pathname : '';
  return `Redis at ${url.protocol}//${url.host}${db} (REDIS_URL)`;
}

/** Errors that no reconnect can fix: wrong or missing credentials, a database index the server lacks. */
export function isFatalRedisError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const command = (err as { command?: { name?: string } }).command?.name?.toLowerCase();
  if (command === 'auth' || command === 'select') return true;
  return /^(WRONGPASS|NOAUTH)\b|invalid password|invalid username-password|DB index is out of range|without any password configured/i.test(
    err.message,
  );
}

/**
 * On a stop: a connection that is not up holds every command in its offline queue until the server returns,
 * and the stop with it. Closing it now fails those commands at once (nothing is acknowledged, so nothing is
 * lost: the entries stay pending for a later run or another consumer).
 */
export function dropIfDown(...clients: RedisClient[]): void {
  for (const c of clients) if (c.status !== 'ready') c.disconnect();
}

/** Close without throwing when the connection is already gone, and without waiting for a dead server. */
export async function closeRedis(client: RedisClient): Promise<void> {
  if (client.status !== 'ready') {
    client.disconnect();
    return;
  }
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}

/** XINFO replies come as flat [name, value, ...] arrays. */
export function pairs(flat: readonly unknown[]): Map<string, unknown> {
  const m = new Map<string, unknown>();
  for (let i = 0; i + 1 < flat.length; i += 2) m.set(String(flat[i]), flat[i + 1]);
  return m;
}

export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}

export type Command = readonly [name: string, ...args: (string | number | Buffer)[]];
export type Reply = [Error | null, unknown];

/**
 * Send many commands in one round trip and get [error, result] per command, like pipeline.exec().
 * On a single Redis this is one pipeline. Under Cluster a pipeline must stay within one slot, and our keys
 * are spread over slots on purpose, so the commands go out concurrently and auto-pipelining batches them
 * per node.
 */
export async function batch(client: RedisClient, commands: readonly Command[]): Promise<Reply[]> {
  if (commands.length === 0) return [];
  if (!isCluster(client)) {
    const pipeline = client.pipeline();
    for (const [name, ...args] of commands) pipeline.call(name, ...args);
    return ((await pipeline.exec()) ?? []) as Reply[];
  }
  const settled = await Promise.allSettled(commands.map(([name, ...args]) => client.call(name, ...args)));
  return settled.map((s): Reply => (s.status === 'fulfilled' ? [null, s.value] : [toError(s.reason), null]));
}

/** The first error of a batch, thrown; otherwise the results. */
export function orThrow(replies: readonly Reply[]): unknown[] {
  const failed = replies.find(([err]) => err !== null);
  if (failed !== undefined) throw failed[0];
  return replies.map(([, result]) => result);
}

function toError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}

/**
 * A Lua script with one key, run for many keys in one round trip (`batch`): EVALSHA, and EVAL for the calls a
 * server answers NOSCRIPT (a new or restarted server, another Cluster node), which also caches it there.
 */
export class Script {
  readonly sha: string;
  constructor(readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async runMany(
    client: RedisClient,
    calls: readonly (readonly [key: string, ...args: (string | Buffer)[]])[],
  ): Promise<Reply[]> {
    const results = await batch(
      client,
      calls.map(([key, ...args]) => ['EVALSHA', this.sha, 1, key, ...args] as const),
    );
    const missing = results.flatMap((r, i) => (r[0]?.message.startsWith('NOSCRIPT') === true ? [i] : []));
    if (missing.length > 0) {
      const retried = await batch(
        client,
        missing.map((i) => {
          const [key, ...args] = calls[i]!;
          return ['EVAL', this.lua, 1, key, ...args] as const;
        }),
      );
      missing.forEach((i, j) => (results[i] = retried[j]!));
    }
    return results;
  }

  /** One call with several keys (all in one slot under Cluster): EVALSHA, or EVAL after NOSCRIPT. */
  async runKeys(client: RedisClient, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    try {
      return await client.call('EVALSHA', this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return client.call('EVAL', this.lua, keys.length, ...keys, ...args);
    }
  }
}

/** Delete every key under a prefix (SCAN + UNLINK): test and benchmark clean-up, never the hot path. */
export async function deleteByPrefix(client: RedisClient, prefix: string): Promise<void> {
  const nodes = isCluster(client) ? client.nodes('master') : [client];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      // One key per call: under Cluster the keys of one scan page may live in different slots.
      for (const key of keys) await client.unlink(key);
    } while (cursor !== '0');
  }
}
