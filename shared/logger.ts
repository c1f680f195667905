import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type { Config } from './config.ts';
import { redactError } from './redact.ts';

export type { Logger };

/**
 * Errors are logged through `redactError`: a driver's error can carry credentials (ioredis attaches the AUTH
 * command's arguments to a failed AUTH; URLs carry userinfo), and none may reach a log line.
 */
const serializers = { err: redactError, error: redactError, cause: redactError };

/**
 * The process logger: pino JSON, or pretty-printed when stdout is a terminal (LOG_FORMAT=auto).
 * Components take a child logger (`log.child({ component: 'sink.quotes' })`) and log errors as `{ err }`.
 * Logs go to stderr so that commands which print results (quote, status, sql) keep stdout clean.
 */
export function createLogger(config: Pick<Config, 'log'>, destination?: DestinationStream): Logger {
  const pretty =
    destination === undefined &&
    (config.log.format === 'pretty' || (config.log.format === 'auto' && process.stderr.isTTY === true));
  const options: LoggerOptions = { level: config.log.level, serializers };
  if (pretty) {
    return withUniqueBindings(
      pino({
        ...options,
        transport: {
          target: 'pino-pretty',
          options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' },
        },
      }),
    );
  }
  return withUniqueBindings(pino(options, destination ?? pino.destination({ fd: 2, sync: true })));
}

/** For library code and tests that need a logger but have no process config. */
export function silentLogger(): Logger {
  return pino({ level: 'silent', serializers });
}

/**
 * pino appends a child's bindings to its parent's, so `log.child({ component: 'a' }).child({ component: 'b' })`
 * would write `"component"` twice in one JSON line (which most log tools read as the first, or reject). Here a
 * child that rebinds a key is made from the root with the merged bindings instead: the innermost value wins
 * and every key appears once. Children of children get the same treatment.
 */
function withUniqueBindings(root: Logger): Logger {
  // pino's own child(), which reads its parent from `this` (children inherit from their parent, so the
  // override below would otherwise be what they inherit).
  const child = root.child as unknown as (
    this: Logger,
    b: pino.Bindings,
    o?: pino.ChildLoggerOptions,
  ) => Logger;
  const wrap = (logger: Logger): Logger => {
    const unique = (bindings: pino.Bindings, options?: pino.ChildLoggerOptions): Logger => {
      const current = logger.bindings();
      const clash = Object.keys(bindings).some((k) => Object.hasOwn(current, k));
      const made = clash
        ? child.call(root, { ...current, ...bindings }, options)
        : child.call(logger, bindings, options);
      if (clash && options?.level === undefined) made.level = logger.level;
      return wrap(made);
    };
    logger.child = unique as unknown as Logger['child'];
    return logger;
  };
  return wrap(root);
}
