import { pino, type Logger } from 'pino';
import type { Config } from './config.ts';

export type { Logger };

/**
 * The process logger: pino JSON, or pretty-printed when stdout is a terminal (LOG_FORMAT=auto).
 * Components take a child logger (`log.child({ component: 'sink.quotes' })`) and log errors as `{ err }`.
 * Logs go to stderr so that commands which print results (quote, status, sql) keep stdout clean.
 */
export function createLogger(config: Pick<Config, 'log'>): Logger {
  const pretty =
    config.log.format === 'pretty' || (config.log.format === 'auto' && process.stderr.isTTY === true);
  if (pretty) {
    return pino({
      level: config.log.level,
      transport: {
        target: 'pino-pretty',
        options: { destination: 2, colorize: true, translateTime: 'SYS:HH:MM:ss.l' },
      },
    });
  }
  return pino({ level: config.log.level }, pino.destination({ fd: 2, sync: true }));
}

/** For library code and tests that need a logger but have no process config. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
