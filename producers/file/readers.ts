import { errorMessage, TickstreamError } from '../../shared/errors.ts';
import type { Tick } from '../../shared/model.ts';
import { decodeRow, type DecodeContext } from './decoding.ts';
import {
  F_ASK_PRICE,
  F_BID_PRICE,
  F_PRICE,
  F_SYMBOL,
  F_TS,
  F_TYPE,
  FIELDS,
  RowError,
  type Field,
} from './fields.ts';

/** What a reader needs from the source it reads for: its settings, its row count and where rejects go. */
export interface ReaderHost {
  readonly stats: { rows: number };
  readonly columnMap: Readonly<Record<Field, string>>;
  delimiter(): string;
  reject(file: string, line: number, err: RowError | string, raw: string, keyword?: string): void;
}

/** A record (a line, or a CSV record spanning lines) longer than this is rejected without being kept. */
export const MAX_RECORD_CHARS = 1 << 20;

/** What is kept of a record too long to keep whole: its beginning, for the reject. */
export const EXCERPT_CHARS = 1024;

/** A line cut at MAX_RECORD_CHARS as it was read: only its beginning and its length are kept. */
export interface Overlong {
  readonly excerpt: string;
  readonly length: number;
}

/**
 * Text chunks → lines, in time linear in the input: each chunk is split once, and a line that runs on over
 * several chunks is kept as a list of pieces joined once when it ends. Once a line passes `max` characters its
 * pieces are dropped (only an excerpt is kept) and the rest of it is skipped up to the next newline, so a file
 * without newlines costs neither quadratic time nor memory.
 */
export class LineSplitter {
  private parts: string[] = [];
  private length = 0;
  private excerpt: string | undefined;

  constructor(private readonly max = MAX_RECORD_CHARS) {}

  /** The lines this chunk completes, in order. */
  push(chunk: string, out: (string | Overlong)[]): void {
    const pieces = chunk.split('\n');
    const last = pieces.length - 1;
    for (let i = 0; i < last; i++) {
      this.add(pieces[i]!);
      out.push(this.take());
    }
    this.add(pieces[last]!);
  }

  /** The last line, when the input does not end with a newline. */
  end(out: (string | Overlong)[]): void {
    if (this.length > 0 || this.excerpt !== undefined) out.push(this.take());
  }

  private add(piece: string): void {
    this.length += piece.length;
    if (this.excerpt !== undefined) {
      if (this.excerpt.length < EXCERPT_CHARS)
        this.excerpt += piece.slice(0, EXCERPT_CHARS - this.excerpt.length);
      return;
    }
    if (this.length > this.max) {
      this.parts.push(piece.slice(0, EXCERPT_CHARS));
      this.excerpt = this.parts.join('').slice(0, EXCERPT_CHARS);
      this.parts = [];
      return;
    }
    if (piece.length > 0 || this.parts.length === 0) this.parts.push(piece);
  }

  private take(): string | Overlong {
    const line: string | Overlong =
      this.excerpt !== undefined
        ? { excerpt: this.excerpt, length: this.length }
        : this.parts.length === 1
          ? this.parts[0]!
          : this.parts.join('');
    this.parts = [];
    this.length = 0;
    this.excerpt = undefined;
    return line;
  }
}

function countQuotes(s: string): number {
  let n = 0;
  for (let i = s.indexOf('"'); i !== -1; i = s.indexOf('"', i + 1)) n++;
  return n;
}

// CSV

/**
 * Split one CSV record (RFC 4180: fields may be quoted, `""` is a quote inside a quoted field, a quoted
 * field may hold the delimiter and line breaks). Returns the cells, `null` when a quoted field is still open
 * at the end (the record continues on the next line), or a message when the record is malformed.
 */
export function splitCsv(line: string, delimiter = ','): string[] | null | string {
  const out: string[] = [];
  const n = splitCsvInto(line, delimiter, out);
  return typeof n === 'number' ? out : n;
}

/**
 * splitCsv into a caller-owned array (reused from row to row: one allocation less per row), returning the
 * number of cells. Lines without a quote, nearly all of them, take a plain delimiter scan.
 */
export function splitCsvInto(line: string, delimiter: string, out: string[]): number | null | string {
  const dl = delimiter.length;
  let k = 0;
  let i = 0;
  if (line.indexOf('"') === -1) {
    for (;;) {
      const d = line.indexOf(delimiter, i);
      if (d === -1) {
        out[k++] = line.slice(i);
        return k;
      }
      out[k++] = line.slice(i, d);
      i = d + dl;
    }
  }
  const n = line.length;
  for (;;) {
    if (i < n && line.charCodeAt(i) === 34) {
      let cell = '';
      let j = i + 1;
      for (;;) {
        const q = line.indexOf('"', j);
        if (q === -1) return null;
        if (line.charCodeAt(q + 1) === 34) {
          cell += line.slice(j, q + 1);
          j = q + 2;
          continue;
        }
        cell += line.slice(j, q);
        i = q + 1;
        break;
      }
      out[k++] = cell;
      if (i === n) return k;
      if (!line.startsWith(delimiter, i)) return `unexpected character after the closing quote of field ${k}`;
      i += dl;
    } else {
      const d = line.indexOf(delimiter, i);
      const cell = line.slice(i, d === -1 ? n : d);
      if (cell.indexOf('"') !== -1) return `stray quote in unquoted field ${k + 1}`;
      out[k++] = cell;
      if (d === -1) return k;
      i = d + dl;
    }
  }
}

/** The file cannot be read on (a header without the columns we need). */
export class FileLevelError extends TickstreamError {
  override name = 'FileLevelError';
  constructor(message: string) {
    super(message, { retriable: false });
  }
}

export interface RowReader {
  line(line: string, lineNo: number, out: Tick[]): void;
  /** A line longer than MAX_RECORD_CHARS: rejected, and nothing of it decoded. */
  overlong(line: Overlong, lineNo: number): void;
  end(out: Tick[]): void;
}

function tooLong(length: number): string {
  return `record longer than ${MAX_RECORD_CHARS} characters (${length}); nothing of it was decoded`;
}

/** The beginning of a record held as lines, without joining all of it. */
function excerptOf(lines: readonly string[]): string {
  let out = '';
  for (let i = 0; i < lines.length && out.length < EXCERPT_CHARS; i++) {
    out += `${i === 0 ? '' : '\n'}${lines[i]!.slice(0, EXCERPT_CHARS)}`;
  }
  return out.slice(0, EXCERPT_CHARS);
}

export class CsvReader implements RowReader {
  private idx: Int32Array | undefined;
  private width = 0;
  /** The lines of a record whose quoted field is still open, joined once when it closes. */
  private pending: string[] = [];
  private pendingLength = 0;
  private pendingQuotes = 0;
  private pendingLine = 0;
  /** Reused for every row; decodeRow keeps the strings, never the array. */
  private readonly cells: string[] = [];
  private readonly delimiter: string;

  constructor(
    private readonly src: ReaderHost,
    private readonly file: string,
    private readonly ctx: DecodeContext,
  ) {
    this.delimiter = src.delimiter();
  }

  line(raw: string, lineNo: number, out: Tick[]): void {
    let line = raw.charCodeAt(raw.length - 1) === 13 ? raw.slice(0, -1) : raw;
    let start = lineNo;
    if (this.pending.length > 0) {
      // Inside a quoted field: quotes come in pairs ("" is a quote inside), so the field is still open while
      // the record's count of quotes is odd. Each line is scanned once and the record split once, when it
      // closes: linear in its length, however many lines it spans.
      this.pending.push(line);
      this.pendingLength += line.length + 1;
      this.pendingQuotes += countQuotes(line);
      if (this.pendingQuotes % 2 === 1) {
        if (this.pendingLength > MAX_RECORD_CHARS) this.rejectPending(true);
        return;
      }
      line = this.pending.join('\n');
      start = this.pendingLine;
      this.pending = [];
    } else if (line === '') {
      return;
    }
    if (this.idx === undefined) {
      this.header(line.replace(/^\uFEFF/, ''));
      return;
    }
    const cells = this.cells;
    const count = splitCsvInto(line, this.delimiter, cells);
    if (count === null) {
      this.pending = [line];
      this.pendingLength = line.length;
      this.pendingQuotes = countQuotes(line);
      this.pendingLine = start;
      if (this.pendingLength > MAX_RECORD_CHARS) this.rejectPending(true);
      return;
    }
    this.src.stats.rows++;
    if (typeof count === 'string') {
      this.src.reject(this.file, start, count, line);
      return;
    }
    if (count !== this.width) {
      this.src.reject(this.file, start, `expected ${this.width} fields, got ${count}`, line);
      return;
    }
    const tick = decodeRow(cells, this.idx, start, this.ctx);
    if (tick instanceof RowError) this.src.reject(this.file, start, tick, line);
    else out.push(tick);
  }

  end(): void {
    if (this.pending.length > 0) this.rejectPending(false);
  }

  /** A line cut at MAX_RECORD_CHARS by the LineSplitter. Inside an open quoted field it ends that record too. */
  overlong(line: Overlong, lineNo: number): void {
    if (this.pending.length > 0) this.rejectPending(false);
    this.src.stats.rows++;
    this.src.reject(this.file, lineNo, tooLong(line.length), line.excerpt);
  }

  private rejectPending(tooLongToo: boolean): void {
    this.src.stats.rows++;
    const reason = tooLongToo
      ? `unterminated quoted field (record longer than ${MAX_RECORD_CHARS} characters)`
      : 'unterminated quoted field';
    this.src.reject(this.file, this.pendingLine, reason, excerptOf(this.pending));
    this.pending = [];
    this.pendingLength = 0;
    this.pendingQuotes = 0;
  }

  private header(line: string): void {
    const cells = splitCsv(line, this.src.delimiter());
    if (cells === null || typeof cells === 'string')
      throw new FileLevelError(`${this.file}: malformed header line`);
    const names = cells.map((c) => c.trim());
    const columns = this.src.columnMap;
    const idx = new Int32Array(FIELDS.length);
    FIELDS.forEach((f, i) => (idx[i] = names.indexOf(columns[f])));
    const missing = [F_SYMBOL, F_TS].filter((f) => idx[f]! < 0).map((f) => `"${columns[FIELDS[f]!]}"`);
    if (idx[F_TYPE]! < 0 && idx[F_PRICE]! < 0 && idx[F_BID_PRICE]! < 0 && idx[F_ASK_PRICE]! < 0) {
      missing.push(`"${columns.type}" (or "${columns.price}" / "${columns.bidPrice}" to infer the type)`);
    }
    if (missing.length > 0) {
      throw new FileLevelError(
        `${this.file}: header lacks column${missing.length > 1 ? 's' : ''} ${missing.join(', ')} (header: ${names.join(',')}; map others with --map)`,
      );
    }
    this.idx = idx;
    this.width = cells.length;
  }
}

const IDENTITY_IDX = Int32Array.from(FIELDS, (_, i) => i);

export class NdjsonReader implements RowReader {
  private readonly keys: string[];
  private readonly tsKeyJson: string;

  constructor(
    private readonly src: ReaderHost,
    private readonly file: string,
    private readonly ctx: DecodeContext,
  ) {
    this.keys = FIELDS.map((f) => src.columnMap[f]);
    this.tsKeyJson = JSON.stringify(src.columnMap.ts);
  }

  line(raw: string, lineNo: number, out: Tick[]): void {
    const line = raw.charCodeAt(raw.length - 1) === 13 ? raw.slice(0, -1) : raw;
    if (line === '' || line.trim() === '') return;
    this.src.stats.rows++;
    let obj: unknown;
    try {
      obj = JSON.parse(lineNo === 1 ? line.replace(/^\uFEFF/, '') : line);
    } catch (err) {
      this.src.reject(this.file, lineNo, `not valid JSON: ${errorMessage(err)}`, line);
      return;
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      this.src.reject(this.file, lineNo, 'not a JSON object', line);
      return;
    }
    const rec = obj as Record<string, unknown>;
    const cells: unknown[] = this.keys.map((k) => rec[k]);
    const ts = cells[F_TS];
    if (typeof ts === 'number') {
      // JSON.parse rounds integers above 2^53; nanosecond timestamps are that large, so read the digits.
      const literal = numberLiteral(line, this.tsKeyJson, ts);
      if (literal === undefined || /[eE+-]/.test(literal)) {
        this.src.reject(
          this.file,
          lineNo,
          new RowError(F_TS, 'write a numeric timestamp as plain digits', ts),
          line,
          'key',
        );
        return;
      }
      cells[F_TS] = literal;
    }
    const tick = decodeRow(cells, IDENTITY_IDX, lineNo, this.ctx);
    if (tick instanceof RowError) this.src.reject(this.file, lineNo, tick, line, 'key');
    else out.push(tick);
  }

  overlong(line: Overlong, lineNo: number): void {
    this.src.stats.rows++;
    this.src.reject(this.file, lineNo, tooLong(line.length), line.excerpt);
  }

  end(): void {}
}

/** The source text of the number that `"key": <number>` holds in a JSON line. */
function numberLiteral(line: string, keyJson: string, value: number): string | undefined {
  let from = 0;
  for (;;) {
    const at = line.indexOf(keyJson, from);
    if (at < 0) return undefined;
    from = at + keyJson.length;
    let i = from;
    while (line.charCodeAt(i) === 32 || line.charCodeAt(i) === 9) i++;
    if (line.charCodeAt(i) !== 58) continue;
    i++;
    while (line.charCodeAt(i) === 32 || line.charCodeAt(i) === 9) i++;
    let j = i;
    while (j < line.length && '0123456789.eE+-'.includes(line[j]!)) j++;
    const literal = line.slice(i, j);
    if (literal !== '' && Number(literal) === value) return literal;
  }
}
