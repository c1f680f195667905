import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A private redis-server on a free loopback port, for tests that kill and restart Redis (the shared server is
 * never touched). With `appendonly` it keeps an AOF in its own directory, so a restart reloads it as a
 * production server would. `kill()` is kill -9; `start()` starts it again on the same port and directory.
 */
export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  start(): Promise<void>;
  kill(): Promise<void>;
  /** SHUTDOWN NOSAVE (the AOF is flushed and fsynced, no RDB written), then start again: a plain restart. */
  restart(): Promise<void>;
  /** Kill and remove its directory (afterEach / finally). */
  stop(): Promise<void>;
}

export function redisServerAvailable(): boolean {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
    execFileSync('redis-cli', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export async function startPrivateRedis(options: { appendonly?: boolean } = {}): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'tickstream-redis-'));
  const port = await freePort();
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        options.appendonly === true ? 'yes' : 'no',
        '--appendfsync',
        'everysec',
        '--dir',
        dir,
      ],
      { stdio: 'ignore' },
    );
    const deadline = Date.now() + 20_000;
    while (!ping(port)) {
      if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not start`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async () => {
    const p = proc;
    proc = undefined;
    if (p === undefined || p.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve());
      p.kill('SIGKILL');
    });
  };
  const restart = async () => {
    const p = proc;
    if (p !== undefined && p.exitCode === null) {
      const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
      try {
        execFileSync('redis-cli', ['-p', String(port), 'SHUTDOWN', 'NOSAVE'], { stdio: 'ignore' });
      } catch {
        // redis-cli reports the dropped connection of a successful SHUTDOWN as an error
      }
      await exited;
    }
    proc = undefined;
    await start();
  };
  const server: PrivateRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    kill,
    restart,
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await start();
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

function ping(port: number): boolean {
  try {
    return execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).trim() === 'PONG';
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
}
