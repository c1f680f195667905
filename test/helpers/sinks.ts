import type { Sink } from '../../consumers/sink.ts';
import { SinkError } from '../../shared/errors.ts';
import { tickKey, type Tick } from '../../shared/model.ts';

/**
 * A sink that keeps what was flushed in memory, keyed by tick identity like a real idempotent store, and can
 * be told to fail: `failRetriable` times with a retriable error, to reject ticks matching `poison` (a
 * non-retriable error), or to `hang` in flush (a process that stops mid-batch).
 */
export class RecordingSink implements Sink {
  readonly name = 'recording';
  readonly stored = new Map<string, Tick>();
  /** Every tick ever flushed, duplicates included: shows redelivery. */
  writes = 0;
  flushes = 0;
  failRetriable = 0;
  poison: ((t: Tick) => boolean) | undefined;
  hang = false;
  /** Milliseconds each flush takes (a slow store). */
  delayMs = 0;
  closed = false;
  private staged: Tick[] = [];

  async start(): Promise<void> {}

  async write(ticks: readonly Tick[]): Promise<void> {
    this.staged.push(...ticks);
  }

  async flush(): Promise<void> {
    const batch = this.staged;
    this.staged = [];
    if (this.hang) await new Promise(() => undefined);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failRetriable > 0) {
      this.failRetriable--;
      throw new SinkError('store unavailable (test)', { retriable: true });
    }
    const bad = this.poison === undefined ? undefined : batch.find(this.poison);
    if (bad !== undefined)
      throw new SinkError(`store rejects ${bad.symbol} seq ${bad.seq} (test)`, { retriable: false });
    for (const t of batch) {
      this.stored.set(tickKey(t), t);
      this.writes++;
    }
    this.flushes++;
  }

  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
  }
}
