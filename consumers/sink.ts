import { SinkError } from '../shared/errors.ts';
import type { Tick } from '../shared/model.ts';

/**
 * The Sink port: where a consumer group's ticks end up. One file per adapter under consumers/sinks/; only the
 * adapter imports its driver.
 *
 * Contract (the group worker relies on every point):
 * - `start()` prepares the store (tables, scripts) and is idempotent; it is called once before any write.
 * - `write(ticks)` stages a batch. It may buffer; nothing counts as stored until `flush()` resolves.
 * - `flush()` makes everything written since the last flush durable. Only after it resolves does the worker
 *   acknowledge the stream entries, so a crash before that point redelivers the batch.
 * - Idempotency lives in the store: writing a tick that is already stored (same source, symbol, ts, seq)
 *   must store nothing new. Redelivery and replay depend on it.
 * - On failure, throw a SinkError (or anything: unknown errors count as retriable) and discard whatever was
 *   staged, so the worker can write the same batch again. Retriable: the worker backs off and retries, the
 *   entries stay pending. Not retriable: the worker splits the batch to find the ticks at fault and
 *   dead-letters them. A sink that already knows which ticks the store refused, having durably written the
 *   rest, throws RejectedTicksError instead.
 * - `close()` flushes what is staged, then releases the sink's connections. It is idempotent and must not
 *   close connections the sink did not open.
 */
export interface Sink {
  readonly name: string;
  start(): Promise<void>;
  write(ticks: readonly Tick[]): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface Rejection {
  /** Index into the ticks written since the last successful flush. */
  readonly index: number;
  readonly reason: string;
}

/** The store durably wrote every tick of the batch except these, which it will never accept. */
export class RejectedTicksError extends SinkError {
  override name = 'RejectedTicksError';
  readonly rejections: readonly Rejection[];
  constructor(rejections: readonly Rejection[], cause?: unknown) {
    super(`${rejections.length} tick(s) rejected by the store: ${rejections[0]?.reason ?? ''}`, {
      retriable: false,
      cause,
    });
    this.rejections = rejections;
  }
}
