import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Private servers for the fault suite and the tests that must kill, stop or reconfigure a server: a
 * redis-server or a PostgreSQL cluster on a free loopback port, in a temporary directory that `remove()`
 * deletes. Never the shared servers.
 */

export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
}

async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function redisServerVersion(): [number, number, number] | undefined {
  try {
    const out = execFileSync('redis-server', ['--version'], { encoding: 'utf8' });
    const m = /v=(\d+)\.(\d+)\.(\d+)/.exec(out);
    return m === null ? undefined : [Number(m[1]), Number(m[2]), Number(m[3])];
  } catch {
    return undefined;
  }
}

export interface RedisServerOptions {
  /** Extra redis-server arguments, e.g. ['--appendonly', 'yes']. */
  args?: string[];
  /** Reuse a data directory (a restart keeps its AOF); default a fresh temporary one. */
  dir?: string;
  port?: number;
}

/** One redis-server process. `kill()` is kill -9; `start()` starts it again on the same port and directory. */
export class RedisServer {
  readonly port: number;
  readonly dir: string;
  private proc: ChildProcess | undefined;
  private readonly args: string[];
  private readonly ownsDir: boolean;

  private constructor(port: number, dir: string, args: string[], ownsDir: boolean) {
    this.port = port;
    this.dir = dir;
    this.args = args;
    this.ownsDir = ownsDir;
  }

  static async start(options: RedisServerOptions = {}): Promise<RedisServer> {
    const port = options.port ?? (await freePort());
    const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tickstream-redis-'));
    const server = new RedisServer(port, dir, options.args ?? [], options.dir === undefined);
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async start(): Promise<void> {
    const proc = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--dir', this.dir, ...this.args],
      { stdio: 'ignore' },
    );
    this.proc = proc;
    await waitFor(() => {
      if (proc.exitCode !== null) throw new Error('exited');
      return this.cli('PING') === 'PONG';
    }, `redis-server on port ${this.port}`);
  }

  /** redis-cli against this server; the reply as text. */
  cli(...args: string[]): string {
    return execFileSync('redis-cli', ['-p', String(this.port), ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }).trim();
  }

  /** kill -9: no shutdown save, as a crash would leave it. */
  async kill(): Promise<void> {
    const proc = this.proc;
    if (proc === undefined || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGKILL');
    await exited;
    this.proc = undefined;
  }

  async remove(): Promise<void> {
    await this.kill();
    if (this.ownsDir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A primary and `replicas` replicas of it, each its own redis-server. */
export async function startReplicated(
  replicas: number,
  args: string[] = [],
): Promise<{ primary: RedisServer; replicas: RedisServer[]; remove: () => Promise<void> }> {
  const primary = await RedisServer.start({ args });
  const started: RedisServer[] = [];
  const remove = async () => {
    for (const r of started) await r.remove();
    await primary.remove();
  };
  try {
    for (let i = 0; i < replicas; i++) {
      started.push(
        await RedisServer.start({ args: [...args, '--replicaof', '127.0.0.1', String(primary.port)] }),
      );
    }
    await waitFor(
      () => Number(/connected_slaves:(\d+)/.exec(primary.cli('INFO', 'replication'))?.[1] ?? 0) >= replicas,
      'the replicas to connect',
    );
    for (const r of started) {
      await waitFor(
        () => r.cli('INFO', 'replication').includes('master_link_status:up'),
        'replication link up',
      );
    }
  } catch (err) {
    await remove();
    throw err;
  }
  return { primary, replicas: started, remove };
}

export function postgresAvailable(): boolean {
  return existsSync(join(PG_BIN, 'initdb')) && existsSync(join(PG_BIN, 'pg_ctl'));
}

/**
 * PostgreSQL refuses to run as root: as root, its binaries run as the `postgres` account (runuser), in a
 * directory handed over to it.
 */
const AS_ROOT = process.getuid?.() === 0;

function pg(bin: string, args: string[]): void {
  const [cmd, argv] = AS_ROOT
    ? ['runuser', ['-u', 'postgres', '--', join(PG_BIN, bin), ...args]]
    : [join(PG_BIN, bin), args];
  execFileSync(cmd, argv, { stdio: 'ignore' });
}

function handOver(dir: string): void {
  if (!AS_ROOT) return;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  chownSync(dir, uid, gid);
}

/** A PostgreSQL cluster of its own (initdb, trust auth on loopback), stopped and started with pg_ctl. */
export class PostgresServer {
  readonly port: number;
  readonly dir: string;

  private constructor(port: number, dir: string) {
    this.port = port;
    this.dir = dir;
  }

  static async start(): Promise<PostgresServer> {
    const root = mkdtempSync(join(tmpdir(), 'tickstream-pg-'));
    const port = await freePort();
    const server = new PostgresServer(port, root);
    try {
      handOver(root);
      pg('initdb', [
        '-D',
        server.data,
        '-U',
        'postgres',
        '--auth',
        'trust',
        '--no-sync',
        '-E',
        'UTF8',
        '--locale',
        'C',
      ]);
      await server.startServer();
      pg('createdb', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', 'chaos']);
    } catch (err) {
      await server.remove();
      throw err;
    }
    return server;
  }

  private get data(): string {
    return join(this.dir, 'data');
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/chaos`;
  }

  async startServer(): Promise<void> {
    pg('pg_ctl', [
      '-D',
      this.data,
      '-l',
      join(this.dir, 'log'),
      '-w',
      '-o',
      `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60`,
      'start',
    ]);
  }

  /** pg_ctl stop -m immediate: connections drop at once, and recovery runs at the next start. */
  async stopServer(): Promise<void> {
    pg('pg_ctl', ['-D', this.data, '-m', 'immediate', '-w', 'stop']);
  }

  async remove(): Promise<void> {
    try {
      if (existsSync(join(this.data, 'postmaster.pid'))) {
        pg('pg_ctl', ['-D', this.data, '-m', 'immediate', '-w', 'stop']);
      }
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
