import { jsonNumber, jsonString, type EncodedTicks } from '../../shared/codec.ts';
import type { Quote, Tick, Trade } from '../../shared/model.ts';
import { shardOf } from '../../shared/streams.ts';

/**
 * How a feed worker hands ticks to the main thread (worker.ts → source.ts): in columns of typed arrays, whose
 * buffers are transferred (moved, not copied), and strings (source, symbol, venue) as indexes into a table
 * that both sides grow, the new entries travelling with the chunk that first uses them.
 *
 * Measured for 400k Binance trades, main thread µs per tick: structured-cloned Tick[] (bigint `ts`) plus
 * encoding 3.2; frame rows as strings 0.35–0.42 (but encoding them and cloning a string each cost the worker
 * about a third of its time); these columns, rebuilt into ticks and encoded on the main thread, which had the
 * time to spare: see docs/feeds.md#threads.
 */
export interface TickColumns {
  /** Strings first used by this chunk, appended to the table in order. */
  readonly newStrings: string[];
  /** Per tick: 0 trade side '', 1 trade buy, 2 trade sell, 3 quote. */
  readonly kinds: Uint8Array;
  /** Per tick: the table indexes of source, symbol and venue. */
  readonly names: Uint32Array;
  readonly ts: BigInt64Array;
  readonly seqs: Float64Array;
  /** Per tick: price, size (trades) or bidPrice, bidSize, askPrice, askSize (quotes). */
  readonly values: Float64Array;
}

const SIDES = ['', 'buy', 'sell'] as const;

/** The worker's side: collects ticks into columns of at most `capacity`. */
export class TickPacker {
  private readonly table = new Map<string, number>();
  private newStrings: string[] = [];
  private kinds: Uint8Array;
  private names: Uint32Array;
  private ts: BigInt64Array;
  private seqs: Float64Array;
  private values: Float64Array;
  count = 0;

  constructor(readonly capacity: number) {
    this.kinds = new Uint8Array(capacity);
    this.names = new Uint32Array(capacity * 3);
    this.ts = new BigInt64Array(capacity);
    this.seqs = new Float64Array(capacity);
    this.values = new Float64Array(capacity * 4);
  }

  /** False when full (take() first). */
  add(t: Tick): boolean {
    const i = this.count;
    if (i === this.capacity) return false;
    this.names[3 * i] = this.index(t.source);
    this.names[3 * i + 1] = this.index(t.symbol);
    this.names[3 * i + 2] = this.index(t.venue);
    this.ts[i] = t.ts;
    this.seqs[i] = t.seq;
    const v = this.values;
    if (t.type === 'trade') {
      this.kinds[i] = t.side === 'buy' ? 1 : t.side === 'sell' ? 2 : 0;
      v[4 * i] = t.price;
      v[4 * i + 1] = t.size;
    } else {
      this.kinds[i] = 3;
      v[4 * i] = t.bidPrice;
      v[4 * i + 1] = t.bidSize;
      v[4 * i + 2] = t.askPrice;
      v[4 * i + 3] = t.askSize;
    }
    this.count = i + 1;
    return true;
  }

  /**
   * The columns collected so far and the buffers to transfer with them; the packer starts a new chunk. A full
   * chunk hands over the packer's own arrays (new ones are made); a partial one hands over copies of just its
   * ticks and keeps the arrays: a chunk waiting on the main thread must hold what its ticks need, not the
   * 61 KiB of a full chunk (a live feed sends a chunk per socket read, often of one tick).
   */
  take(): { columns: TickColumns; transfer: ArrayBuffer[] } {
    const n = this.count;
    const full = n === this.capacity;
    const columns: TickColumns = {
      newStrings: this.newStrings,
      kinds: full ? this.kinds : this.kinds.slice(0, n),
      names: full ? this.names : this.names.slice(0, 3 * n),
      ts: full ? this.ts : this.ts.slice(0, n),
      seqs: full ? this.seqs : this.seqs.slice(0, n),
      values: full ? this.values : this.values.slice(0, 4 * n),
    };
    const transfer = [columns.kinds, columns.names, columns.ts, columns.seqs, columns.values].map(
      (a) => a.buffer as ArrayBuffer,
    );
    if (full) {
      const c = this.capacity;
      this.kinds = new Uint8Array(c);
      this.names = new Uint32Array(c * 3);
      this.ts = new BigInt64Array(c);
      this.seqs = new Float64Array(c);
      this.values = new Float64Array(c * 4);
    }
    this.newStrings = [];
    this.count = 0;
    return { columns, transfer };
  }

  private index(s: string): number {
    let i = this.table.get(s);
    if (i === undefined) {
      i = this.table.size;
      this.table.set(s, i);
      this.newStrings.push(s);
    }
    return i;
  }
}

/** Side (kinds 0–2) as a frame row writes it. */
const SIDE_JSON = ['""', '"buy"', '"sell"'] as const;

/**
 * The main thread's side: the string table, and each chunk, in order, as ticks (`unpack`) or as frame rows
 * (`encode`). Every chunk goes through exactly one of the two, in the order the worker sent them.
 */
export class TickUnpacker {
  private readonly strings: string[] = [];
  /** Per table index: the string's JSON text, and (for the shard count last asked) its shard as a symbol. */
  private readonly json: string[] = [];
  private shardsOf: number[] = [];
  private shardCount = 0;

  /**
   * The chunk's ticks as frame rows, each exactly `encodeTick` of the tick `unpack` would give, appended to
   * `rows`, and their shards for streams of `shardCount` shards at the same indexes of `shards`. No tick objects are built: the
   * strings' JSON text and shards are worked out once per table entry.
   */
  encode(c: TickColumns, shardCount: number, rows: string[], shards: Uint16Array): void {
    this.absorb(c.newStrings);
    if (shardCount !== this.shardCount) {
      this.shardCount = shardCount;
      this.shardsOf = [];
    }
    const json = this.json;
    const { kinds, names, ts, seqs, values: v } = c;
    for (let i = 0; i < kinds.length; i++) {
      const sym = names[3 * i + 1]!;
      const head = `${json[names[3 * i]!]!},${json[sym]!},"${ts[i]!}",${jsonNumber(seqs[i]!)},${json[names[3 * i + 2]!]!}`;
      const kind = kinds[i]!;
      const at = rows.length;
      rows.push(
        kind === 3
          ? `["q",${head},${jsonNumber(v[4 * i]!)},${jsonNumber(v[4 * i + 1]!)},${jsonNumber(v[4 * i + 2]!)},${jsonNumber(v[4 * i + 3]!)}]`
          : `["t",${head},${jsonNumber(v[4 * i]!)},${jsonNumber(v[4 * i + 1]!)},${SIDE_JSON[kind as 0 | 1 | 2]}]`,
      );
      shards[at] = this.shardsOf[sym] ??= shardOf(this.strings[sym]!, shardCount);
    }
  }

  unpack(c: TickColumns): Tick[] {
    this.absorb(c.newStrings);
    const out = new Array<Tick>(c.kinds.length);
    const str = this.strings;
    for (let i = 0; i < out.length; i++) {
      const kind = c.kinds[i]!;
      const source = str[c.names[3 * i]!]!;
      const symbol = str[c.names[3 * i + 1]!]!;
      const venue = str[c.names[3 * i + 2]!]!;
      const ts = c.ts[i]!;
      const seq = c.seqs[i]!;
      const v = c.values;
      if (kind === 3) {
        const q: Quote = {
          type: 'quote',
          source,
          symbol,
          ts,
          seq,
          venue,
          bidPrice: v[4 * i]!,
          bidSize: v[4 * i + 1]!,
          askPrice: v[4 * i + 2]!,
          askSize: v[4 * i + 3]!,
        };
        out[i] = q;
      } else {
        const t: Trade = {
          type: 'trade',
          source,
          symbol,
          ts,
          seq,
          venue,
          price: v[4 * i]!,
          size: v[4 * i + 1]!,
          side: SIDES[kind as 0 | 1 | 2],
        };
        out[i] = t;
      }
    }
    return out;
  }

  private absorb(newStrings: readonly string[]): void {
    for (const s of newStrings) {
      this.strings.push(s);
      this.json.push(jsonString(s));
    }
  }
}

/** Chunks as frame rows with their shards, as `Publisher.publishEncoded` takes them (`TickUnpacker.encode`). */
export function encodeChunks(
  unpacker: TickUnpacker,
  chunks: readonly TickColumns[],
  shardCount: number,
): EncodedTicks {
  let n = 0;
  for (const c of chunks) n += c.kinds.length;
  const rows: string[] = [];
  const shards = new Uint16Array(n);
  for (const c of chunks) unpacker.encode(c, shardCount, rows, shards);
  return { rows, shards, shardCount };
}
