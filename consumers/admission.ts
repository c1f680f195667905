import type { Tick } from '../shared/model.ts';

/**
 * Checks at the stream boundary that do not belong to the message model because they depend on the
 * receiving side: its clock, and how much one batch may hold in memory.
 */

const NS_PER_MS = 1_000_000n;

/**
 * Why a tick is too far in the future to accept, or undefined. A tick stamped ahead of the receiving clock by
 * more than `maxFutureMs` (TICKSTREAM_MAX_FUTURE_MS) would become a symbol's quote for good (quotes never
 * regress) and move the bars' clock past every real trade, so it is dead-lettered instead. History files are
 * not affected: their times are all in the past.
 */
export function futureReason(tick: Tick, nowNs: bigint, maxFutureMs: number): string | undefined {
  const aheadNs = tick.ts - nowNs;
  if (aheadNs <= BigInt(maxFutureMs) * NS_PER_MS) return undefined;
  const ms = aheadNs / NS_PER_MS;
  return `timestamp ${tick.ts} is ${ms} ms ahead of the receiving clock (max ${maxFutureMs} ms, TICKSTREAM_MAX_FUTURE_MS)`;
}

/** Stream entries as the worker holds them (bytes, as read): only their field values are weighed. */
interface Weighed {
  readonly raw: readonly Uint8Array[];
}

/** Bytes of an entry's field values. */
export function entrySize(e: Weighed): number {
  let n = 0;
  for (let i = 1; i < e.raw.length; i += 2) n += e.raw[i]!.length;
  return n;
}

/**
 * Consecutive runs of entries whose payload stays within `maxBytes` (TICKSTREAM_BATCH_BYTES); an entry larger
 * than that on its own is a run by itself. Bounds what one sink batch decodes and holds, whatever COUNT read.
 */
export function splitByBytes<T extends Weighed>(entries: readonly T[], maxBytes: number): T[][] {
  const out: T[][] = [];
  let run: T[] = [];
  let size = 0;
  for (const e of entries) {
    const s = entrySize(e);
    if (run.length > 0 && size + s > maxBytes) {
      out.push(run);
      run = [];
      size = 0;
    }
    run.push(e);
    size += s;
  }
  if (run.length > 0) out.push(run);
  return out;
}
