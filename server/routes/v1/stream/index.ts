import type { FastifyInstance } from 'fastify';

/**
 * GET /v1/stream (WebSocket). Client → server: {"op":"subscribe"|"unsubscribe","channel":"quotes"|"bars"|
 * "indicators","symbols":[...],"tf":"1m"} and {"op":"ping"}. Server → client: {"type":"quote"|"bar"|
 * "indicators","data":{...}} (the same objects the REST routes return), "subscribed", "error" {code,message},
 * "heartbeat". See docs/serve.md and server/push/hub.ts for conflation and slow clients.
 */
export default async function stream(app: FastifyInstance): Promise<void> {
  const { hub } = app.ctx;
  app.get('/', { websocket: true }, (socket) => hub.add(socket));
}
