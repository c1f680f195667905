import type { Publisher } from '../publisher.ts';
import { paced } from './pacing.ts';
import type { FileSource } from './source.ts';

export interface LoadOptions {
  source: FileSource;
  publisher: Publisher;
  /** Pace at the original timestamps × speed; default: as fast as possible. */
  speed?: number;
  signal?: AbortSignal;
  /** After each batch is handed to the publisher. */
  onBatch?: (ticks: number) => void;
}

export interface LoadSummary {
  files: number;
  rows: number;
  /** Ticks Redis acknowledged. */
  published: number;
  rejected: number;
  byReason: Record<string, number>;
  fileErrors: { file: string; reason: string }[];
  seconds: number;
  rowsPerSecond: number;
  /** Stopped by the signal before the end of the files. */
  stopped: boolean;
}

/**
 * Files → publisher, then flush: when this resolves every tick read is in Redis. Stopping (the signal) ends
 * reading after the current batch; what was read is still flushed. The source is closed in every case.
 */
export async function loadFiles(o: LoadOptions): Promise<LoadSummary> {
  const started = performance.now();
  const publishedBefore = o.publisher.stats.ticks;
  try {
    const batches =
      o.speed === undefined
        ? o.source.batches()
        : paced(o.source.batches(), {
            speed: o.speed,
            ...(o.signal !== undefined ? { signal: o.signal } : {}),
          });
    for await (const batch of batches) {
      await o.publisher.publish(batch);
      o.onBatch?.(batch.length);
      if (o.signal?.aborted === true) break;
    }
    await o.publisher.flush();
  } finally {
    await o.source.close();
  }
  const seconds = (performance.now() - started) / 1000;
  const s = o.source.stats;
  return {
    files: s.files,
    rows: s.rows,
    published: o.publisher.stats.ticks - publishedBefore,
    rejected: s.rejected,
    byReason: Object.fromEntries([...s.byReason].sort((a, b) => b[1] - a[1])),
    fileErrors: s.fileErrors,
    seconds,
    rowsPerSecond: Math.round(s.rows / Math.max(seconds, 1e-3)),
    stopped: o.signal?.aborted === true,
  };
}
