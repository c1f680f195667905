import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { ServerContext } from './context.ts';
import { errorHandling } from './plugins/errors.ts';
import { externalPlugins } from './plugins/external/index.ts';
import health from './routes/health.ts';
import bars from './routes/v1/bars/index.ts';
import cache from './routes/v1/cache/index.ts';
import indicators from './routes/v1/indicators/index.ts';
import quotes from './routes/v1/quotes/index.ts';
import status from './routes/v1/status/index.ts';
import stream from './routes/v1/stream/index.ts';
import symbols from './routes/v1/symbols/index.ts';
import trades from './routes/v1/trades/index.ts';

/**
 * Build the app from plugins and routes (it does not listen: server.ts does). Everything the routes use comes
 * in `ctx`, so a test builds an app on stand-in tiers and calls it with `inject`.
 */
export async function buildApp(ctx: ServerContext): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: ctx.log.child({ component: 'api' }) as FastifyBaseLogger,
    // One line per request would cost more than serving a quote from L1; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, allErrors: false } },
    forceCloseConnections: true,
  });
  app.decorate('ctx', ctx);
  errorHandling(app);
  await externalPlugins(app);
  await app.register(health);
  await app.register(quotes, { prefix: '/v1/quotes' });
  await app.register(bars, { prefix: '/v1/bars' });
  await app.register(indicators, { prefix: '/v1/indicators' });
  await app.register(trades, { prefix: '/v1/trades' });
  await app.register(symbols, { prefix: '/v1/symbols' });
  await app.register(status, { prefix: '/v1/status' });
  await app.register(cache, { prefix: '/v1/cache' });
  await app.register(stream, { prefix: '/v1/stream' });
  return app;
}
