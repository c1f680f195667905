import type { FastifyInstance } from 'fastify';
import type { Config } from '../shared/config.ts';
import { once } from '../shared/lifecycle.ts';
import { packagePath } from '../shared/paths.ts';
import type { Logger } from '../shared/logger.ts';
import { closePgPool, createPgPool } from '../shared/pg.ts';
import { createQuestDbHttp } from '../shared/questdb.ts';
import { closeRedis, createRedis } from '../shared/redis.ts';
import { buildApp } from './app.ts';
import { ensureDefaultMetrics } from './metrics.ts';
import type { ServerContext } from './context.ts';
import { Hub, topicKey } from './push/hub.ts';
import { Subscriber } from './push/subscriber.ts';
import { ReadModel } from './tiers/index.ts';
import { MemoryTier } from './tiers/memory.ts';
import { withTimeout } from './tiers/port.ts';
import { PostgresTier } from './tiers/postgres.ts';
import { QuestDbTier } from './tiers/questdb.ts';
import { RedisTier } from './tiers/redis.ts';

/** The dashboard's static files (index.html, style.css, dist/app.js built by `npm run build:web`). */
// From the package root, so that the compiled server (dist/server/) finds the same files as the sources.
export const WEB_ROOT = packagePath('server', 'web', 'public');

export interface RunningServer {
  app: FastifyInstance;
  ctx: ServerContext;
  /** http://host:port */
  url: string;
  /** Graceful: stop accepting, close stream clients (1001), unsubscribe, close connections. Idempotent. */
  close(): Promise<void>;
}

export interface StartOptions {
  /**
   * More routes, added to the app before it listens, under the same plugins and hooks as the API's own (the
   * benchmark's baselines, bench/serve-server.ts).
   */
  routes?: (app: FastifyInstance, ctx: ServerContext) => Promise<void> | void;
}

/**
 * `tickstream serve`: connect to the stores, warm L1, subscribe to pub/sub, listen. Only the entry point
 * (cli/commands/serve.ts) handles signals; it calls `close`.
 */
export async function startServer(
  config: Config,
  log: Logger,
  options: StartOptions = {},
): Promise<RunningServer> {
  ensureDefaultMetrics();
  const redis = createRedis(config, { log, connectionName: 'tickstream:serve', failFast: true });
  const sub = createRedis(config, { log, connectionName: 'tickstream:serve:pubsub' });
  const pool = createPgPool(config.postgres, { log, applicationName: 'tickstream:serve' });
  const qdb = createQuestDbHttp(config.questdb);
  const api = config.api;

  const memory = new MemoryTier({
    ttlMs: {
      quote: api.quoteTtlMs,
      bar: api.barsTtlMs,
      bars: api.barsTtlMs,
      indicators: api.indicatorsTtlMs,
      history: api.historyTtlMs,
      trades: api.historyTtlMs,
    },
    max: api.cacheMax,
    timeoutMs: api.tierTimeoutMs,
  });
  const redisTier = new RedisTier(redis, {
    quoteKeyPrefix: config.quotes.keyPrefix,
    barKeyPrefix: config.bars.keyPrefix,
    indicatorKeyPrefix: config.indicators.keyPrefix,
  });
  const postgresTier = new PostgresTier(pool, config.postgres.schema);
  const model = new ReadModel({
    memory,
    redis: redisTier,
    postgres: postgresTier,
    questdb: qdb === undefined ? undefined : new QuestDbTier(qdb, config.questdb.tablePrefix),
    timeoutMs: api.tierTimeoutMs,
  });
  const timeframes = [...new Set([...config.bars.timeframes, ...config.indicators.timeframes])];
  const hub = new Hub(
    {
      highWaterBytes: api.wsHighWaterBytes,
      stuckMs: api.wsStuckMs,
      heartbeatMs: api.wsHeartbeatMs,
      maxSubscriptions: api.maxSubscriptions,
      timeframes,
      // A new quote subscription starts with the current quote, so a board fills at once.
      snapshot: async (topics) => {
        const symbols = topics.filter((t) => t.channel === 'quotes').map((t) => t.symbol);
        if (symbols.length === 0) return [];
        const out: { topic: string; payload: string }[] = [];
        for (const [symbol, o] of await model.quotes(symbols)) {
          if (o.status !== 'ok') continue;
          const data = { ...o.value, stale: o.stale };
          out.push({ topic: topicKey('quotes', symbol), payload: JSON.stringify({ type: 'quote', data }) });
        }
        return out;
      },
    },
    log.child({ component: 'api.stream' }),
  );
  const subscriber = new Subscriber(
    sub,
    {
      quotesPrefix: config.quotes.channelPrefix,
      barsPrefix: config.bars.channelPrefix,
      indicatorsPrefix: config.indicators.channelPrefix,
    },
    model,
    hub,
    log.child({ component: 'api.pubsub' }),
  );
  const ctx: ServerContext = {
    config,
    log,
    model,
    redisTier,
    postgresTier,
    redis,
    hub,
    subscriber,
    webRoot: WEB_ROOT,
  };

  let app: Awaited<ReturnType<typeof buildApp>> | undefined;
  const close = once(async () => {
    const steps: [string, () => Promise<unknown>][] = [
      ['http server', async () => app?.close()],
      ['pub/sub', () => subscriber.stop()],
      ['redis (pub/sub)', () => closeRedis(sub)],
      ['redis', () => closeRedis(redis)],
      ['postgres', () => closePgPool(pool)],
    ];
    for (const [name, step] of steps) {
      try {
        await step();
      } catch (err) {
        log.warn({ err, step: name }, 'error while closing');
      }
    }
  });
  try {
    app = await buildApp(ctx);
    await options.routes?.(app, ctx);
  } catch (err) {
    // Connections are open already: without closing them the process would not exit.
    await close();
    throw err;
  }

  try {
    await withTimeout(subscriber.start(), 5000, 'redis pub/sub');
  } catch (err) {
    // Redis down at start: the subscriber re-subscribes by itself when it comes back.
    log.warn({ err }, 'pub/sub subscription failed; L1 relies on TTLs until Redis is back');
  }
  try {
    const warmed = await model.warm(api.warmSymbols, timeframes);
    log.info({ symbols: warmed.symbols }, 'L1 warmed');
  } catch (err) {
    log.warn({ err }, 'L1 warm-up failed; first requests will read through');
  }
  try {
    await app.listen({ host: api.host, port: api.port });
  } catch (err) {
    await close();
    throw err;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : api.port;
  const url = `http://${api.host.includes(':') ? `[${api.host}]` : api.host}:${port}`;
  log.info(
    {
      url,
      dashboard: `${url}/`,
      adminRoutes: api.adminToken === undefined ? 'off (TICKSTREAM_API_ADMIN_TOKEN not set)' : 'on',
      cors: api.corsOrigins.length === 0 ? 'off' : api.corsOrigins,
    },
    'tickstream serve listening',
  );
  return { app, ctx, url, close };
}
