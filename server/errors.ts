/**
 * Errors a route answers with: JSON `{ "error": { "code", "message" } }` and the status code. Messages name
 * the parameter or symbol concerned and never contain a secret.
 */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new HttpError(400, 'bad_request', message);
export const unknownSymbol = (symbol: string, what = 'data') =>
  new HttpError(404, 'unknown_symbol', `unknown symbol "${symbol}": no ${what} stored for it`);
export const unavailable = (reason: string, retryAfterS: number) =>
  new HttpError(503, 'unavailable', `stores unavailable and nothing cached (${reason})`, {
    'retry-after': String(retryAfterS),
  });
