import { loadConfig, type Config, type ConfigInput } from '../shared/config.ts';
import { ConfigError, errorMessage } from '../shared/errors.ts';
import { createLogger, type Logger } from '../shared/logger.ts';
import { escapeLines } from './table.ts';

/**
 * The edge of every command: parse the configuration once (env, optional file, then flags), build the
 * logger, and turn failures into a clear message and a non-zero exit code.
 */
export interface Runtime {
  config: Config;
  log: Logger;
}

export function makeRuntime(overrides?: ConfigInput): Runtime {
  const config = loadConfig(overrides === undefined ? {} : { overrides });
  return { config, log: createLogger(config) };
}

/** Run a command body; a bad configuration exits 2, any other failure exits 1, both with a readable message. */
export async function runCommand(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`tickstream: ${escapeLines(err.message)}\n`);
      process.exitCode = 2;
      return;
    }
    // Messages can quote input (a file's row, a symbol): never let it drive the terminal.
    process.stderr.write(`tickstream: ${escapeLines(errorMessage(err))}\n`);
    if (err instanceof Error && err.cause !== undefined)
      process.stderr.write(`  cause: ${escapeLines(errorMessage(err.cause))}\n`);
    process.exitCode = 1;
  }
}

/** Commander option parsers that reject junk with the option's name. */
export function positiveInt(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0)
      throw new ConfigError(`${name} must be a positive integer (got "${v}")`);
    return n;
  };
}

export function positiveNumber(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0)
      throw new ConfigError(`${name} must be a positive number (got "${v}")`);
    return n;
  };
}

/** Durations like 500ms, 10s, 2m, 1h (a bare number is seconds). */
export function duration(name: string): (v: string) => number {
  return (v) => {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
    if (m === null)
      throw new ConfigError(`${name} must be a duration like 500ms, 10s, 2m or 1h (got "${v}")`);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's']!;
    return Number(m[1]) * unit;
  };
}
