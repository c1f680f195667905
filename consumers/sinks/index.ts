import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import type { RedisClient } from '../../shared/redis.ts';
import type { Sink } from '../sink.ts';
import { QuotesSink } from './quotes.ts';

/**
 * The sinks `tickstream consume <sink>` and `tickstream replay --sink <sink>` can run, by name.
 * A factory receives the process's shared connections; the sink owns only what it opens itself.
 */
export interface SinkDeps {
  config: Config;
  /** A non-blocking Redis connection the sink may use (and must not close). */
  redis: RedisClient;
  log: Logger;
}

export interface SinkDefinition {
  /** Consumer group used when none is given. */
  readonly group: string;
  readonly description: string;
  create(deps: SinkDeps): Promise<Sink>;
}

export const SINKS: Record<string, SinkDefinition> = {
  quotes: {
    group: 'quotes',
    description: 'latest quote per symbol in Redis hashes, published on pub/sub',
    create: async ({ config, redis, log }) =>
      new QuotesSink({ redis, settings: config.quotes, log: log.child({ component: 'sink.quotes' }) }),
  },
};

export function sinkNames(): string[] {
  return Object.keys(SINKS);
}
