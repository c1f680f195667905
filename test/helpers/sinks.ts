import type { Sink } from '../../consumers/sink.ts';
import { SinkError } from '../../shared/errors.ts';
import { tickKey, type Tick } from '../../shared/model.ts';

/**
 * A sink that keeps what was flushed in memory, keyed by tick identity like a real idempotent store, and can
 * be told to fail: `failRetriable` times with a retriable error, to reject ticks matching `poison` (a
 * non-retriable error), to `hang` in flush (a process that stops mid-batch), or to store part of a batch
 * and then fail (`partialThenFail`).
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
  /** True while a flush is in progress (for tests that act during one). */
  flushing = false;
  /**
   * Store this many ticks of the next flush, then fail it retriably (a store that commits part of a request
   * before the connection drops): the worker must write the whole batch again and the store dedups it.
   */
  partialThenFail: number | undefined;
  private staged: Tick[] = [];

  async start(): Promise<void> {}

  async write(ticks: readonly Tick[]): Promise<void> {
    this.staged.push(...ticks);
  }

  async flush(): Promise<void> {
    this.flushing = true;
    try {
      await this.flushStaged();
    } finally {
      this.flushing = false;
    }
  }

  private async flushStaged(): Promise<void> {
    const batch = this.staged;
    this.staged = [];
    if (this.hang) await new Promise(() => undefined);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.partialThenFail !== undefined) {
      const n = this.partialThenFail;
      this.partialThenFail = undefined;
      for (const t of batch.slice(0, n)) {
        this.stored.set(tickKey(t), t);
        this.writes++;
      }
      throw new SinkError(`connection lost after ${n} ticks (test)`, { retriable: true });
    }
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
