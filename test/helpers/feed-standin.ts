import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import type { FeedSettings } from '../../producers/feeds/source.ts';

/** Documented messages of a venue (test/fixtures/feeds/<venue>.json), by name. */
export function feedFixture(venue: string): Record<string, Record<string, unknown>> {
  return JSON.parse(
    readFileSync(join(import.meta.dirname, '..', 'fixtures', 'feeds', `${venue}.json`), 'utf8'),
  ) as Record<string, Record<string, unknown>>;
}

/** Feed settings for tests against a stand-in on loopback: no pacing, quick reconnects, small buffers. */
export const fastFeedSettings: FeedSettings = {
  staleMs: 2000,
  connectTimeoutMs: 2000,
  reconnectBaseMs: 20,
  reconnectMaxMs: 100,
  minConnectIntervalMs: 0,
  minSendIntervalMs: 0,
  maxBufferedTicks: 1000,
  maxRawBytes: 64,
};

/**
 * A stand-in for a venue's WebSocket server (named as one: it is not the venue). It speaks whatever the test
 * scripts through `onMessage`/`onConnection`: answering subscriptions, replaying documented messages
 * (test/fixtures/feeds), dropping connections, going silent. `autoPong: false` makes it stop answering pings,
 * like a server whose process hangs with the socket still open.
 */
export interface StandInOptions {
  autoPong?: boolean;
  /** Called for each new connection, with its index (0 for the first). */
  onConnection?: (peer: WebSocket, index: number, url: string) => void;
  /** Called for each text message a client sends. */
  onMessage?: (peer: WebSocket, message: unknown, index: number) => void;
}

export class FeedStandIn {
  readonly received: unknown[][] = [];
  readonly urls: string[] = [];
  readonly peers: WebSocket[] = [];
  private constructor(
    private readonly server: WebSocketServer,
    readonly url: string,
  ) {}

  static async start(o: StandInOptions = {}): Promise<FeedStandIn> {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong: o.autoPong ?? true });
    await new Promise<void>((resolve) => server.once('listening', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('the stand-in is not on TCP');
    const standIn = new FeedStandIn(server, `ws://127.0.0.1:${address.port}`);
    server.on('connection', (peer, req) => {
      const index = standIn.peers.length;
      standIn.peers.push(peer);
      standIn.received.push([]);
      standIn.urls.push(req.url ?? '');
      peer.on('message', (data) => {
        const text = (data as Buffer).toString('utf8');
        const message = JSON.parse(text) as unknown;
        standIn.received[index]!.push(message);
        o.onMessage?.(peer, message, index);
      });
      o.onConnection?.(peer, index, req.url ?? '');
    });
    return standIn;
  }

  get connections(): number {
    return this.peers.length;
  }

  /** Send to the newest connection. */
  send(message: unknown): void {
    const peer = this.peers.at(-1);
    if (peer === undefined) throw new Error('no client connected to the stand-in');
    peer.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  /** Drop every connection without a close handshake (a network failure). */
  dropAll(): void {
    for (const p of this.peers) p.terminate();
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
