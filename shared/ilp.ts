import type { Quote, Tick, Trade } from './model.ts';

/**
 * InfluxDB Line Protocol rows of ticks, byte for byte what the QuestDB client's buffers
 * (@questdb/nodejs-client 4.2: SenderBufferV1, V2 and V3) write for the hot writer's columns. The hot writer
 * sends them through the client's own transport (`createTransport`), so the client still owns HTTP, auth,
 * TLS and retries; only the encoding is ours.
 *
 * Why not the client's buffer: it writes every character of every name and value with its own
 * `Buffer.write` call and measures each string twice first. That cost the hot writer 10–15 µs a tick, the
 * most of any stage in `npm run bench -- e2e` (docs/adr/0017-own-ilp-encoder.md); one `write` per run of
 * text and `writeDoubleLE` for protocol 2's binary doubles cost about a tenth of it.
 * test/unit/ilp.unit.test.ts compares the bytes with the client's buffers for all three versions.
 *
 * What the client checks per row is checked here too (an error for the row): `seq` must be an integer, and the
 * rows may not outgrow `maxBytes` (the client's `max_buf_size`). The client refuses a little earlier: it grows
 * its buffer by doubling and stops at the first doubling past the limit, where these rows fill up to it.
 */
export type IlpProtocolVersion = '1' | '2' | '3';

export interface IlpTables {
  trades: string;
  quotes: string;
}

export interface IlpRowsOptions {
  protocolVersion: IlpProtocolVersion;
  tables: IlpTables;
  /** The client's `max_buf_size` (100 MiB by default). */
  maxBytes: number;
  /** The client's `init_buf_size` (64 KiB by default). */
  initialBytes?: number | undefined;
}

/** Protocol 2's binary double: '=' then entity type 16, then 8 bytes little-endian. */
const BINARY_DOUBLE = 16;
const EQUALS = 0x3d;

/** Characters the client escapes with a backslash outside quotes (names and symbol values). */
const NEEDS_ESCAPE = /[ ,=\n\r\\]/;
const ESCAPE_ALL = /[ ,=\n\r\\]/g;

/** A name or symbol value as the client writes it (`writeEscaped`, unquoted). */
export function ilpEscape(s: string): string {
  return NEEDS_ESCAPE.test(s) ? s.replace(ESCAPE_ALL, '\\$&') : s;
}

export class IlpRowError extends Error {
  override name = 'IlpRowError';
}

export class IlpRows {
  /** Rows written since the last reset. */
  rows = 0;
  private buffer: Buffer;
  private position = 0;
  private readonly binary: boolean;
  private readonly tradePrefix: string;
  private readonly quotePrefix: string;
  private readonly maxBytes: number;

  constructor(options: IlpRowsOptions) {
    this.binary = options.protocolVersion !== '1';
    this.maxBytes = options.maxBytes;
    this.buffer = Buffer.allocUnsafe(
      Math.max(64, Math.min(options.initialBytes ?? 65_536, options.maxBytes)),
    );
    this.tradePrefix = `${ilpEscape(options.tables.trades)},source=`;
    this.quotePrefix = `${ilpEscape(options.tables.quotes)},source=`;
  }

  /** Bytes written since the last reset. */
  get length(): number {
    return this.position;
  }

  /** One tick's row. On an error nothing of the row stays in the buffer. */
  add(t: Tick): void {
    if (!Number.isInteger(t.seq)) throw new IlpRowError(`Value must be an integer, received ${t.seq}`);
    const start = this.position;
    try {
      if (t.type === 'trade') this.trade(t);
      else this.quote(t);
    } catch (err) {
      this.position = start;
      throw err;
    }
    this.rows++;
  }

  /** What was written since the last reset: a view, valid until the next write or reset. */
  view(): Buffer {
    return this.buffer.subarray(0, this.position);
  }

  reset(): void {
    this.position = 0;
    this.rows = 0;
  }

  private trade(t: Trade): void {
    let head = `${this.tradePrefix}${ilpEscape(t.source)},symbol=${ilpEscape(t.symbol)}`;
    // Empty strings would be empty symbols; leaving the column out stores NULL, which is what '' means here.
    if (t.venue !== '') head += `,venue=${ilpEscape(t.venue)}`;
    if (t.side !== '') head += `,side=${ilpEscape(t.side)}`;
    head += ` seq=${t.seq}i,price=`;
    if (this.binary) {
      this.text(head);
      this.double(t.price);
      this.text(',size=');
      this.double(t.size);
      this.text(` ${t.ts}n\n`);
    } else {
      this.text(`${head}${t.price},size=${t.size} ${t.ts}\n`);
    }
  }

  private quote(t: Quote): void {
    let head = `${this.quotePrefix}${ilpEscape(t.source)},symbol=${ilpEscape(t.symbol)}`;
    if (t.venue !== '') head += `,venue=${ilpEscape(t.venue)}`;
    head += ` seq=${t.seq}i,bid_price=`;
    if (this.binary) {
      this.text(head);
      this.double(t.bidPrice);
      this.text(',bid_size=');
      this.double(t.bidSize);
      this.text(',ask_price=');
      this.double(t.askPrice);
      this.text(',ask_size=');
      this.double(t.askSize);
      this.text(` ${t.ts}n\n`);
    } else {
      this.text(
        `${head}${t.bidPrice},bid_size=${t.bidSize},ask_price=${t.askPrice},ask_size=${t.askSize} ${t.ts}\n`,
      );
    }
  }

  private text(s: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit (a surrogate pair: 4 bytes for 2 units); only when that
    // bound does not fit is the text measured.
    if (this.position + 3 * s.length > this.buffer.length) this.ensure(Buffer.byteLength(s));
    this.position += this.buffer.write(s, this.position);
  }

  private double(v: number): void {
    this.ensure(10);
    const b = this.buffer;
    b[this.position++] = EQUALS;
    b[this.position++] = BINARY_DOUBLE;
    this.position = b.writeDoubleLE(v, this.position);
  }

  private ensure(more: number): void {
    const need = this.position + more;
    if (need <= this.buffer.length) return;
    let size = this.buffer.length;
    while (size < need) size *= 2;
    if (size > this.maxBytes) {
      if (need > this.maxBytes) {
        throw new IlpRowError(`Max buffer size is ${this.maxBytes} bytes, requested buffer size: ${need}`);
      }
      size = this.maxBytes;
    }
    const next = Buffer.allocUnsafe(size);
    this.buffer.copy(next, 0, 0, this.position);
    this.buffer = next;
  }
}
