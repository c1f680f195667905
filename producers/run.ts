import { sleep } from '../shared/lifecycle.ts';
import type { Tick } from '../shared/model.ts';
import type { Publisher } from './publisher.ts';

/**
 * Drive a tick source into the publisher: as fast as possible, or paced at `rate` ticks/s (a token bucket
 * topped up every few milliseconds), until `count` ticks, `durationMs`, or the abort signal. The deadline
 * also ends a backpressure pause: a run given a duration lasts that long (plus the final flush) even when
 * no consumer drains the streams.
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
  const stops = [o.signal, o.durationMs === undefined ? undefined : AbortSignal.timeout(o.durationMs)].filter(
    (s): s is AbortSignal => s !== undefined,
  );
  const stop = stops.length === 0 ? undefined : AbortSignal.any(stops);
  let sent = 0;
  while (sent < limit && stop?.aborted !== true) {
    const now = performance.now();
    if (now >= deadline) break;
    let n = Math.min(CHUNK, limit - sent);
    if (o.rate !== undefined) {
      const allowed = Math.floor(((now - started) / 1000) * o.rate) - sent;
      if (allowed <= 0) {
        await sleep(PACE_MS, stop);
        continue;
      }
      n = Math.min(n, allowed);
    }
    await o.publisher.publish(o.next(n), stop);
    sent += n;
    o.onTicks?.(n);
    // Let timers (linger, progress line) and socket callbacks run between chunks.
    if (o.rate === undefined) await new Promise<void>((r) => setImmediate(r));
  }
  await o.publisher.flush();
  return { ticks: sent, elapsedMs: performance.now() - started };
}
