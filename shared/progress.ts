import type { Logger } from './logger.ts';

/**
 * A periodic rate line for long jobs: every `everyMs` it logs the count, the rate since the last line and,
 * when the total is known, percent done and ETA. `done()` logs the summary line.
 */
export class RateLine {
  private count = 0;
  private lastCount = 0;
  private lastAt: number;
  private readonly startedAt: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly log: Logger,
    private readonly what: string,
    private readonly total?: number,
    everyMs = 1000,
  ) {
    this.startedAt = this.lastAt = Date.now();
    this.timer = setInterval(() => this.line(), everyMs);
    this.timer.unref();
  }

  add(n: number): void {
    this.count += n;
  }

  get value(): number {
    return this.count;
  }

  private line(): void {
    const now = Date.now();
    const rate = Math.round(((this.count - this.lastCount) * 1000) / Math.max(1, now - this.lastAt));
    this.lastCount = this.count;
    this.lastAt = now;
    const fields: Record<string, unknown> = { [this.what]: this.count, perSecond: rate };
    if (this.total !== undefined && this.total > 0) {
      fields.percent = Math.round((this.count * 1000) / this.total) / 10;
      if (rate > 0) fields.etaSeconds = Math.round((this.total - this.count) / rate);
    }
    this.log.info(fields, 'progress');
  }

  /** Stop the timer and return a summary {count, seconds, perSecond}. */
  done(): { count: number; seconds: number; perSecond: number } {
    clearInterval(this.timer);
    const seconds = (Date.now() - this.startedAt) / 1000;
    return { count: this.count, seconds, perSecond: Math.round(this.count / Math.max(seconds, 1e-3)) };
  }
}
