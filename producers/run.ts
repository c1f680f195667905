import { sleep } from '../shared/lifecycle.ts';
import type { Tick } from '../shared/model.ts';
import type { Publisher } from './publisher.ts';

/**
 * Drive a tick source into the publisher: as fast as possible, or paced at `rate` ticks/s (a token bucket
 * topped up every few milliseconds), until `count` ticks, `durationMs`, or the abort signal.
 */
export interface DriveOptions {
  next: (n: number) => Tick[];
  publisher: Publisher;
  rate?: number;
  count?: number;
  durationMs?: number;
  signal?: AbortSignal;
  onTicks?: (n: number) => void;
}

const CHUNK = 1024;
const PACE_MS = 5;

export async function drive(o: DriveOptions): Promise<{ ticks: number; elapsedMs: number }> {
  const started = performance.now();
  const deadline = o.durationMs === undefined ? Infinity : started + o.durationMs;
  const limit = o.count ?? Infinity;
  let sent = 0;
  while (sent < limit && o.signal?.aborted !== true) {
    const now = performance.now();
    if (now >= deadline) break;
    let n = Math.min(CHUNK, limit - sent);
    if (o.rate !== undefined) {
      const allowed = Math.floor(((now - started) / 1000) * o.rate) - sent;
      if (allowed <= 0) {
        await sleep(PACE_MS, o.signal);
        continue;
      }
      n = Math.min(n, allowed);
    }
    await o.publisher.publish(o.next(n));
    sent += n;
    o.onTicks?.(n);
    // Let timers (linger, progress line) and socket callbacks run between chunks.
    if (o.rate === undefined) await new Promise<void>((r) => setImmediate(r));
  }
  await o.publisher.flush();
  return { ticks: sent, elapsedMs: performance.now() - started };
}
