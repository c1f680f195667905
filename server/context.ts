import type { Config } from '../shared/config.ts';
import type { Logger } from '../shared/logger.ts';
import type { RedisClient } from '../shared/redis.ts';
import type { Hub } from './push/hub.ts';
import type { Subscriber } from './push/subscriber.ts';
import type { PostgresReads, ReadModel, RedisReads } from './tiers/index.ts';

/** What the routes use, built by server.ts (or a test) and decorated onto the app as `ctx`. */
export interface ServerContext {
  config: Config;
  log: Logger;
  model: ReadModel;
  redisTier: RedisReads;
  postgresTier: PostgresReads;
  /** The shared (non-subscriber) Redis connection, for `status`. */
  redis: RedisClient;
  hub: Hub;
  subscriber?: Subscriber | undefined;
  /** Where the dashboard's built files are; undefined: no dashboard. */
  webRoot?: string | undefined;
}

declare module 'fastify' {
  interface FastifyInstance {
    ctx: ServerContext;
  }
}
