import type { WebSocket } from 'ws';
import { z } from 'zod';
import type { Logger } from '../../shared/logger.ts';
import { counter, gauge } from '../metrics.ts';

/**
 * Live push to WebSocket clients (GET /v1/stream). A client subscribes to topics, `quotes:<SYMBOL>`,
 * `bars:<SYMBOL>:<tf>`, `indicators:<SYMBOL>:<tf>`; the pub/sub subscriber publishes each update once and the
 * hub fans it out.
 *
 * One slow client never delays the others and never makes the server buffer without bound: while a client's
 * socket holds more than `highWaterBytes` unsent, its updates are conflated, one pending message per topic
 * (symbol and kind) with the newest value replacing the older, and sent when the socket drains. A client
 * backed up for longer than `stuckMs` is disconnected (1008). Heartbeats: a ws ping every `heartbeatMs` (a
 * client that missed the previous pong is terminated) and a JSON heartbeat a browser can see.
 */
export interface HubSettings {
  highWaterBytes: number;
  stuckMs: number;
  heartbeatMs: number;
  maxSubscriptions: number;
  timeframes: readonly string[];
  /** Fired on subscribe, to send the current values of the new topics first. */
  snapshot?: (topics: readonly Topic[]) => Promise<{ topic: string; payload: string }[]>;
}

export type Channel = 'quotes' | 'bars' | 'indicators';
export interface Topic {
  channel: Channel;
  symbol: string;
  tf?: string | undefined;
  key: string;
}

const SYMBOL = /^[A-Za-z0-9._:/^=-]{1,64}$/;

const RequestSchema = z.object({
  op: z.enum(['subscribe', 'unsubscribe', 'ping']),
  channel: z.enum(['quotes', 'bars', 'indicators']).optional(),
  symbols: z
    .array(z.string().regex(SYMBOL, 'symbols: letters, digits and ._:/^=- only, 1 to 64'))
    .max(1000)
    .optional(),
  tf: z.string().optional(),
});

export function topicKey(channel: Channel, symbol: string, tf?: string): string {
  return channel === 'quotes' ? `quotes:${symbol}` : `${channel}:${symbol}:${tf ?? ''}`;
}

interface Client {
  ws: WebSocket;
  topics: Set<string>;
  pending: Map<string, string>;
  backedUpSince: number | undefined;
  alive: boolean;
}

/** Updates sent by every Hub of the process: a plain number per send, read when scraped. */
let sentCount = 0;
counter('tickstream_api_stream_messages_total', 'stream messages sent to clients', [], function collect() {
  this.reset();
  this.inc(sentCount);
});
/** Clients a heartbeat handles per event-loop turn. */
const BEAT_SLICE = 50;
const conflated = counter(
  'tickstream_api_stream_conflated_total',
  'stream updates replaced by a newer one while a client was backed up',
  [],
);
const dropped = counter('tickstream_api_stream_disconnects_total', 'stream clients disconnected, by reason', [
  'reason',
]);
const clientsGauge = gauge('tickstream_api_stream_clients', 'connected stream clients', []);

export class Hub {
  private readonly clients = new Set<Client>();
  private readonly byTopic = new Map<string, Set<Client>>();
  private readonly backedUp = new Set<Client>();
  private drainTimer: NodeJS.Timeout | undefined;
  private readonly heartbeat: NodeJS.Timeout;
  private closed = false;
  readonly stats = { sent: 0, conflated: 0, slowDisconnects: 0, heartbeatDisconnects: 0 };

  constructor(
    private readonly s: HubSettings,
    private readonly log: Logger,
  ) {
    this.heartbeat = setInterval(() => this.beat(), s.heartbeatMs);
    this.heartbeat.unref();
  }

  get size(): number {
    return this.clients.size;
  }

  add(ws: WebSocket): void {
    if (this.closed) {
      ws.close(1001, 'server shutting down');
      return;
    }
    const c: Client = { ws, topics: new Set(), pending: new Map(), backedUpSince: undefined, alive: true };
    this.clients.add(c);
    clientsGauge.set(this.clients.size);
    ws.on('pong', () => (c.alive = true));
    ws.on('message', (data, isBinary) => {
      if (isBinary) return this.error(c, 'bad_request', 'messages are JSON text');
      void this.onRequest(c, data.toString());
    });
    ws.on('close', () => this.remove(c));
    ws.on('error', () => this.remove(c));
    this.direct(
      c,
      JSON.stringify({
        type: 'hello',
        channels: ['quotes', 'bars', 'indicators'],
        timeframes: this.s.timeframes,
      }),
    );
  }

  /** Fan an update out to the clients subscribed to its topic. */
  publish(topic: string, payload: string): void {
    const subs = this.byTopic.get(topic);
    if (subs === undefined) return;
    for (const c of subs) this.deliver(c, topic, payload);
  }

  /** Close every client with 1001 and stop the timers. */
  close(): void {
    this.closed = true;
    clearInterval(this.heartbeat);
    if (this.drainTimer !== undefined) clearInterval(this.drainTimer);
    for (const c of this.clients) c.ws.close(1001, 'server shutting down');
  }

  private async onRequest(c: Client, text: string): Promise<void> {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      return this.error(c, 'bad_request', 'message is not JSON');
    }
    const parsed = RequestSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      return this.error(c, 'bad_request', `${issue.path.join('.') || 'message'}: ${issue.message}`);
    }
    const req = parsed.data;
    if (req.op === 'ping') return this.direct(c, JSON.stringify({ type: 'pong', ts: Date.now() }));
    if (req.channel === undefined)
      return this.error(c, 'bad_request', 'channel: required (quotes, bars or indicators)');
    if (req.symbols === undefined || req.symbols.length === 0)
      return this.error(c, 'bad_request', 'symbols: required');
    if (req.channel !== 'quotes' && (req.tf === undefined || !this.s.timeframes.includes(req.tf)))
      return this.error(
        c,
        'bad_request',
        `tf: required for ${req.channel}, one of ${this.s.timeframes.join(', ')}`,
      );
    const topics: Topic[] = req.symbols.map((symbol) => {
      const tf = req.channel === 'quotes' ? undefined : req.tf;
      return { channel: req.channel!, symbol, tf, key: topicKey(req.channel!, symbol, tf) };
    });
    if (req.op === 'unsubscribe') {
      for (const t of topics) this.unsubscribe(c, t.key);
      return this.direct(
        c,
        JSON.stringify({ type: 'unsubscribed', channel: req.channel, symbols: req.symbols, tf: req.tf }),
      );
    }
    const fresh = topics.filter((t) => !c.topics.has(t.key));
    if (c.topics.size + fresh.length > this.s.maxSubscriptions)
      return this.error(
        c,
        'too_many_subscriptions',
        `at most ${this.s.maxSubscriptions} subscriptions per connection`,
      );
    for (const t of fresh) {
      c.topics.add(t.key);
      let set = this.byTopic.get(t.key);
      if (set === undefined) this.byTopic.set(t.key, (set = new Set()));
      set.add(c);
    }
    this.direct(
      c,
      JSON.stringify({ type: 'subscribed', channel: req.channel, symbols: req.symbols, tf: req.tf }),
    );
    if (this.s.snapshot !== undefined && fresh.length > 0) {
      try {
        for (const m of await this.s.snapshot(fresh)) this.deliver(c, m.topic, m.payload);
      } catch (err) {
        this.log.debug({ err }, 'stream snapshot failed');
      }
    }
  }

  private unsubscribe(c: Client, key: string): void {
    c.topics.delete(key);
    c.pending.delete(key);
    const set = this.byTopic.get(key);
    set?.delete(c);
    if (set?.size === 0) this.byTopic.delete(key);
  }

  private deliver(c: Client, topic: string, payload: string): void {
    if (c.pending.size === 0 && c.ws.bufferedAmount <= this.s.highWaterBytes) {
      this.send(c, payload);
      return;
    }
    // Backed up: keep only the newest update per topic until the socket drains.
    if (c.pending.has(topic)) {
      this.stats.conflated++;
      conflated.inc();
      c.pending.delete(topic);
    }
    c.pending.set(topic, payload);
    c.backedUpSince ??= Date.now();
    this.backedUp.add(c);
    this.drainTimer ??= setInterval(() => this.drain(), 20);
  }

  private drain(): void {
    const now = Date.now();
    for (const c of this.backedUp) {
      if (c.ws.bufferedAmount <= this.s.highWaterBytes) {
        const pending = c.pending;
        c.pending = new Map();
        c.backedUpSince = undefined;
        this.backedUp.delete(c);
        for (const payload of pending.values()) this.send(c, payload);
      } else if (now - (c.backedUpSince ?? now) > this.s.stuckMs) {
        this.stats.slowDisconnects++;
        dropped.inc({ reason: 'slow' });
        this.log.info(
          { bufferedBytes: c.ws.bufferedAmount, stuckMs: this.s.stuckMs },
          'disconnecting a stuck stream client',
        );
        c.ws.close(1008, 'client too slow');
        // A client that is not reading will not complete the close handshake either.
        setTimeout(() => c.ws.terminate(), 1000).unref();
        this.remove(c);
      }
    }
    if (this.backedUp.size === 0 && this.drainTimer !== undefined) {
      clearInterval(this.drainTimer);
      this.drainTimer = undefined;
    }
  }

  /**
   * Ping every client and send the JSON heartbeat, a slice of clients per event-loop turn: one synchronous pass
   * over 1,000 clients (two writes each) held every pushed update back behind it for tens of milliseconds.
   */
  private beat(): void {
    const payload = JSON.stringify({ type: 'heartbeat', ts: Date.now() });
    const clients = [...this.clients];
    const slice = (from: number) => {
      if (this.closed) return;
      for (let i = from; i < Math.min(from + BEAT_SLICE, clients.length); i++)
        this.beatOne(clients[i]!, payload);
      if (from + BEAT_SLICE < clients.length) setImmediate(slice, from + BEAT_SLICE);
    };
    slice(0);
  }

  private beatOne(c: Client, payload: string): void {
    // Gone since the beat started.
    if (!this.clients.has(c)) return;
    if (!c.alive) {
      this.stats.heartbeatDisconnects++;
      dropped.inc({ reason: 'heartbeat' });
      c.ws.terminate();
      this.remove(c);
      return;
    }
    c.alive = false;
    c.ws.ping();
    if (c.pending.size === 0) this.direct(c, payload);
  }

  private send(c: Client, payload: string): void {
    this.stats.sent++;
    sentCount++;
    c.ws.send(payload);
  }

  /** Control messages bypass conflation (they are few and small). */
  private direct(c: Client, payload: string): void {
    if (c.ws.readyState === c.ws.OPEN) c.ws.send(payload);
  }

  private error(c: Client, code: string, message: string): void {
    this.direct(c, JSON.stringify({ type: 'error', code, message }));
  }

  private remove(c: Client): void {
    if (!this.clients.delete(c)) return;
    for (const key of [...c.topics]) this.unsubscribe(c, key);
    this.backedUp.delete(c);
    clientsGauge.set(this.clients.size);
  }
}
