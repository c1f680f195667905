import { isUtf8 } from 'node:buffer';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { unescape } from 'node:querystring';
import type { Duplex } from 'node:stream';

/**
 * The client side of RFC 6455, as a feed needs it and no more (ADR 0018): connect (ws:// or wss://), read
 * text and binary messages, answer pings, send text, ping, pause and resume reading, close. No extensions are
 * offered (so none may be used), no subprotocols, no redirects.
 *
 * Why not `ws`: a feed worker's time goes to receiving messages, and ws's receiver (a Writable stream, a Buffer
 * per frame, two events per message) cost about as much per message as the venue's mapping; FrameReader
 * parses every frame of a socket read in one loop and hands the owner the payload's position in that read.
 * `ws` stays the server (and the test stand-ins): the feed speaks to those, so every feed test is also a
 * conformance test of this client against ws.
 */

/** Why the connection closed, as RFC 6455 section 7.4 codes it (1006: no close frame came). */
export interface CloseInfo {
  code: number;
  reason: string;
}

export interface FeedSocketHandlers {
  open(): void;
  /**
   * One whole message: `data[start, end)`. The bytes are only read during the call (a later read may be
   * parsed from the same buffer).
   */
  message(data: Buffer, start: number, end: number): void;
  ping(): void;
  pong(): void;
  /** A transport or protocol error; `close` follows. */
  error(err: Error): void;
  /** Always called once, last. */
  close(info: CloseInfo): void;
}

export interface FeedSocketOptions {
  handshakeTimeoutMs: number;
  /** A larger message (whole, or its fragments together) closes the connection with 1009. */
  maxPayload: number;
  /** How long a close we started waits for the server's close frame before dropping the connection. */
  closeTimeoutMs: number;
  /** Certificates trusted for wss:// instead of the system's (a private venue gateway; the TLS test). */
  ca?: string | Buffer;
}

export const ReadyState = { Connecting: 0, Open: 1, Closing: 2, Closed: 3 } as const;
export type ReadyState = (typeof ReadyState)[keyof typeof ReadyState];

/** The server's Sec-WebSocket-Accept for a client's key (RFC 6455 section 4.2.2). */
export function acceptKey(key: string): string {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}
const Op = { Continuation: 0x0, Text: 0x1, Binary: 0x2, Close: 0x8, Ping: 0x9, Pong: 0xa } as const;

/** A protocol violation by the server: the connection is closed with `code` (RFC 6455 section 7.4.1). */
export class WebSocketProtocolError extends Error {
  readonly retriable = true;
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
    this.name = 'WebSocketProtocolError';
  }
}

export interface FrameHandlers {
  message(data: Buffer, start: number, end: number): void;
  control(opcode: number, payload: Buffer): void;
}

/**
 * Server-to-client frames from a byte stream. Every whole frame of a read is handled in one loop; a frame
 * split across reads waits, its pieces kept as read, until all of it is there (one copy, however many reads).
 * A fragmented message is joined once its last fragment arrives. Throws WebSocketProtocolError; after that
 * the reader is done. What waits (a split frame, fragments) is kept as views of the chunks pushed: a chunk
 * must not be written to after it is pushed (a socket's reads are fresh buffers).
 */
export class FrameReader {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes needed in `pending` before parsing can progress. */
  private need = 2;
  private fragments: Buffer[] = [];
  private fragmentBytes = 0;
  private fragmented = false;

  constructor(
    private readonly maxPayload: number,
    private readonly handlers: FrameHandlers,
  ) {}

  push(chunk: Buffer): void {
    let data = chunk;
    if (this.pendingBytes > 0) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes < this.need) return;
      data = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
    }
    const end = data.length;
    let at = 0;
    for (;;) {
      if (end - at < 2) {
        this.need = 2;
        break;
      }
      const b0 = data[at]!;
      const b1 = data[at + 1]!;
      let length = b1 & 0x7f;
      let head = 2;
      if (length === 126) {
        head = 4;
        if (end - at < head) {
          this.need = head;
          break;
        }
        length = data.readUInt16BE(at + 2);
      } else if (length === 127) {
        head = 10;
        if (end - at < head) {
          this.need = head;
          break;
        }
        const high = data.readUInt32BE(at + 2);
        // 2^53 and beyond is no length a payload limit admits (and would not survive a double).
        if (high > 0x1fffff) throw new WebSocketProtocolError('frame length out of range', 1009);
        length = high * 0x1_0000_0000 + data.readUInt32BE(at + 6);
      }
      this.check(b0, b1, length);
      if (end - at - head < length) {
        this.need = head + length;
        break;
      }
      const start = at + head;
      at = start + length;
      this.frame(b0, data, start, at);
    }
    if (at < end) {
      const rest = at === 0 ? data : data.subarray(at);
      this.pending.push(rest);
      this.pendingBytes = rest.length;
    }
  }

  private check(b0: number, b1: number, length: number): void {
    if ((b0 & 0x70) !== 0)
      throw new WebSocketProtocolError('reserved bits set (no extension was agreed)', 1002);
    if ((b1 & 0x80) !== 0) throw new WebSocketProtocolError('the server masked a frame', 1002);
    const opcode = b0 & 0x0f;
    const fin = (b0 & 0x80) !== 0;
    if (opcode >= 0x8) {
      if (opcode > Op.Pong) throw new WebSocketProtocolError(`unknown control opcode ${opcode}`, 1002);
      if (!fin) throw new WebSocketProtocolError('fragmented control frame', 1002);
      if (length > 125) throw new WebSocketProtocolError('control frame longer than 125 bytes', 1002);
      return;
    }
    if (opcode > Op.Binary) throw new WebSocketProtocolError(`unknown data opcode ${opcode}`, 1002);
    if (opcode === Op.Continuation && !this.fragmented)
      throw new WebSocketProtocolError('continuation frame with no message to continue', 1002);
    if (opcode !== Op.Continuation && this.fragmented)
      throw new WebSocketProtocolError('new message before the fragmented one ended', 1002);
    if (this.fragmentBytes + length > this.maxPayload)
      throw new WebSocketProtocolError(`message larger than ${this.maxPayload} bytes`, 1009);
  }

  private frame(b0: number, data: Buffer, start: number, end: number): void {
    const opcode = b0 & 0x0f;
    if (opcode >= 0x8) {
      // Copied: the owner may keep a control payload (a close reason) beyond this read.
      this.handlers.control(opcode, Buffer.from(data.subarray(start, end)));
      return;
    }
    const fin = (b0 & 0x80) !== 0;
    if (fin && !this.fragmented) {
      this.handlers.message(data, start, end);
      return;
    }
    this.fragmented = true;
    this.fragments.push(data.subarray(start, end));
    this.fragmentBytes += end - start;
    if (!fin) return;
    const whole = Buffer.concat(this.fragments, this.fragmentBytes);
    this.fragments = [];
    this.fragmentBytes = 0;
    this.fragmented = false;
    this.handlers.message(whole, 0, whole.length);
  }
}

/** A client frame (masked, as RFC 6455 section 5.3 requires of clients). */
export function clientFrame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 65_536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(head + 4 + n);
  frame[0] = 0x80 | opcode;
  if (n < 126) frame[1] = 0x80 | n;
  else if (n < 65_536) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeBigUInt64BE(BigInt(n), 2);
  }
  const mask = frame.subarray(head, head + 4);
  randomFillSync(mask);
  for (let i = 0; i < n; i++) frame[head + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return frame;
}

/** Whether a close code may be sent in a close frame (RFC 6455 section 7.4; 1004-1006 and 1015 never are). */
function sendable(code: number): boolean {
  return (
    (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (code >= 3000 && code <= 4999)
  );
}

function closePayload(code: number, reason: string): Buffer {
  const text = Buffer.from(reason);
  const payload = Buffer.allocUnsafe(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  return payload;
}

/** One client connection. Create it with `FeedSocket.connect`; the handlers see everything that happens. */
export class FeedSocket {
  private state: ReadyState = ReadyState.Connecting;
  private socket: Duplex | undefined;
  private closeSent = false;
  private closeInfo: CloseInfo | undefined;
  private error: Error | undefined;
  private closeTimer: NodeJS.Timeout | undefined;
  private paused = false;
  private readonly abort: () => void;

  private constructor(
    url: URL,
    private readonly options: FeedSocketOptions,
    private readonly handlers: FeedSocketHandlers,
  ) {
    const key = randomBytes(16).toString('base64');
    const secure = url.protocol === 'wss:';
    const request = (secure ? httpsRequest : httpRequest)({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port === '' ? (secure ? 443 : 80) : Number(url.port),
      path: `${url.pathname}${url.search}`,
      // As ws does: userinfo becomes Basic auth, unescaped without throwing on a stray `%`.
      auth:
        url.username === '' && url.password === ''
          ? undefined
          : `${unescape(url.username)}:${unescape(url.password)}`,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': key,
      },
      // Its own connection: an upgraded socket is never returned to a pool.
      agent: false,
      ...(secure && options.ca !== undefined ? { ca: options.ca } : {}),
    });
    const timer = setTimeout(
      () => fail(new Error('opening handshake has timed out')),
      options.handshakeTimeoutMs,
    );
    const fail = (err: Error) => {
      if (this.state !== ReadyState.Connecting) return;
      clearTimeout(timer);
      request.destroy();
      this.error = err;
      this.finish({ code: 1006, reason: '' });
    };
    this.abort = () => fail(new Error('connection aborted before it opened'));
    request.on('error', (err) => fail(err));
    request.on('response', (res: IncomingMessage) => {
      res.resume();
      fail(new Error(`unexpected server response: ${res.statusCode ?? 'none'}`));
    });
    request.on('upgrade', (res: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (this.state !== ReadyState.Connecting) return void socket.destroy();
      const expected = acceptKey(key);
      const problem =
        res.headers.upgrade?.toLowerCase() !== 'websocket'
          ? 'invalid Upgrade header'
          : res.headers['sec-websocket-accept'] !== expected
            ? 'invalid Sec-WebSocket-Accept header'
            : res.headers['sec-websocket-extensions'] !== undefined
              ? 'the server agreed to an extension that was not offered'
              : res.headers['sec-websocket-protocol'] !== undefined
                ? 'the server chose a subprotocol that was not offered'
                : undefined;
      if (problem !== undefined) {
        socket.destroy();
        return fail(new Error(problem));
      }
      clearTimeout(timer);
      this.open(socket, head);
    });
    // Subscriptions and pings are small writes that should go out at once, as ws sends them.
    request.setNoDelay(true);
    request.end();
  }

  static connect(url: string, options: FeedSocketOptions, handlers: FeedSocketHandlers): FeedSocket {
    const parsed = new URL(url);
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:')
      throw new Error(`a feed URL is ws:// or wss://, not ${parsed.protocol}`);
    return new FeedSocket(parsed, options, handlers);
  }

  get readyState(): ReadyState {
    return this.state;
  }

  send(text: string): void {
    this.write(Op.Text, Buffer.from(text));
  }

  ping(): void {
    this.write(Op.Ping, Buffer.alloc(0));
  }

  /** Stop reading: TCP then holds the server back. Not while closing: the server's close frame must be read. */
  pause(): void {
    this.paused = true;
    if (this.state !== ReadyState.Closing) this.socket?.pause();
  }

  resume(): void {
    this.paused = false;
    this.socket?.resume();
  }

  /** Start the closing handshake; the connection drops if the server does not answer in `closeTimeoutMs`. */
  close(code: number, reason: string): void {
    if (this.state === ReadyState.Connecting) return this.abort();
    if (this.state !== ReadyState.Open) return;
    this.state = ReadyState.Closing;
    this.sendClose(code, reason);
    // The server's close frame has to be read, paused or not.
    this.socket?.resume();
    this.closeTimer = setTimeout(() => this.socket?.destroy(), this.options.closeTimeoutMs);
  }

  /** Drop the connection at once. */
  terminate(): void {
    if (this.state === ReadyState.Connecting) return this.abort();
    this.socket?.destroy();
  }

  private open(socket: Duplex, head: Buffer): void {
    this.socket = socket;
    this.state = ReadyState.Open;
    const reader = new FrameReader(this.options.maxPayload, {
      // Also while closing: what the server sent before its close frame is as good as the rest. Nothing after
      // it is (RFC 6455 section 5.5.1: the close frame is the server's last).
      message: (data, start, end) => {
        if (this.closeInfo === undefined) this.handlers.message(data, start, end);
      },
      control: (opcode, payload) => {
        if (this.closeInfo === undefined) this.control(opcode, payload);
      },
    });
    const onData = (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (err) {
        // A handler's own failure is not the server's: it goes on up as it would from any event.
        if (!(err instanceof WebSocketProtocolError)) throw err;
        socket.removeListener('data', onData);
        const e = err;
        this.error ??= e;
        if (this.state === ReadyState.Open) {
          this.state = ReadyState.Closing;
          this.sendClose(e.code, '');
        }
        socket.end();
        this.closeTimer ??= setTimeout(() => socket.destroy(), this.options.closeTimeoutMs);
      }
    };
    // Frames that came with the handshake's response go back to the stream, to be read (or held while
    // paused) like the rest.
    if (head.length > 0) socket.unshift(head);
    this.handlers.open();
    if (this.paused) socket.pause();
    socket.on('data', onData);
    socket.on('error', (err) => (this.error ??= err));
    socket.on('close', () => {
      // What was read but not yet handled (a paused socket's buffer) is delivered before the end, as ws does.
      if (this.closeInfo === undefined && socket.listenerCount('data') > 0 && socket.readableLength > 0) {
        const rest = socket.read() as Buffer | null;
        if (rest !== null) onData(rest);
      }
      this.finish(this.closeInfo ?? { code: 1006, reason: '' });
    });
    socket.on('end', () => {
      if (this.state === ReadyState.Open) this.state = ReadyState.Closing;
      socket.end();
    });
  }

  private control(opcode: number, payload: Buffer): void {
    if (opcode === Op.Ping) {
      if (this.state === ReadyState.Open) this.write(Op.Pong, payload);
      this.handlers.ping();
    } else if (opcode === Op.Pong) {
      this.handlers.pong();
    } else {
      if (payload.length === 1) throw new WebSocketProtocolError('close frame with a 1-byte payload', 1002);
      const code = payload.length === 0 ? 1005 : payload.readUInt16BE(0);
      if (payload.length > 0 && !sendable(code))
        throw new WebSocketProtocolError(`close frame with the invalid code ${code}`, 1002);
      if (!isUtf8(payload.subarray(2)))
        throw new WebSocketProtocolError('close frame whose reason is not UTF-8', 1007);
      this.closeInfo = { code, reason: payload.toString('utf8', 2) };
      // Echoed, as is usual (RFC 6455 section 5.5.1).
      if (!this.closeSent) this.sendClose(payload.length === 0 ? 1000 : code, '');
      this.state = ReadyState.Closing;
      // The server closes TCP after the handshake (RFC 6455 section 7.1.1); ending our side lets it.
      this.socket?.end();
      this.closeTimer ??= setTimeout(() => this.socket?.destroy(), this.options.closeTimeoutMs);
    }
  }

  private sendClose(code: number, reason: string): void {
    this.closeSent = true;
    this.socket?.write(clientFrame(Op.Close, closePayload(code, reason)));
  }

  private write(opcode: number, payload: Buffer): void {
    if (this.state !== ReadyState.Open || this.socket === undefined) return;
    this.socket.write(clientFrame(opcode, payload));
  }

  private finish(info: CloseInfo): void {
    if (this.state === ReadyState.Closed) return;
    this.state = ReadyState.Closed;
    if (this.closeTimer !== undefined) clearTimeout(this.closeTimer);
    if (this.error !== undefined) this.handlers.error(this.error);
    this.handlers.close(info);
  }
}
