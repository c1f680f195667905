import type { Tick } from '../shared/model.ts';

/**
 * The Source port: where ticks come from before they reach the streams (synthetic market, history files,
 * the archive for replay, a Kafka topic). One file per adapter.
 *
 * Contract:
 * - `batches()` yields ticks in the order the source holds them; per symbol that order must be time order
 *   when the source has one. A batch is non-empty. Iteration may be stopped early (`break`), after which
 *   `close()` must still release everything.
 * - Input the source cannot turn into a valid Tick is not yielded: it is reported through the source's own
 *   error channel (a rejects count, a dead letter) with a reason that names where it was, and iteration goes on.
 * - `close()` releases files, cursors and connections the source opened. It is idempotent.
 */
export interface TickSource {
  readonly name: string;
  batches(): AsyncIterable<readonly Tick[]>;
  close(): Promise<void>;
}
