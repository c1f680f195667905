import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A throwaway three-master Redis Cluster on loopback, started from the machine's redis-server binary, for
 * the tests of the Cluster code paths. `available()` says whether the binaries are there.
 */
export function clusterBinariesAvailable(): boolean {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
    execFileSync('redis-cli', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

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

export interface LocalCluster {
  nodes: string[];
  stop(): Promise<void>;
}

/** With `password`, every node requires it (requirepass) and uses it towards the others (masterauth). */
export async function startLocalCluster(options: { password?: string } = {}): Promise<LocalCluster> {
  const auth = options.password === undefined ? [] : ['-a', options.password, '--no-auth-warning'];
  const dir = mkdtempSync(join(tmpdir(), 'tickstream-cluster-'));
  const ports: number[] = [];
  // Cluster bus ports are port + 10000: pick ports whose bus port is below 65536.
  while (ports.length < 3) {
    const p = await freePort();
    if (p < 55_000 && !ports.includes(p)) ports.push(p);
  }
  const procs: ChildProcess[] = ports.map((port) =>
    spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        ...(options.password === undefined
          ? []
          : ['--requirepass', options.password, '--masterauth', options.password]),
      ],
      { stdio: 'ignore' },
    ),
  );
  const stop = async () => {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) await waitFor(() => ping(port, auth), `redis-server on ${port}`);
    execFileSync(
      'redis-cli',
      [
        ...auth,
        '--cluster',
        'create',
        ...ports.map((p) => `127.0.0.1:${p}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ],
      { stdio: 'ignore', timeout: 30_000 },
    );
    for (const port of ports) {
      await waitFor(
        () =>
          execFileSync('redis-cli', [...auth, '-p', String(port), 'cluster', 'info'], {
            encoding: 'utf8',
          }).includes('cluster_state:ok'),
        `cluster state ok on ${port}`,
      );
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes: ports.map((p) => `127.0.0.1:${p}`), stop };
}

function ping(port: number, auth: string[] = []): boolean {
  try {
    return (
      execFileSync('redis-cli', [...auth, '-p', String(port), 'ping'], { encoding: 'utf8' }).trim() === 'PONG'
    );
  } catch {
    return false;
  }
}

async function waitFor(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
