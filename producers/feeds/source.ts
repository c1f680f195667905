import WebSocket from 'ws';
import { TickstreamError } from '../../shared/errors.ts';
import { backoffMs, once, sleep } from '../../shared/lifecycle.ts';
import type { Logger } from '../../shared/logger.ts';
import { nowNs, type Tick } from '../../shared/model.ts';
import type { TickSource } from '../source.ts';
import { RX_MARK, type FeedEvent, type FeedMapper } from './mapper.ts';
import { feedMetrics, type HistogramSeries } from './metrics.ts';

/**
 * A live feed as a TickSource: one WebSocket connection to a venue, kept open for as long as the source is
 * iterated. The mapper (one per venue) speaks the protocol; this class owns the socket:
 * - heartbeats: a ping every third of `staleMs`, and a connection that shows no sign of life (message, ping
 *   or pong) for `staleMs` is dropped and opened again;
 * - reconnects with exponential backoff and full jitter, at most one connect per `minConnectIntervalMs` (the
 *   venues' connect rate limits), resubscribing to everything through the mapper;
 * - outgoing messages (subscriptions) paced at `minSendIntervalMs` (the venues' message rate limits);
 * - backpressure: when `maxBufferedTicks` ticks wait for the publisher, the socket is paused (TCP then
 *   holds the venue back) until half have gone, so memory stays bounded whatever the venue sends;
 * - a message that cannot be parsed or mapped is counted and reported (raw, truncated to `maxRawBytes`)
 *   through `onEvent`, and the feed goes on; a refusal the venue states as final (credentials, unknown
 *   symbol) ends the iteration with a non-retriable FeedError.
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
}

export interface FeedSourceOptions {
  mapper: FeedMapper;
  settings: FeedSettings;
  log: Logger;
  onEvent?: (e: FeedEvent) => void;
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

export class FeedError extends TickstreamError {
  override name = 'FeedError';
}

interface Outcome {
  delivered: boolean;
  reason: string;
}

export class FeedSource implements TickSource {
  readonly name: string;
  readonly stats: FeedStats = {
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
  private readonly o: FeedSourceOptions;
  private readonly metrics = feedMetrics();
  private readonly stop = new AbortController();
  private queue: Tick[] = [];
  private wake: (() => void) | undefined;
  private ws: WebSocket | undefined;
  private paused = false;
  private running: Promise<void> | undefined;
  private ended = false;
  private failure: FeedError | undefined;
  private fatal: string | undefined;
  private lastConnectAt = 0;
  /**
   * Counts not yet added to the Prometheus counters: prom-client hashes the labels on every `inc`, which per
   * message cost as much as the mapping itself, so they are added once per batch handed to the publisher.
   */
  private readonly unreported = { messages: 0, trades: 0, quotes: 0 };
  private readonly venueLabel: { venue: string };
  private readonly lag: HistogramSeries;

  constructor(options: FeedSourceOptions) {
    this.o = options;
    this.name = `feed:${options.mapper.venue}`;
    this.venueLabel = { venue: options.mapper.venue };
    this.lag = this.metrics.lag.venue(options.mapper.venue);
  }

  async *batches(): AsyncIterable<readonly Tick[]> {
    this.running ??= this.run().finally(() => {
      this.ended = true;
      this.notify();
    });
    for (;;) {
      if (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        if (this.paused) this.resume();
        this.reportCounts();
        yield batch;
        continue;
      }
      this.reportCounts();
      if (this.ended) break;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /** Unsubscribe, close the socket and end the iteration once what was received has been yielded. */
  readonly close = once(async () => {
    this.stop.abort();
    const ws = this.ws;
    if (ws !== undefined && ws.readyState === WebSocket.OPEN) {
      for (const m of this.o.mapper.onClose()) ws.send(m);
      ws.close(1000, 'shutting down');
    } else {
      ws?.terminate(); // still connecting: nothing to unsubscribe from
    }
    this.notify();
    await this.running;
  });

  private reportCounts(): void {
    const u = this.unreported;
    const venue = this.o.mapper.venue;
    if (u.messages > 0) this.metrics.messages.inc(this.venueLabel, u.messages);
    if (u.trades > 0) this.metrics.ticks.inc({ venue, type: 'trade' }, u.trades);
    if (u.quotes > 0) this.metrics.ticks.inc({ venue, type: 'quote' }, u.quotes);
    u.messages = u.trades = u.quotes = 0;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private async run(): Promise<void> {
    const { settings: s, log } = this.o;
    let attempt = 0;
    while (!this.stop.signal.aborted) {
      const wait = this.lastConnectAt + s.minConnectIntervalMs - Date.now();
      if (wait > 0) await sleep(wait, this.stop.signal);
      if (this.stop.signal.aborted) break;
      this.lastConnectAt = Date.now();
      const outcome = await this.connectOnce();
      if (this.fatal !== undefined) {
        this.failure = new FeedError(this.fatal, { retriable: false });
        break;
      }
      if (this.stop.signal.aborted) break;
      attempt = outcome.delivered ? 1 : attempt + 1;
      this.stats.reconnects++;
      this.metrics.reconnects.inc({ venue: this.o.mapper.venue });
      const delayMs = backoffMs(attempt, s.reconnectBaseMs, s.reconnectMaxMs);
      log.warn({ reason: outcome.reason, attempt, delayMs }, 'feed connection lost: reconnecting');
      await sleep(delayMs, this.stop.signal);
    }
  }

  private connectOnce(): Promise<Outcome> {
    const { mapper, settings: s, log } = this.o;
    const venue = mapper.venue;
    return new Promise<Outcome>((resolve) => {
      const ws = new WebSocket(mapper.url(), { handshakeTimeout: s.connectTimeoutMs, maxPayload: 16 << 20 });
      this.ws = ws;
      this.paused = false;
      this.stats.connects++;
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
          if (m === undefined || ws.readyState !== WebSocket.OPEN) {
            sender = undefined;
            return;
          }
          ws.send(m);
          sender = setTimeout(next, s.minSendIntervalMs);
        };
        next();
      };
      const heartbeat = setInterval(
        () => {
          // A paused socket reads nothing, pongs included: silence is ours then, not the venue's.
          if (this.paused) lastSign = Date.now();
          if (Date.now() - lastSign > s.staleMs) {
            reason = `no message, ping or pong for ${s.staleMs} ms`;
            ws.terminate();
            return;
          }
          if (ws.readyState === WebSocket.OPEN) ws.ping();
        },
        Math.max(20, Math.floor(s.staleMs / 3)),
      );
      ws.on('open', () => {
        lastSign = Date.now();
        this.stats.connected = true;
        this.metrics.connected.set({ venue }, 1);
        log.info({ url: redactUrl(mapper.url()) }, 'feed connected');
        send(mapper.onOpen());
      });
      ws.on('ping', () => (lastSign = Date.now()));
      ws.on('pong', () => (lastSign = Date.now()));
      ws.on('message', (data: WebSocket.RawData) => {
        lastSign = Date.now();
        delivered = true;
        const more = this.onMessage(data);
        if (more !== undefined) send(more);
        if (this.fatal !== undefined) ws.close(1000, 'refused');
      });
      ws.on('error', (err) => {
        reason = err.message;
      });
      ws.on('close', (code) => {
        clearInterval(heartbeat);
        if (sender !== undefined) clearTimeout(sender);
        this.ws = undefined;
        this.stats.connected = false;
        this.metrics.connected.set({ venue }, 0);
        resolve({ delivered, reason: reason === '' ? `closed with code ${code}` : reason });
      });
    });
  }

  /** Map one message; returns what the mapper wants sent back. */
  private onMessage(data: WebSocket.RawData): string[] | undefined {
    const { mapper, settings: s } = this.o;
    const receivedNs = nowNs();
    this.stats.messages++;
    this.stats.lastMessageAt = Date.now();
    this.unreported.messages++;
    const text = Array.isArray(data) ? Buffer.concat(data).toString('utf8') : data.toString('utf8');
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      this.event({ kind: 'malformed', detail: 'not JSON', raw: text });
      return undefined;
    }
    const result = mapper.map(message, receivedNs);
    for (const e of result.events)
      this.event(e.kind === 'malformed' && e.raw === undefined ? { ...e, raw: text } : e);
    if (result.fatal !== undefined) this.fatal = result.fatal;
    if (result.ticks.length > 0) {
      const u = this.unreported;
      for (const t of result.ticks) {
        if (t.type === 'trade') u.trades++;
        else u.quotes++;
        if (!t.venue.endsWith(RX_MARK)) this.lag.observe(Number(receivedNs - t.ts) / 1e9);
        this.queue.push(t);
      }
      this.stats.ticks += result.ticks.length;
      if (this.queue.length >= s.maxBufferedTicks && !this.paused) {
        this.paused = true;
        this.ws?.pause();
      }
      this.notify();
    }
    return result.send;
  }

  private resume(): void {
    if (this.queue.length >= this.o.settings.maxBufferedTicks / 2) return;
    this.paused = false;
    this.ws?.resume();
  }

  private event(e: FeedEvent): void {
    const venue = this.o.mapper.venue;
    const max = this.o.settings.maxRawBytes;
    const raw = e.raw !== undefined && e.raw.length > max ? `${e.raw.slice(0, max)}…` : e.raw;
    const bounded: FeedEvent = raw === undefined ? e : { ...e, raw };
    switch (e.kind) {
      case 'gap':
        this.stats.gaps++;
        this.metrics.gaps.inc({ venue });
        this.o.log.warn({ symbol: e.symbol, detail: e.detail }, 'feed sequence gap');
        break;
      case 'malformed':
        this.stats.malformed++;
        this.metrics.malformed.inc({ venue });
        this.o.log.warn({ detail: e.detail }, 'malformed feed message kept in the feed events');
        break;
      case 'duplicate':
        this.stats.duplicates++;
        this.metrics.duplicates.inc({ venue });
        return; // expected after a reconnect: counted, not reported one by one
      case 'error':
        this.stats.errors++;
        this.o.log.error({ detail: e.detail }, 'the venue reported an error');
        break;
      case 'subscribed':
        this.o.log.info({ detail: e.detail }, 'feed subscribed');
        return;
    }
    this.o.onEvent?.(bounded);
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
