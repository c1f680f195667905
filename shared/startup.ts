import { ConfigError, errorMessage, isRetriable } from './errors.ts';
import { backoffMs, sleep } from './lifecycle.ts';
import type { Logger } from './logger.ts';

/**
 * Starting against a store that is not there yet. A consumer started while its store is down must not exit:
 * a running consumer survives the same outage, and a supervisor restarting it in a loop helps nobody. So the
 * store's preparation (a sink's `start()`, the indicator worker's schema check) is retried with backoff and a
 * log line per attempt until the store answers or the process is asked to stop. What retrying cannot fix
 * (refused credentials, a database or role that does not exist, a bad setting, a schema newer than this
 * version) still fails at once.
 */
export interface WaitOptions {
  log: Logger;
  /** Aborted when the process is asked to stop: the wait ends and `waitForStore` returns false. */
  signal: AbortSignal;
  baseMs: number;
  maxMs: number;
  /** What is being prepared, for the log ("the archive sink", "the indicator worker"). */
  what: string;
}

/** Run `start` until it succeeds (true) or `signal` aborts (false); throw what retrying cannot fix. */
export async function waitForStore(start: () => Promise<void>, o: WaitOptions): Promise<boolean> {
  const since = Date.now();
  for (let attempt = 1; ; attempt++) {
    if (o.signal.aborted) return false;
    try {
      await start();
      if (attempt > 1) o.log.info({ attempts: attempt, waitedMs: Date.now() - since }, `${o.what} is ready`);
      return true;
    } catch (err) {
      if (isFatalAtStart(err)) throw err;
      const waitMs = backoffMs(attempt, o.baseMs, o.maxMs);
      o.log.warn(
        { err, attempt, waitedMs: Date.now() - since, nextTryMs: waitMs },
        `${o.what}: store not reachable yet, waiting (stop the process to give up)`,
      );
      await sleep(waitMs, o.signal);
    }
  }
}

// SQLSTATE classes no retry fixes: 28 invalid authorization (bad password, no such role), 3D invalid
// catalog name (no such database), 42501 insufficient privilege.
const FATAL_SQLSTATE = /^(28|3D)|^42501$/;

/** Whether an error met while starting is one retrying cannot fix (its causes are looked at too). */
export function isFatalAtStart(err: unknown): boolean {
  if (!isRetriable(err)) return true;
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    if (e instanceof ConfigError) return true;
    if (typeof e === 'object') {
      const code = (e as { code?: unknown }).code;
      if (typeof code === 'string' && FATAL_SQLSTATE.test(code)) return true;
      const name = (e as { name?: unknown }).name;
      // kafkajs: KafkaJSSASLAuthenticationError; other drivers name refused credentials likewise.
      if (typeof name === 'string' && /Authentication|SASL/i.test(name)) return true;
    }
    if (/WRONGPASS|NOAUTH|NOPERM/.test(errorMessage(e))) return true;
    e = e instanceof Error ? e.cause : undefined;
  }
  return false;
}
