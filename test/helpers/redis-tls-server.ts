import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './cluster.ts';

/**
 * A private redis-server (password or TLS) on a free loopback port, for the tests that need a server configured otherwise than
 * the shared one (a password, TLS only) or that must be able to stop it. Started from the machine's
 * redis-server binary; `stop()` kills it and removes its directory.
 */
export interface PrivateRedis {
  port: number;
  host: string;
  dir: string;
  /** With TLS: the files the test made with openssl (a private CA, the server's and a client's certificate). */
  tls?: { ca: string; clientCert: string; clientKey: string; otherCa: string };
  cli(...args: string[]): string;
  stop(): void;
}

export interface PrivateRedisOptions {
  password?: string;
  /** TLS only (no plain port); `clientAuth` makes the server require a client certificate. */
  tls?: { clientAuth: boolean };
}

export function opensslAvailable(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export async function startPrivateRedis(options: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'tickstream-redis-'));
  const port = await freePort();
  const args = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--databases', '16'];
  let tls: PrivateRedis['tls'];
  if (options.tls !== undefined) {
    tls = makeCertificates(dir);
    args.push(
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cert-file',
      join(dir, 'server.crt'),
      '--tls-key-file',
      join(dir, 'server.key'),
      '--tls-ca-cert-file',
      tls.ca,
      '--tls-auth-clients',
      options.tls.clientAuth ? 'yes' : 'no',
    );
  } else {
    args.push('--port', String(port));
  }
  if (options.password !== undefined) args.push('--requirepass', options.password);
  const proc: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
  const cliArgs = [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    ...(options.password === undefined ? [] : ['-a', options.password, '--no-auth-warning']),
    ...(tls === undefined
      ? []
      : ['--tls', '--cacert', tls.ca, '--cert', tls.clientCert, '--key', tls.clientKey]),
  ];
  const cli = (...a: string[]) => execFileSync('redis-cli', [...cliArgs, ...a], { encoding: 'utf8' }).trim();
  const stop = () => {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      if (cli('ping') === 'PONG') break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      stop();
      throw new Error(`private redis-server on ${port} did not start`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, host: '127.0.0.1', dir, ...(tls === undefined ? {} : { tls }), cli, stop };
}

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by it; and an unrelated CA. */
function makeCertificates(dir: string): NonNullable<PrivateRedis['tls']> {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  const ca = (name: string) =>
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
    );
  const signed = (name: string, ext: string) => {
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${name}`,
    );
    writeFileSync(join(dir, `${name}.ext`), ext);
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    );
  };
  ca('ca');
  ca('other-ca');
  signed('server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  signed('client', 'extendedKeyUsage=clientAuth\n');
  return {
    ca: join(dir, 'ca.crt'),
    otherCa: join(dir, 'other-ca.crt'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
  };
}
