import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  acceptKey,
  FeedSocket,
  ReadyState,
  type CloseInfo,
  type FeedSocketOptions,
} from '../../producers/feeds/websocket.ts';
import { waitUntil } from '../helpers/index.ts';

// The feed's own WebSocket client (producers/feeds/websocket.ts, ADR 0018) against ws's server, which the
// venues' stand-ins also use, and against servers on raw sockets that break the protocol on purpose.

const options: FeedSocketOptions = { handshakeTimeoutMs: 2000, maxPayload: 1 << 20, closeTimeoutMs: 1000 };

/** What a client saw, in order. */
class Client {
  readonly messages: string[] = [];
  readonly events: string[] = [];
  error: Error | undefined;
  closed: CloseInfo | undefined;
  readonly socket: FeedSocket;
  constructor(url: string, o: Partial<FeedSocketOptions> = {}, onOpen?: (s: FeedSocket) => void) {
    this.socket = FeedSocket.connect(
      url,
      { ...options, ...o },
      {
        open: () => {
          this.events.push('open');
          onOpen?.(this.socket);
        },
        message: (data, start, end) => this.messages.push(data.toString('utf8', start, end)),
        ping: () => this.events.push('ping'),
        pong: () => this.events.push('pong'),
        error: (err) => {
          this.events.push('error');
          this.error = err;
        },
        close: (info) => {
          this.events.push('close');
          this.closed = info;
        },
      },
    );
  }
  ended(): Promise<CloseInfo> {
    return waitUntil(() => this.closed, 'the client to close');
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function wsServer(onConnection: (peer: WebSocket, req: IncomingMessage) => void, server?: Server) {
  const wss =
    server === undefined
      ? new WebSocketServer({ host: '127.0.0.1', port: 0 })
      : new WebSocketServer({ server });
  if (server === undefined) await new Promise<void>((r) => wss.once('listening', r));
  wss.on('connection', onConnection);
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  );
  const address = (server ?? wss).address() as { port: number };
  return address.port;
}

/** A TCP server speaking whatever `onSocket` writes (the request is read and ignored). */
async function rawServer(onSocket: (socket: Socket, request: string) => void): Promise<number> {
  const server: TcpServer = createTcpServer((socket) => {
    socket.on('error', () => socket.destroy());
    socket.once('data', (chunk) => onSocket(socket, chunk.toString('latin1')));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return (server.address() as { port: number }).port;
}

function accept(request: string): string {
  return acceptKey(/sec-websocket-key: (\S+)/i.exec(request)?.[1] ?? '');
}

/** An unmasked server frame with a payload under 126 bytes. */
function serverFrame(opcode: number, payload: Buffer | string): Buffer {
  const body = Buffer.from(payload);
  return Buffer.concat([Buffer.from([0x80 | opcode, body.length]), body]);
}

/** The code in the first close frame a client sent (masked). */
function sentCloseCode(sent: Buffer): number {
  expect(sent[0]).toBe(0x88);
  const mask = sent.subarray(2, 6);
  return ((sent[6]! ^ mask[0]!) << 8) | (sent[7]! ^ mask[1]!);
}

const upgraded = (request: string, extra = '') =>
  `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept(request)}\r\n${extra}\r\n`;

describe("FeedSocket against ws's server", () => {
  it('receives text, binary, large and fragmented messages in order, and sends text the server reads', async () => {
    const got: string[] = [];
    const big = 'x'.repeat(200_000);
    const port = await wsServer((peer, req) => {
      got.push(`path ${req.url}`);
      peer.on('message', (data) => {
        got.push(String(data));
        peer.send('{"a":1}');
        peer.send(Buffer.from('binary'), { binary: true });
        peer.send(big);
        peer.send('{"frag', { fin: false });
        peer.send('mented":', { fin: false });
        peer.send('true}', { fin: true });
        peer.send('ünïcødé 🚀');
      });
    });
    const client = new Client(`ws://127.0.0.1:${port}/stream?streams=btcusdt@trade`, {}, (s) =>
      s.send('{"method":"SUBSCRIBE"}'),
    );
    await waitUntil(() => client.messages.length === 5, 'five messages');
    expect(client.messages).toEqual(['{"a":1}', 'binary', big, '{"fragmented":true}', 'ünïcødé 🚀']);
    expect(got).toEqual(['path /stream?streams=btcusdt@trade', '{"method":"SUBSCRIBE"}']);
    expect(client.socket.readyState).toBe(ReadyState.Open);
  });

  it("answers the server's pings with the same payload, and hears the pongs to its own", async () => {
    const pongs: string[] = [];
    const port = await wsServer((peer) => {
      peer.on('pong', (data) => pongs.push(String(data)));
      peer.ping('are you there');
    });
    const client = new Client(`ws://127.0.0.1:${port}`);
    await waitUntil(() => pongs.length === 1, 'the client to pong');
    expect(pongs).toEqual(['are you there']);
    client.socket.ping();
    await waitUntil(() => client.events.includes('pong'), 'a pong');
    expect(client.events.slice(0, 2)).toEqual(['open', 'ping']);
  });

  it("a server's close frame ends the connection with its code and reason, and is answered", async () => {
    let serverSaw: number | undefined;
    const port = await wsServer((peer) => {
      peer.on('close', (code) => (serverSaw = code));
      peer.send('last');
      peer.close(4001, 'going away for maintenance');
    });
    const client = new Client(`ws://127.0.0.1:${port}`);
    expect(await client.ended()).toEqual({ code: 4001, reason: 'going away for maintenance' });
    expect(client.messages).toEqual(['last']);
    expect(client.error).toBeUndefined();
    await waitUntil(() => serverSaw, 'the server to see the close');
    expect(serverSaw).toBe(4001); // the client echoed the server's code
    expect(client.socket.readyState).toBe(ReadyState.Closed);
  });

  it('close() sends a close frame the server reads, and ends when the server answers', async () => {
    let serverSaw: [number, string] | undefined;
    const port = await wsServer((peer) =>
      peer.on('close', (code, reason) => (serverSaw = [code, String(reason)])),
    );
    const client = new Client(`ws://127.0.0.1:${port}`);
    await waitUntil(() => client.events.includes('open'), 'open');
    client.socket.close(1000, 'shutting down');
    expect(client.socket.readyState).toBe(ReadyState.Closing);
    expect(await client.ended()).toEqual({ code: 1000, reason: 'shutting down' });
    await waitUntil(() => serverSaw, 'the server to see the close');
    expect(serverSaw).toEqual([1000, 'shutting down']);
  });

  it('a connection dropped without a close frame ends with 1006', async () => {
    const port = await wsServer((peer) => {
      peer.send('one');
      setImmediate(() => peer.terminate());
    });
    const client = new Client(`ws://127.0.0.1:${port}`);
    expect((await client.ended()).code).toBe(1006);
    expect(client.messages).toEqual(['one']);
  });

  it('reads nothing while paused, and everything, in order, once resumed', async () => {
    const written: number[] = [];
    const port = await wsServer((peer) => {
      for (let i = 0; i < 50; i++) peer.send(`m${i}`, () => written.push(i));
    });
    const client = new Client(`ws://127.0.0.1:${port}`, {}, (s) => s.pause());
    // Every frame reached the client's kernel buffer (the send callbacks ran) while it was paused.
    await waitUntil(() => written.length === 50, 'the server to write every message');
    expect(client.messages).toEqual([]);
    client.socket.resume();
    await waitUntil(() => client.messages.length === 50, 'every message after resuming');
    expect(client.messages).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
  });

  it('a pause asked for before the connection opens holds once it does (a reconnect while paused)', async () => {
    const written: number[] = [];
    const port = await wsServer((peer) => {
      for (let i = 0; i < 5; i++) peer.send(`m${i}`, () => written.push(i));
    });
    const client = new Client(`ws://127.0.0.1:${port}`);
    client.socket.pause();
    await waitUntil(() => written.length === 5, 'the server to write every message');
    expect(client.events).toEqual(['open']);
    expect(client.messages).toEqual([]);
    client.socket.resume();
    await waitUntil(() => client.messages.length === 5, 'every message after resuming');
  });

  it("a close started while paused still reads the server's answer", async () => {
    const port = await wsServer((peer) => peer.send('held'));
    const client = new Client(`ws://127.0.0.1:${port}`, {}, (s) => s.pause());
    await waitUntil(() => client.events.includes('open'), 'open');
    client.socket.close(1000, 'bye');
    expect(await client.ended()).toEqual({ code: 1000, reason: 'bye' });
  });

  it('terminate() while connecting ends with an error and no open', async () => {
    const port = await rawServer(() => undefined); // never answers the handshake
    const client = new Client(`ws://127.0.0.1:${port}`);
    client.socket.terminate();
    expect((await client.ended()).code).toBe(1006);
    expect(client.events).toEqual(['error', 'close']);
    expect(client.error?.message).toBe('connection aborted before it opened');
  });

  it('speaks TLS (wss://) to a server whose certificate it is given', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tickstream-wss-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const cert = readFileSync(join(dir, 'cert.pem'));
    const server = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const port = await wsServer((peer) => peer.send('over tls'), server);
    const client = new Client(`wss://localhost:${port}`, { ca: cert });
    await waitUntil(() => client.messages.length === 1, 'a message over TLS');
    expect(client.messages).toEqual(['over tls']);
    // Without the certificate the system's CAs refuse it: TLS is checked, not merely spoken.
    const untrusted = new Client(`wss://localhost:${port}`);
    await untrusted.ended();
    expect(untrusted.events).toEqual(['error', 'close']);
    expect(untrusted.error?.message).toMatch(/self[- ]signed/i);
  });
});

describe('FeedSocket refusing what breaks the protocol', () => {
  it('an HTTP answer that is not an upgrade', async () => {
    const server = createHttpServer((_req, res) => res.writeHead(403).end('no'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const client = new Client(`ws://127.0.0.1:${(server.address() as { port: number }).port}`);
    expect((await client.ended()).code).toBe(1006);
    expect(client.error?.message).toBe('unexpected server response: 403');
    expect(client.events).toEqual(['error', 'close']);
  });

  it.each([
    [
      'a wrong Sec-WebSocket-Accept',
      (req: string) => upgraded(req).replace(accept(req), 'bm90IHRoZSBrZXk='),
      'invalid Sec-WebSocket-Accept header',
    ],
    [
      'an extension nobody offered',
      (req: string) => upgraded(req, 'Sec-WebSocket-Extensions: permessage-deflate\r\n'),
      'the server agreed to an extension that was not offered',
    ],
    [
      'a subprotocol nobody offered',
      (req: string) => upgraded(req, 'Sec-WebSocket-Protocol: chat\r\n'),
      'the server chose a subprotocol that was not offered',
    ],
  ])('a handshake with %s', async (_what, answer, message) => {
    const port = await rawServer((socket, req) => socket.write(answer(req)));
    const client = new Client(`ws://127.0.0.1:${port}`);
    await client.ended();
    expect(client.error?.message).toBe(message);
    expect(client.events).toEqual(['error', 'close']);
  });

  it('a server that never finishes the handshake (timeout)', async () => {
    const port = await rawServer(() => undefined);
    const client = new Client(`ws://127.0.0.1:${port}`, { handshakeTimeoutMs: 150 });
    await client.ended();
    expect(client.error?.message).toBe('opening handshake has timed out');
  });

  it('a closed port', async () => {
    const port = await rawServer(() => undefined);
    await cleanups.pop()!();
    const client = new Client(`ws://127.0.0.1:${port}`);
    await client.ended();
    expect(client.error?.message).toMatch(/ECONNREFUSED/);
  });

  it('a masked frame from the server: closed with 1002, the messages before it kept', async () => {
    const clientBytes: Buffer[] = [];
    const port = await rawServer((socket, req) => {
      socket.on('data', (b) => clientBytes.push(b));
      // In the same write as the handshake's answer: the frames that come with it are read too.
      socket.write(
        Buffer.concat([
          Buffer.from(upgraded(req), 'latin1'),
          Buffer.from([0x81, 2, 0x6f, 0x6b]),
          Buffer.from([0x81, 0x81, 1, 2, 3, 4, 0x79]),
        ]),
      );
    });
    const client = new Client(`ws://127.0.0.1:${port}`);
    await client.ended();
    expect(client.messages).toEqual(['ok']);
    expect(client.error?.message).toBe('the server masked a frame');
    // The client's close frame (masked, as a client's must be) carries 1002.
    expect(sentCloseCode(Buffer.concat(clientBytes))).toBe(1002);
  });

  it("nothing after the server's close frame is handled", async () => {
    const port = await rawServer((socket, req) =>
      socket.write(
        Buffer.concat([
          Buffer.from(upgraded(req), 'latin1'),
          serverFrame(0x1, 'before'),
          serverFrame(0x8, Buffer.concat([Buffer.from([0x03, 0xe8]), Buffer.from('done')])),
          serverFrame(0x1, 'after'),
          serverFrame(0x9, 'ping after'),
        ]),
      ),
    );
    const client = new Client(`ws://127.0.0.1:${port}`);
    expect(await client.ended()).toEqual({ code: 1000, reason: 'done' });
    expect(client.messages).toEqual(['before']);
    expect(client.events).toEqual(['open', 'close']);
  });

  it.each([
    ['a 1-byte payload', Buffer.from([0x03]), 1002, 'close frame with a 1-byte payload'],
    ['a code below 1000', Buffer.from([0x03, 0xe7]), 1002, 'close frame with the invalid code 999'],
    [
      '1006, which no endpoint sends',
      Buffer.from([0x03, 0xee]),
      1002,
      'close frame with the invalid code 1006',
    ],
    [
      'a reason that is not UTF-8',
      Buffer.from([0x03, 0xe8, 0xff, 0xfe]),
      1007,
      'close frame whose reason is not UTF-8',
    ],
  ])('a close frame with %s is a violation (%i)', async (_what, payload, code, message) => {
    const clientBytes: Buffer[] = [];
    const port = await rawServer((socket, req) => {
      socket.on('data', (b) => clientBytes.push(b));
      socket.write(Buffer.concat([Buffer.from(upgraded(req), 'latin1'), serverFrame(0x8, payload)]));
    });
    const client = new Client(`ws://127.0.0.1:${port}`);
    await client.ended();
    expect(client.error?.message).toBe(message);
    await waitUntil(() => Buffer.concat(clientBytes).length >= 8, "the client's close frame");
    expect(sentCloseCode(Buffer.concat(clientBytes))).toBe(code);
  });

  it('a close the server never answers ends after closeTimeoutMs', async () => {
    const port = await rawServer((socket, req) => socket.write(upgraded(req)));
    const client = new Client(`ws://127.0.0.1:${port}`, { closeTimeoutMs: 200 });
    await waitUntil(() => client.events.includes('open'), 'open');
    const started = Date.now();
    client.socket.close(1000, 'bye');
    expect((await client.ended()).code).toBe(1006);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
  });

  it('a paused connection dropped with frames already read delivers them before it closes', async () => {
    // The frames come in the handshake's own write, so they are read with it and wait in the paused stream.
    const port = await rawServer((socket, req) =>
      socket.write(
        Buffer.concat([Buffer.from(upgraded(req), 'latin1'), serverFrame(0x1, 'x'), serverFrame(0x1, 'y')]),
      ),
    );
    const client = new Client(`ws://127.0.0.1:${port}`);
    client.socket.pause();
    await waitUntil(() => client.events.includes('open'), 'open');
    expect(client.messages).toEqual([]);
    client.socket.terminate();
    expect((await client.ended()).code).toBe(1006);
    expect(client.messages).toEqual(['x', 'y']);
  });

  it('refuses a URL that is not ws:// or wss://', () => {
    expect(() => FeedSocket.connect('http://127.0.0.1:1', options, {} as never)).toThrow(
      'a feed URL is ws:// or wss://, not http:',
    );
  });
});
