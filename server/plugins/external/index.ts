import { existsSync } from 'node:fs';
import cors from '@fastify/cors';
import fastifyStatic from '@fastify/static';
import websocket from '@fastify/websocket';
import type { FastifyInstance } from 'fastify';

/** Third-party plugins, each configured from the server's settings in one place. */
export async function externalPlugins(app: FastifyInstance): Promise<void> {
  const { config, webRoot, log } = app.ctx;
  const origins = config.api.corsOrigins;
  // CORS is off unless origins are configured: the dashboard is served from this same origin.
  if (origins.length > 0) {
    await app.register(cors, { origin: origins.includes('*') ? true : origins, methods: ['GET', 'POST'] });
  }
  await app.register(websocket, {
    options: { maxPayload: 64 * 1024 },
    // On close, stream clients get 1001 "server shutting down" (the plugin's default closes them without a code).
    preClose: function (done) {
      app.ctx.hub.close();
      this.websocketServer.close(() => done());
    },
  });
  if (webRoot !== undefined) {
    if (!existsSync(`${webRoot}/dist/app.js`))
      log.warn(
        { webRoot },
        'dashboard bundle missing: run `npm run build:web` (the page at / will not work)',
      );
    await app.register(fastifyStatic, { root: webRoot, prefix: '/', index: 'index.html' });
  }
}
