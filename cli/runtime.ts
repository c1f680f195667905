import { loadConfig, type Config, type ConfigInput } from '../shared/config.ts';
import { ConfigError, errorMessage } from '../shared/errors.ts';
import { createLogger, type Logger } from '../shared/logger.ts';
import { redactText } from '../shared/redact.ts';
import { onFatalRedisError } from '../shared/redis.ts';
import { escapeLines } from './table.ts';

/**
 * The edge of every command: parse the configuration once (env, optional file, then flags), build the
 * logger, and turn failures into a clear message and a non-zero exit code (table in docs/operations.md):
 * 0 success, 1 a failure at run time (a server unreachable, a refused write), 2 a bad configuration or
 * command line, 130 a forced stop.
 */
export interface Runtime {
  config: Config;
  log: Logger;
}

export const EXIT = { ok: 0, failure: 1, usage: 2, forced: 130 } as const;

export function makeRuntime(overrides?: ConfigInput): Runtime {
  const config = loadConfig(overrides === undefined ? {} : { overrides });
  const log = createLogger(config);
  // A long-running process whose Redis refuses its credentials or database would retry for ever: the
  // connection has logged the reason (redacted) at fatal level; the process ends so a supervisor shows it.
  onFatalRedisError(() => process.exit(EXIT.failure));
  return { config, log };
}

/** Run a command body; a bad configuration exits 2, any other failure exits 1, both with a readable message. */
export async function runCommand(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    reportError(err);
  }
}

/** The one error path of the CLI, for configuration, flags and run-time failures alike. */
export function reportError(err: unknown): void {
  if (err instanceof ConfigError) {
    process.stderr.write(`tickstream: ${escapeLines(redactText(err.message))}\n`);
    process.exitCode = EXIT.usage;
    return;
  }
  // Messages can quote input (a file's row, a symbol): never let it drive the terminal.
  process.stderr.write(`tickstream: ${escapeLines(redactText(errorMessage(err)))}\n`);
  if (err instanceof Error && err.cause !== undefined) {
    const cause = redactText(errorMessage(err.cause));
    if (!errorMessage(err).includes(cause)) process.stderr.write(`  cause: ${cause}\n`);
  }
  process.exitCode = EXIT.failure;
}

/** Plain decimal digits only: "0x10", "1e3", "1.5" and "" are not counts. */
function decimalInt(v: string): number | undefined {
  const t = v.trim();
  return /^[+-]?\d+$/.test(t) ? Number(t) : undefined;
}

/** Commander option parsers that reject junk with the option's name (through reportError: exit 2). */
export function positiveInt(name: string): (v: string) => number {
  return (v) => {
    const n = decimalInt(v);
    if (n === undefined || !Number.isSafeInteger(n) || n <= 0)
      throw new ConfigError(`${name} must be a positive whole number (got "${v}")`);
    return n;
  };
}

export function positiveNumber(name: string): (v: string) => number {
  return (v) => {
    const t = v.trim();
    const n = /^(\d+(\.\d*)?|\.\d+)$/.test(t) ? Number(t) : NaN;
    if (!Number.isFinite(n) || n <= 0)
      throw new ConfigError(`${name} must be a positive number (got "${v}")`);
    return n;
  };
}

/** Durations like 500ms, 10s, 2m, 1h (a bare number is seconds), in milliseconds; at least 1 ms. */
export function duration(name: string): (v: string) => number {
  return (v) => {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
    if (m === null)
      throw new ConfigError(`${name} must be a duration like 500ms, 10s, 2m or 1h (got "${v}")`);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's']!;
    const ms = Math.round(Number(m[1]) * unit);
    if (ms < 1) throw new ConfigError(`${name} must be at least 1ms (got "${v}")`);
    return ms;
  };
}

/** Milliseconds as the shortest duration text `duration` reads back: 5000 → "5s", 90000 → "90s", 1500 → "1500ms". */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
