import { isUtf8 } from 'node:buffer';
import { backoffMs, sleep } from '../../shared/lifecycle.ts';
import { nowNs, type Tick } from '../../shared/model.ts';
import type { FeedEvent, FeedMapper } from './mapper.ts';
import { FeedSocket, ReadyState } from './websocket.ts';

/**
 * One venue's WebSocket, kept open until `stop()`: what a feed does whichever thread it runs on (in the
 * main thread for `TICKSTREAM_FEED_THREADS=false`, in a feed worker otherwise; source.ts). It owns
 * - heartbeats: a ping every third of `staleMs`, and a connection that shows no sign of life (message, ping
 *   or pong) for `staleMs` is dropped and opened again;
 * - reconnects with exponential backoff and full jitter, at most one connect per `minConnectIntervalMs` (the
 *   venues' connect rate limits), resubscribing to everything through the mapper;
 * - outgoing messages (subscriptions) paced at `minSendIntervalMs` (the venues' message rate limits);
 * - `pause()`/`resume()` of the socket for backpressure (the owner decides when), kept across a reconnect;
 * - parsing and mapping each message; a message that cannot be parsed or mapped becomes a `malformed` event
 *   with the raw text truncated to `maxRawBytes`; a refusal the venue states as final ends `run()` with it.
 * The owner gets ticks, events and connection changes through `hooks`, and reads `stats`.
 */
export interface FeedSettings {
  staleMs: number;
  connectTimeoutMs: number;
  reconnectBaseMs: number;
  reconnectMaxMs: number;
  minConnectIntervalMs: number;
  minSendIntervalMs: number;
  maxBufferedTicks: number;
  maxRawBytes: number;
  /** Run the socket and the mapping in a worker thread (TICKSTREAM_FEED_THREADS); default true. */
  threads?: boolean;
}

export interface FeedStats {
  connected: boolean;
  connects: number;
  reconnects: number;
  messages: number;
  ticks: number;
  gaps: number;
  malformed: number;
  duplicates: number;
  errors: number;
  /** Wall-clock ms of the newest message. */
  lastMessageAt: number;
}

export function emptyFeedStats(): FeedStats {
  return {
    connected: false,
    connects: 0,
    reconnects: 0,
    messages: 0,
    ticks: 0,
    gaps: 0,
    malformed: 0,
    duplicates: 0,
    errors: 0,
    lastMessageAt: 0,
  };
}

/** What a connection logs; a pino logger is one, and a feed worker forwards these to the main thread's. */
export interface FeedLog {
  info(o: object, msg: string): void;
  warn(o: object, msg: string): void;
  error(o: object, msg: string): void;
}

export interface ConnectionHooks {
  /** The ticks of one message (never empty), with its receive time. */
  ticks(ticks: readonly Tick[], receivedNs: bigint): void;
  /** A gap, malformed message or venue error, already counted in `stats` and logged. */
  event(e: FeedEvent): void;
  /** Called after `stats.connected` or `stats.reconnects` changed. */
  state(): void;
}

interface Outcome {
  delivered: boolean;
  reason: string;
}

export class FeedConnection {
  readonly stats: FeedStats = emptyFeedStats();
  private readonly stopping = new AbortController();
  private ws: FeedSocket | undefined;
  private paused = false;
  private fatal: string | undefined;
  private lastConnectAt = 0;
  /** The receive time of the socket read being handled (see `receiveTime`). */
  private readNs: bigint | undefined;
  private readMs = 0;

  constructor(
    private readonly mapper: FeedMapper,
    private readonly settings: FeedSettings,
    private readonly hooks: ConnectionHooks,
    private readonly log: FeedLog,
  ) {}

  /** Connect and reconnect until `stop()`; resolves with the venue's final refusal, if that is what ended it. */
  async run(): Promise<string | undefined> {
    const s = this.settings;
    let attempt = 0;
    const signal = this.stopping.signal;
    while (!signal.aborted) {
      const wait = this.lastConnectAt + s.minConnectIntervalMs - Date.now();
      if (wait > 0) await sleep(wait, signal);
      if (signal.aborted) break;
      this.lastConnectAt = Date.now();
      const outcome = await this.connectOnce();
      if (this.fatal !== undefined) return this.fatal;
      if (signal.aborted) break;
      attempt = outcome.delivered ? 1 : attempt + 1;
      this.stats.reconnects++;
      this.hooks.state();
      const delayMs = backoffMs(attempt, s.reconnectBaseMs, s.reconnectMaxMs);
      this.log.warn({ reason: outcome.reason, attempt, delayMs }, 'feed connection lost: reconnecting');
      await sleep(delayMs, signal);
    }
    return undefined;
  }

  /** Unsubscribe and close the socket; `run()` then resolves. */
  stop(): void {
    this.stopping.abort();
    const ws = this.ws;
    // The close handshake needs the venue's close frame read: a paused socket would wait out the close
    // timeout. What arrives until then is handed over like the rest.
    this.resume();
    if (ws !== undefined && ws.readyState === ReadyState.Open) {
      for (const m of this.mapper.onClose()) ws.send(m);
      ws.close(1000, 'shutting down');
    } else {
      // Still connecting: nothing to unsubscribe from. The socket's close handler runs inside this call
      // (hooks.state() included), not on a later tick as it did with ws.
      ws?.terminate();
    }
  }

  /** Stop reading the socket (TCP then holds the venue back) until `resume()`. */
  pause(): void {
    if (this.paused || this.stopping.signal.aborted) return;
    this.paused = true;
    this.ws?.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.ws?.resume();
  }

  private connectOnce(): Promise<Outcome> {
    const { mapper, settings: s, log } = this;
    return new Promise<Outcome>((resolve) => {
      let delivered = false;
      let reason = '';
      let lastSign = Date.now();
      const outbox: string[] = [];
      let sender: NodeJS.Timeout | undefined;
      const send = (messages: readonly string[]) => {
        outbox.push(...messages);
        if (sender !== undefined) return;
        const next = () => {
          const m = outbox.shift();
          if (m === undefined || ws.readyState !== ReadyState.Open) {
            sender = undefined;
            return;
          }
          ws.send(m);
          sender = setTimeout(next, s.minSendIntervalMs);
        };
        next();
      };
      // UTF-8 is checked in onMessage, only for text that decoded with a replacement character: checking every
      // message cost 3% of a feed worker's time, and a bad message should be kept as malformed and the feed go
      // on rather than the connection close (1007).
      const ws = FeedSocket.connect(
        mapper.url(),
        { handshakeTimeoutMs: s.connectTimeoutMs, maxPayload: 16 << 20, closeTimeoutMs: s.connectTimeoutMs },
        {
          open: () => {
            lastSign = Date.now();
            this.stats.connected = true;
            this.hooks.state();
            log.info({ url: redactUrl(mapper.url()) }, 'feed connected');
            send(mapper.onOpen());
          },
          ping: () => (lastSign = Date.now()),
          pong: () => (lastSign = Date.now()),
          message: (data, start, end) => {
            const receivedNs = this.receiveTime();
            lastSign = this.readMs;
            delivered = true;
            const more = this.onMessage(data, start, end, receivedNs);
            if (more !== undefined) send(more);
            if (this.fatal !== undefined) ws.close(1000, 'refused');
          },
          error: (err) => {
            reason = err.message;
          },
          close: (info) => {
            clearInterval(heartbeat);
            if (sender !== undefined) clearTimeout(sender);
            this.ws = undefined;
            this.stats.connected = false;
            this.hooks.state();
            resolve({ delivered, reason: reason === '' ? `closed with code ${info.code}` : reason });
          },
        },
      );
      // A pause asked for before (or across) a reconnect holds for the new socket too.
      if (this.paused) ws.pause();
      this.ws = ws;
      this.stats.connects++;
      // Declared after the socket's handlers that clear it: FeedSocket calls none of them before connect returns.
      const heartbeat = setInterval(
        () => {
          // A paused socket reads nothing, pongs included: silence is ours then, not the venue's.
          if (this.paused) lastSign = Date.now();
          if (Date.now() - lastSign > s.staleMs) {
            reason = `no message, ping or pong for ${s.staleMs} ms`;
            ws.terminate();
            return;
          }
          if (ws.readyState === ReadyState.Open) ws.ping();
        },
        Math.max(20, Math.floor(s.staleMs / 3)),
      );
    });
  }

  /**
   * The time the current socket read arrived: FeedSocket hands over every message of one read synchronously, and they
   * arrived together, so the clocks are read once per read rather than per message (a cost the profile showed).
   */
  private receiveTime(): bigint {
    if (this.readNs !== undefined) return this.readNs;
    this.readNs = nowNs();
    this.readMs = Date.now();
    queueMicrotask(() => (this.readNs = undefined));
    return this.readNs;
  }

  /** Map one message; returns what the mapper wants sent back. */
  private onMessage(data: Buffer, start: number, end: number, receivedNs: bigint): string[] | undefined {
    this.stats.messages++;
    this.stats.lastMessageAt = this.readMs;
    const text = data.toString('utf8', start, end);
    // Invalid bytes decode to U+FFFD: a message with one is checked, and kept as malformed when it is not
    // UTF-8 (never mapped with the bytes rewritten: two symbols differing in them would become one).
    if (text.includes('\uFFFD') && !isUtf8(data.subarray(start, end))) {
      this.event({ kind: 'malformed', detail: 'not valid UTF-8', raw: text });
      return undefined;
    }
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      this.event({ kind: 'malformed', detail: 'not JSON', raw: text });
      return undefined;
    }
    const result = this.mapper.map(message, receivedNs);
    for (const e of result.events)
      this.event(e.kind === 'malformed' && e.raw === undefined ? { ...e, raw: text } : e);
    if (result.fatal !== undefined) this.fatal = result.fatal;
    if (result.ticks.length > 0) {
      this.stats.ticks += result.ticks.length;
      this.hooks.ticks(result.ticks, receivedNs);
    }
    return result.send;
  }

  private event(e: FeedEvent): void {
    const max = this.settings.maxRawBytes;
    const raw = e.raw !== undefined && e.raw.length > max ? `${e.raw.slice(0, max)}…` : e.raw;
    const bounded: FeedEvent = raw === undefined ? e : { ...e, raw };
    switch (e.kind) {
      case 'gap':
        this.stats.gaps++;
        this.log.warn({ symbol: e.symbol, detail: e.detail }, 'feed sequence gap');
        break;
      case 'malformed':
        this.stats.malformed++;
        this.log.warn({ detail: e.detail }, 'malformed feed message kept in the feed events');
        break;
      case 'duplicate':
        this.stats.duplicates++;
        return; // expected after a reconnect: counted, not reported one by one
      case 'error':
        this.stats.errors++;
        this.log.error({ detail: e.detail }, 'the venue reported an error');
        break;
      case 'subscribed':
        this.log.info({ detail: e.detail }, 'feed subscribed');
        return;
    }
    this.hooks.event(bounded);
  }
}

/** A URL as it may be logged: no userinfo, no query string (some venues take tokens there). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return `${u.origin}${u.pathname}${u.search === '' ? '' : '?…'}`;
  } catch {
    return '<unparsable url>';
  }
}
