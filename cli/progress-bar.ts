import { Presets, SingleBar } from 'cli-progress';
import type { Logger } from '../shared/logger.ts';
import { RateLine } from '../shared/progress.ts';

/**
 * Progress for long jobs (file loads, replays): a bar with rate and ETA on a terminal, the periodic RateLine
 * in logs otherwise (a bar redrawn into a log file or a CI log is noise).
 *
 * `position` is what the ETA is based on (bytes read of the total, or how far through the range), `count`
 * is what the rate is reported in (rows, ticks).
 */
export interface JobProgress {
  /** Set the position (absolute) and add to the count. */
  update(position: number, countDelta: number): void;
  stop(): void;
}

export interface JobProgressOptions {
  log: Logger;
  /** What is being counted: "rows", "ticks". */
  unit: string;
  /** Total of `position`; 0 or less when unknown. */
  total: number;
  /** Force or forbid the bar; default: a bar when stderr is a terminal. */
  tty?: boolean;
}

export function startProgress(o: JobProgressOptions): JobProgress {
  const tty = o.tty ?? process.stderr.isTTY === true;
  if (!tty) {
    const line = new RateLine(o.log, o.unit);
    return {
      update: (_position, delta) => line.add(delta),
      stop: () => void line.done(),
    };
  }
  const started = Date.now();
  let count = 0;
  const total = Math.max(1, o.total);
  const bar = new SingleBar(
    {
      format: `{bar} {percentage}% | {count} ${o.unit} | {rate} ${o.unit}/s | ETA {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      fps: 5,
      etaBuffer: 50,
      barsize: 30,
    },
    Presets.shades_classic,
  );
  bar.start(total, 0, { count: '0', rate: '0' });
  return {
    update(position, delta) {
      count += delta;
      const seconds = Math.max((Date.now() - started) / 1000, 1e-3);
      bar.update(Math.min(position, total), {
        count: count.toLocaleString('en-US'),
        rate: Math.round(count / seconds).toLocaleString('en-US'),
      });
    },
    stop() {
      bar.stop();
    },
  };
}
