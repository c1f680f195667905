import type { Logger } from './logger.ts';

/**
 * Signal handling for entry points only (library code never installs handlers).
 * The first SIGINT/SIGTERM asks for a graceful stop: `stop` should stop reading, finish and acknowledge the
 * batch in flight, then close resources in order. A second signal, or the timeout, forces exit code 130.
 * With `exitAfterStop: false` the process is left to end by itself once `stop` resolves (the command's own
 * flow finishes its work and closes its handles).
 */
export function handleSignals(
  log: Logger,
  stop: (signal: string) => Promise<void>,
  options: { timeoutMs?: number; exitAfterStop?: boolean } = {},
): () => void {
  const exit = (code: number) => process.exit(code);
  const exitAfterStop = options.exitAfterStop ?? true;
  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: forcing exit');
      exit(130);
      return;
    }
    stopping = true;
    log.info({ signal }, 'stopping gracefully (send the signal again to force)');
    const timer = setTimeout(() => {
      log.error({ timeoutMs: options.timeoutMs }, 'graceful stop timed out: forcing exit');
      exit(130);
    }, options.timeoutMs ?? 30_000);
    timer.unref();
    stop(signal).then(
      () => {
        clearTimeout(timer);
        if (exitAfterStop) exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'error while stopping');
        exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

/** Memoise an async close so that concurrent or repeated calls share one run (BullMQ's worker.close). */
export function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= fn());
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Exponential backoff with full jitter, capped. attempt starts at 1. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}
