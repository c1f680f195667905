import type { FastifyError, FastifyInstance } from 'fastify';
import { HttpError } from '../errors.ts';

/**
 * Every error is JSON `{ "error": { "code", "message" } }`. A schema violation is a 400 naming the parameter
 * ("querystring/limit must be <= 1000"); an unexpected failure is a 500 whose detail goes to the log only.
 */
export function errorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | HttpError, req, reply) => {
    if (err instanceof HttpError) {
      return reply
        .code(err.statusCode)
        .headers(err.headers)
        .send({ error: { code: err.code, message: err.message } });
    }
    if (err.validation !== undefined) {
      return reply.code(400).send({ error: { code: 'bad_request', message: err.message } });
    }
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ error: { code: 'bad_request', message: err.message } });
    }
    req.log.error({ err }, 'request failed');
    return reply
      .code(500)
      .send({ error: { code: 'internal', message: 'internal error (see the server log)' } });
  });
  app.setNotFoundHandler((req, reply) =>
    reply
      .code(404)
      .send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } }),
  );
}
