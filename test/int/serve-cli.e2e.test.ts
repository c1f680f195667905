import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { finished, startCli, stopChildren } from '../helpers/cli.ts';
import { DATABASE_URL, REDIS_URL, uniqueName, waitUntil } from '../helpers/index.ts';

/** `tickstream serve` as a process: listens on the configured port, keeps its admin token secret, stops cleanly. */
afterEach(stopChildren);

describe('tickstream serve (process)', () => {
  it('serves, never logs its admin token, and on SIGTERM closes stream clients with 1001 and exits 0', async () => {
    const prefix = uniqueName('servecli');
    const token = `tok-${uniqueName('secret')}-0123456789`;
    const child = startCli(['serve'], {
      REDIS_URL,
      DATABASE_URL,
      TICKSTREAM_STREAM_PREFIX: prefix,
      TICKSTREAM_QUOTE_KEY_PREFIX: `${prefix}:quote:`,
      TICKSTREAM_QUOTE_CHANNEL_PREFIX: `${prefix}:quotes:`,
      TICKSTREAM_PG_SCHEMA: prefix,
      TICKSTREAM_API_PORT: '0',
      TICKSTREAM_API_WARM_SYMBOLS: '0',
      TICKSTREAM_API_ADMIN_TOKEN: token,
    });
    const url = await waitUntil(
      () => /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(child.out.stderr)?.[1],
      'the listening log line',
      { timeoutMs: 60_000 },
    );
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const unknown = await fetch(`${url}/v1/quotes/NOPE`);
    expect(unknown.status).toBe(404);
    const denied = await fetch(`${url}/v1/cache/clear`, {
      method: 'POST',
      headers: { authorization: 'Bearer x' },
    });
    expect(denied.status).toBe(401);
    const cleared = await fetch(`${url}/v1/cache/clear`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(cleared.status).toBe(200);

    const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/stream`);
    await once(ws, 'open');
    const closed = once(ws, 'close') as Promise<[number, Buffer]>;
    child.kill('SIGTERM');
    const [code, reason] = await closed;
    expect(code).toBe(1001);
    expect(reason.toString()).toBe('server shutting down');
    const result = await finished(child, 30_000);
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('admin');
    expect(result.stderr).not.toContain(token);
    expect(result.stdout).not.toContain(token);
  });
});
