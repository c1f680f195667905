import { sleep } from '../../shared/lifecycle.ts';
import type { Tick } from '../../shared/model.ts';

/**
 * Release ticks at their original pace: a tick with exchange time `ts` is let through `(ts - ts₀) / speed`
 * after the first one. Ticks that are late (or go back in time) pass at once.
 */
export interface PaceOptions {
  /** 1 = the original pace, 10 = ten times faster. */
  speed: number;
  signal?: AbortSignal;
  /** Milliseconds, monotonic; injectable for tests together with `wait`. */
  clock?: () => number;
  wait?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export async function* paced(
  batches: AsyncIterable<readonly Tick[]>,
  o: PaceOptions,
): AsyncGenerator<readonly Tick[]> {
  const { speed, signal } = o;
  const clock = o.clock ?? (() => performance.now());
  const wait = o.wait ?? sleep;
  let originTs: bigint | undefined;
  let originWall = 0;
  const nsPerWallMs = 1e6 * speed;
  for await (const batch of batches) {
    let start = 0;
    for (let i = 0; i < batch.length; i++) {
      const t = batch[i]!;
      if (originTs === undefined) {
        originTs = t.ts;
        originWall = clock();
      }
      const ahead = originWall + Number(t.ts - originTs) / nsPerWallMs - clock();
      if (ahead >= 1) {
        if (i > start) yield batch.slice(start, i);
        start = i;
        await wait(ahead, signal);
        if (signal?.aborted === true) return;
      }
    }
    if (start < batch.length) yield start === 0 ? batch : batch.slice(start);
  }
}
