/**
 * Offset bookkeeping for the Kafka → Redis bridge, one instance per partition batch. Pure: no I/O.
 *
 * Kafka stores one committed offset per partition, meaning "everything before this is done". The bridge may
 * therefore commit offset o + 1 only when every message it was handed at or below o is durable in Redis
 * (its tick XADDed into a shard stream, or the message dead-lettered). After a partial failure (say the
 * dead letters were written but a tick frame was not) the committable point is the end of the longest
 * fully done prefix; whatever follows it is redelivered after a restart or rebalance, and the tick identity
 * makes the sinks ignore the repeats.
 *
 * Offsets need not be contiguous (compacted topics, transaction markers): only the offsets tracked count.
 */
export class OffsetTracker {
  /** Offsets in the order they were handed over (strictly increasing), and whether each is durable. */
  private readonly offsets: bigint[] = [];
  private readonly done: boolean[] = [];
  /** Index of the first offset not yet done: everything before it is committable. */
  private frontier = 0;
  private committed: bigint | undefined;

  /** Record a message offset as handed over (not yet durable). */
  track(offset: string | bigint): void {
    const o = BigInt(offset);
    const last = this.offsets[this.offsets.length - 1];
    if (last !== undefined && o <= last) {
      throw new RangeError(`offsets must increase: ${o} after ${last}`);
    }
    this.offsets.push(o);
    this.done.push(false);
  }

  /** Mark offsets as durable (XADDed or dead-lettered). Offsets not tracked are an error. */
  markDone(offsets: Iterable<string | bigint>): void {
    for (const offset of offsets) {
      const i = this.indexOf(BigInt(offset));
      if (i < 0) throw new RangeError(`offset ${offset} was not tracked`);
      this.done[i] = true;
    }
    while (this.frontier < this.done.length && this.done[this.frontier] === true) this.frontier++;
  }

  /** The highest offset such that it and every tracked offset below it are done; undefined if none is. */
  committable(): bigint | undefined {
    return this.frontier === 0 ? undefined : this.offsets[this.frontier - 1];
  }

  /**
   * The offset to send to Kafka (committable + 1, "the next message to read"), or undefined when there is
   * nothing new to commit since `markCommitted`.
   */
  toCommit(): string | undefined {
    const c = this.committable();
    if (c === undefined || (this.committed !== undefined && c <= this.committed)) return undefined;
    return (c + 1n).toString();
  }

  /** Record that Kafka acknowledged the commit of everything up to `offset` (the committable offset). */
  markCommitted(offset: string | bigint): void {
    this.committed = BigInt(offset);
  }

  /** Tracked offsets not yet done, in order. */
  pending(): bigint[] {
    const out: bigint[] = [];
    for (let i = this.frontier; i < this.offsets.length; i++)
      if (this.done[i] !== true) out.push(this.offsets[i]!);
    return out;
  }

  get size(): number {
    return this.offsets.length;
  }

  private indexOf(o: bigint): number {
    // Offsets are sorted: binary search.
    let lo = 0;
    let hi = this.offsets.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = this.offsets[mid]!;
      if (v === o) return mid;
      if (v < o) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
}

/** The same rule as a function over outcomes, for one-off checks: undefined when the first is not done. */
export function committableOffset(
  outcomes: readonly { offset: string | bigint; done: boolean }[],
): bigint | undefined {
  let last: bigint | undefined;
  for (const o of outcomes) {
    if (!o.done) break;
    last = BigInt(o.offset);
  }
  return last;
}
