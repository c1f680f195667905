import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

/**
 * Tests run the TypeScript sources through tsx (a devDependency), never a compiled dist/ that may be stale or
 * absent: what is tested is what is checked out. (The installed command, bin/tickstream.js, runs dist/.)
 */
const MAIN = join(import.meta.dirname, '..', '..', 'cli', 'main.ts');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the real CLI as a child process with the given environment (added to a minimal one). */
export function runCli(args: string[], env: Record<string, string>, timeoutMs = 60_000): Promise<CliResult> {
  return finished(startCli(args, env), timeoutMs);
}

/** Every CLI process this test file started that has not exited yet (each file runs in its own worker). */
const running = new Set<ChildProcess>();

export function startCli(
  args: string[],
  env: Record<string, string>,
): ChildProcess & { out: { stdout: string; stderr: string } } {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  }) as ChildProcess & { out: { stdout: string; stderr: string } };
  running.add(child);
  child.once('exit', () => running.delete(child));
  child.out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => (child.out.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (child.out.stderr += d.toString()));
  return child;
}

export function finished(
  child: ChildProcess & { out: { stdout: string; stderr: string } },
  timeoutMs = 60_000,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`CLI did not finish within ${timeoutMs} ms; stderr: ${child.out.stderr}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      // Let the pipes drain.
      setImmediate(() => resolve({ code, signal, stdout: child.out.stdout, stderr: child.out.stderr }));
    });
  });
}

/** SIGKILL a child that is still running and wait until it is gone; nothing once it has exited. */
export async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

/**
 * Kill every CLI process of this file still running (startCli and runCli alike) and wait for their exit: for
 * afterEach, so that a failed or timed-out test leaves no process behind writing to its keys.
 */
export async function stopChildren(): Promise<void> {
  await Promise.all([...running].map(killChild));
}
