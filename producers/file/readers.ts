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

export const MAX_RECORD_CHARS = 1 << 20;

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
  end(out: Tick[]): void;
}

export class CsvReader implements RowReader {
  private idx: Int32Array | undefined;
  private width = 0;
  private pending = '';
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
    if (this.pending !== '') {
      line = `${this.pending}\n${line}`;
      start = this.pendingLine;
      this.pending = '';
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
      if (line.length > MAX_RECORD_CHARS) {
        this.src.reject(this.file, start, 'unterminated quoted field', line.slice(0, 1000));
        return;
      }
      this.pending = line;
      this.pendingLine = start;
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
    if (this.pending !== '') {
      this.src.stats.rows++;
      this.src.reject(this.file, this.pendingLine, 'unterminated quoted field', this.pending.slice(0, 1000));
      this.pending = '';
    }
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
