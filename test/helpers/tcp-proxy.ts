import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP forwarder to a real server, to make a store appear, vanish and come back on a port of its own
 * without touching the shared server: `listen()` brings it up, `close()` refuses new connections and cuts
 * the open ones (what a stopped server looks like to a client), `stall()` cuts the open ones and accepts new
 * ones that never get an answer (a hung server, or packets dropped on the way).
 */
export class TcpProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private stalled = false;

  constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  /** A proxy on a free port, not yet listening. */
  static async onFreePort(target: { host: string; port: number }): Promise<TcpProxy> {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const addr = probe.address();
        probe.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
      });
    });
    return new TcpProxy(port, target);
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  async listen(): Promise<void> {
    if (this.server !== undefined) return;
    const server = createServer((client) => {
      if (this.stalled) {
        this.sockets.add(client);
        client.on('close', () => this.sockets.delete(client));
        client.on('error', () => undefined);
        return;
      }
      const upstream = connect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  /** Cut open connections; new ones are accepted and never answered (until close()). */
  stall(): void {
    this.stalled = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.stalled = false;
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
