import { createReadStream, createWriteStream, type ReadStream, type WriteStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ConfigError, errorMessage, TickstreamError } from '../shared/errors.ts';
import { sleep } from '../shared/lifecycle.ts';
import type { Logger } from '../shared/logger.ts';
import { TickSchema, type Tick } from '../shared/model.ts';
import { MAX_TS_NS, parseTimestamp, type TsUnit } from '../shared/time.ts';
import type { Publisher } from './publisher.ts';
import type { TickSource } from './source.ts';

export { TS_UNITS, type TsUnit } from '../shared/time.ts';

/**
 * History files as a TickSource: CSV or NDJSON, plain or gzip, read as a stream (never loaded whole).
 * Format, column mapping, timestamps and rejects are documented in docs/files-and-replay.md.
 *
 * This module is the only place where file rows become ticks. A row that cannot become a valid Tick is not
 * yielded: it is counted by reason, reported with its file, line and the column at fault, and optionally
 * written to a rejects file; the run goes on.
 *
 * Validation applies the rules of TickSchema (shared/model.ts). By default a hand-written check applies them,
 * because zod's parse alone costs about as much as the whole 3.3 µs a row may take at the 300k rows/s target
 * (measured by bench/file.ts); `validation: 'zod'` runs TickSchema itself, and a unit test holds both to
 * the same verdicts on valid and broken rows.
 */

/** Tick fields in model order; a file column maps to each. */
export const FIELDS = [
  'type',
  'source',
  'symbol',
  'ts',
  'seq',
  'venue',
  'price',
  'size',
  'side',
  'bidPrice',
  'bidSize',
  'askPrice',
  'askSize',
] as const;
export type Field = (typeof FIELDS)[number];

/** The column (CSV header name, NDJSON key) each field is read from unless mapped otherwise. */
export const DEFAULT_COLUMNS: Readonly<Record<Field, string>> = {
  type: 'type',
  source: 'source',
  symbol: 'symbol',
  ts: 'ts',
  seq: 'seq',
  venue: 'venue',
  price: 'price',
  size: 'size',
  side: 'side',
  bidPrice: 'bid_price',
  bidSize: 'bid_size',
  askPrice: 'ask_price',
  askSize: 'ask_size',
};

const F_TYPE = 0;
const F_SOURCE = 1;
const F_SYMBOL = 2;
const F_TS = 3;
const F_SEQ = 4;
const F_VENUE = 5;
const F_PRICE = 6;
const F_SIZE = 7;
const F_SIDE = 8;
const F_BID_PRICE = 9;
const F_BID_SIZE = 10;
const F_ASK_PRICE = 11;
const F_ASK_SIZE = 12;

export type ColumnMap = Partial<Record<Field, string>>;

/**
 * Parse `--map price=px,symbol=ticker`. A field may be named as in the model (bidPrice) or by its default
 * column (bid_price).
 */
export function parseColumnMap(spec: string): ColumnMap {
  const out: ColumnMap = {};
  for (const part of spec.split(',')) {
    const item = part.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0 || eq === item.length - 1) {
      throw new ConfigError(`--map: expected field=column, got "${item}"`);
    }
    const key = item.slice(0, eq).trim();
    const column = item.slice(eq + 1).trim();
    const field = FIELDS.find((f) => f === key || DEFAULT_COLUMNS[f] === key);
    if (field === undefined) {
      throw new ConfigError(
        `--map: unknown field "${key}"; fields are ${FIELDS.map((f) => DEFAULT_COLUMNS[f]).join(', ')}`,
      );
    }
    out[field] = column;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------------------
// Row → Tick (the one place)

export type Validation = 'fast' | 'zod';

/** Why one field of one row is unusable. `field` is an index into FIELDS, or -1 for the row as a whole. */
export class RowError {
  constructor(
    readonly field: number,
    readonly message: string,
    readonly value?: unknown,
  ) {}
}

export interface DecodeContext {
  /** Source name for rows without a source column value. */
  source: string;
  tsUnit: TsUnit;
  validation: Validation;
}

type Cell = unknown;

function at(cells: readonly Cell[], idx: Int32Array, field: number): Cell {
  const i = idx[field]!;
  return i < 0 ? undefined : cells[i];
}

function isEmpty(v: Cell): boolean {
  return v === undefined || v === null || v === '';
}

function text(v: Cell, field: number): string | RowError {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return new RowError(field, 'must be text', v);
}

function num(v: Cell, field: number): number | RowError {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return new RowError(field, isEmpty(v) ? 'missing' : 'must be a number', v);
  if (v === '') return new RowError(field, 'missing');
  const x = decimal(v);
  if (Number.isNaN(x)) return new RowError(field, 'not a number', v);
  if (x === 0 && v.trim() === '') return new RowError(field, 'missing');
  return x;
}

const POW10 = [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/**
 * Number(v), faster for the plain decimals files are made of. With at most 15 digits the digits form an
 * exact integer and 10^k is exact, so one IEEE division gives the correctly rounded value: the same double
 * Number() returns. Anything else (signs, exponents, spaces, long values) goes to Number().
 */
function decimal(v: string): number {
  const n = v.length;
  if (n > 16) return Number(v);
  let m = 0;
  let dot = -1;
  for (let i = 0; i < n; i++) {
    const c = v.charCodeAt(i);
    if (c >= 48 && c <= 57) m = m * 10 + (c - 48);
    else if (c === 46 && dot < 0) dot = i;
    else return Number(v);
  }
  if (dot === n - 1 || dot === 0 || n - (dot < 0 ? 0 : 1) > 15) return Number(v);
  return dot < 0 ? m : m / POW10[n - dot - 1]!;
}

function normType(v: string): 'trade' | 'quote' | undefined {
  if (v === 'trade' || v === 'quote') return v;
  const l = v.toLowerCase();
  if (l === 'trade' || l === 't') return 'trade';
  if (l === 'quote' || l === 'q') return 'quote';
  return undefined;
}

function normSide(v: string): string {
  if (v === 'buy' || v === 'sell' || v === '') return v;
  const l = v.toLowerCase();
  if (l === 'buy' || l === 'b') return 'buy';
  if (l === 'sell' || l === 's') return 'sell';
  return v;
}

/**
 * One row's cells (in file order, picked by `idx[field]`, -1 for a field the file lacks) → a Tick, or the
 * first thing wrong with it. `line` is the row's line number, the default sequence number.
 */
export function decodeRow(
  cells: readonly Cell[],
  idx: Int32Array,
  line: number,
  ctx: DecodeContext,
): Tick | RowError {
  let type: 'trade' | 'quote' | undefined;
  const typeCell = at(cells, idx, F_TYPE);
  if (isEmpty(typeCell)) {
    if (!isEmpty(at(cells, idx, F_PRICE))) type = 'trade';
    else if (!isEmpty(at(cells, idx, F_BID_PRICE)) || !isEmpty(at(cells, idx, F_ASK_PRICE))) type = 'quote';
    else return new RowError(F_TYPE, 'missing (and no price or bid/ask to infer it from)');
  } else {
    type = typeof typeCell === 'string' ? normType(typeCell) : undefined;
    if (type === undefined) return new RowError(F_TYPE, 'must be trade or quote', typeCell);
  }

  const sourceCell = at(cells, idx, F_SOURCE);
  const source = isEmpty(sourceCell) ? ctx.source : text(sourceCell, F_SOURCE);
  if (source instanceof RowError) return source;

  const symbolCell = at(cells, idx, F_SYMBOL);
  if (isEmpty(symbolCell)) return new RowError(F_SYMBOL, 'missing');
  const symbol = text(symbolCell, F_SYMBOL);
  if (symbol instanceof RowError) return symbol;

  const tsCell = at(cells, idx, F_TS);
  if (isEmpty(tsCell)) return new RowError(F_TS, 'missing');
  if (typeof tsCell !== 'string' && typeof tsCell !== 'number')
    return new RowError(F_TS, 'must be text', tsCell);
  const ts = parseTimestamp(typeof tsCell === 'string' ? tsCell : String(tsCell), ctx.tsUnit);
  if (typeof ts === 'string') return new RowError(F_TS, ts, tsCell);

  const seqCell = at(cells, idx, F_SEQ);
  const seq = isEmpty(seqCell) ? line : num(seqCell, F_SEQ);
  if (seq instanceof RowError) return seq;

  const venueCell = at(cells, idx, F_VENUE);
  const venue = isEmpty(venueCell) ? '' : text(venueCell, F_VENUE);
  if (venue instanceof RowError) return venue;

  let raw: Record<string, unknown>;
  if (type === 'trade') {
    const price = num(at(cells, idx, F_PRICE), F_PRICE);
    if (price instanceof RowError) return price;
    const size = num(at(cells, idx, F_SIZE), F_SIZE);
    if (size instanceof RowError) return size;
    const sideCell = at(cells, idx, F_SIDE);
    let side = '';
    if (!isEmpty(sideCell)) {
      if (typeof sideCell !== 'string') return new RowError(F_SIDE, 'must be buy, sell or empty', sideCell);
      side = normSide(sideCell);
    }
    raw = { type, source, symbol, ts, seq, venue, price, size, side };
  } else {
    const bidPrice = num(at(cells, idx, F_BID_PRICE), F_BID_PRICE);
    if (bidPrice instanceof RowError) return bidPrice;
    const bidSize = num(at(cells, idx, F_BID_SIZE), F_BID_SIZE);
    if (bidSize instanceof RowError) return bidSize;
    const askPrice = num(at(cells, idx, F_ASK_PRICE), F_ASK_PRICE);
    if (askPrice instanceof RowError) return askPrice;
    const askSize = num(at(cells, idx, F_ASK_SIZE), F_ASK_SIZE);
    if (askSize instanceof RowError) return askSize;
    raw = { type, source, symbol, ts, seq, venue, bidPrice, bidSize, askPrice, askSize };
  }
  return ctx.validation === 'zod' ? validateZod(raw) : validateFast(raw);
}

const FIELD_INDEX: ReadonlyMap<string, number> = new Map(FIELDS.map((f, i) => [f, i]));

function validateZod(raw: Record<string, unknown>): Tick | RowError {
  const parsed = TickSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const key = issue.path[0];
  const field = typeof key === 'string' ? (FIELD_INDEX.get(key) ?? -1) : -1;
  return new RowError(field, issue.message, typeof key === 'string' ? raw[key] : undefined);
}

const MAX_NAME = 64;

/** TickSchema's rules, checked by hand (see the module comment for why). */
function validateFast(raw: Record<string, unknown>): Tick | RowError {
  const source = raw.source as string;
  if (source.length < 1 || source.length > MAX_NAME)
    return new RowError(F_SOURCE, 'must be 1 to 64 characters', source);
  const symbol = raw.symbol as string;
  if (symbol.length < 1 || symbol.length > MAX_NAME)
    return new RowError(F_SYMBOL, 'must be 1 to 64 characters', symbol);
  const ts = raw.ts as bigint;
  if (ts < 0n || ts > MAX_TS_NS) return new RowError(F_TS, 'out of range', ts);
  const seq = raw.seq as number;
  if (!Number.isSafeInteger(seq) || seq < 0) {
    return new RowError(F_SEQ, `must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}`, seq);
  }
  if ((raw.venue as string).length > MAX_NAME)
    return new RowError(F_VENUE, 'must be at most 64 characters', raw.venue);
  if (raw.type === 'trade') {
    if (!positive(raw.price)) return new RowError(F_PRICE, 'must be a positive number', raw.price);
    if (!nonNegative(raw.size)) return new RowError(F_SIZE, 'must be zero or positive', raw.size);
    const side = raw.side;
    if (side !== 'buy' && side !== 'sell' && side !== '')
      return new RowError(F_SIDE, 'must be buy, sell or empty', side);
  } else {
    if (!positive(raw.bidPrice)) return new RowError(F_BID_PRICE, 'must be a positive number', raw.bidPrice);
    if (!nonNegative(raw.bidSize)) return new RowError(F_BID_SIZE, 'must be zero or positive', raw.bidSize);
    if (!positive(raw.askPrice)) return new RowError(F_ASK_PRICE, 'must be a positive number', raw.askPrice);
    if (!nonNegative(raw.askSize)) return new RowError(F_ASK_SIZE, 'must be zero or positive', raw.askSize);
  }
  return raw as unknown as Tick;
}

function positive(v: unknown): boolean {
  return typeof v === 'number' && Number.isFinite(v) && v > 0;
}

function nonNegative(v: unknown): boolean {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

// ---------------------------------------------------------------------------------------------------------
// The source

export type FileFormat = 'csv' | 'ndjson';

export interface FileSourceOptions {
  paths: readonly string[];
  /** Source name for rows without a source column; default: the file name without extensions. */
  source?: string;
  columns?: ColumnMap;
  /** Unit of numeric timestamps (ISO-8601 text is always accepted). Default ns. */
  tsUnit?: TsUnit;
  /** Default: from the extension (.csv / .ndjson / .jsonl, before .gz), else from the first character. */
  format?: FileFormat;
  /** CSV delimiter, default ','. */
  delimiter?: string;
  /** Append every rejected row here as NDJSON {file, line, reason, raw}. The file is truncated first. */
  rejectsPath?: string;
  validation?: Validation;
  /** Ticks per yielded batch at most. */
  batchSize?: number;
  /** Stop reading (the current batch is still yielded). */
  signal?: AbortSignal;
  /** Called for every rejected row, after it is counted. */
  onReject?: (r: Rejection) => void;
  log?: Logger;
}

export interface Rejection {
  readonly file: string;
  readonly line: number;
  /** The column at fault, as named in the file; absent when the row as a whole is malformed. */
  readonly column?: string;
  /** Full reason, with the column and the offending value. */
  readonly reason: string;
  /** The reason without the value: rejections are counted by this. */
  readonly kind: string;
  readonly raw: string;
}

export interface FileSourceStats {
  files: number;
  /** Data rows read (headers and blank lines excluded). */
  rows: number;
  ticks: number;
  rejected: number;
  byReason: Map<string, number>;
  /** Files that could not be read at all (missing columns, broken gzip), with the reason. */
  fileErrors: { file: string; reason: string }[];
  totalBytes: number;
}

const MAX_RECORD_CHARS = 1 << 20;
const GZIP_MAGIC_0 = 0x1f;
const GZIP_MAGIC_1 = 0x8b;

/** `ticks-2024-03-01.csv.gz` → `ticks-2024-03-01`. */
export function sourceNameFromPath(path: string): string {
  let name = basename(path);
  if (name.toLowerCase().endsWith('.gz')) name = name.slice(0, -3);
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(0, dot) : name;
}

function formatFromName(path: string): FileFormat | undefined {
  const name = path.toLowerCase().replace(/\.gz$/, '');
  if (name.endsWith('.csv') || name.endsWith('.tsv') || name.endsWith('.txt')) return 'csv';
  if (name.endsWith('.ndjson') || name.endsWith('.jsonl') || name.endsWith('.json')) return 'ndjson';
  return undefined;
}

interface OpenFile {
  path: string;
  size: number;
  gzip: boolean;
}

export class FileSource implements TickSource {
  readonly name: string;
  readonly stats: FileSourceStats = {
    files: 0,
    rows: 0,
    ticks: 0,
    rejected: 0,
    byReason: new Map(),
    fileErrors: [],
    totalBytes: 0,
  };
  private readonly o: FileSourceOptions;
  private readonly columns: Readonly<Record<Field, string>>;
  private readonly batchSize: number;
  private files: OpenFile[] | undefined;
  private bytesDone = 0;
  private current: ReadStream | undefined;
  private rejects: WriteStream | undefined;
  private rejectsFailure: unknown;
  private closed: Promise<void> | undefined;

  constructor(options: FileSourceOptions) {
    this.o = options;
    this.columns = { ...DEFAULT_COLUMNS, ...options.columns };
    this.batchSize = options.batchSize ?? 4096;
    this.name =
      options.source ?? (options.paths.length === 1 ? sourceNameFromPath(options.paths[0]!) : 'files');
    if (options.source !== undefined) checkSourceName(options.source, '--source');
  }

  /** Check every path up front (a typo fails before anything is published) and learn the total size. */
  async open(): Promise<void> {
    if (this.files !== undefined) return;
    const files: OpenFile[] = [];
    for (const path of this.o.paths) {
      let size: number;
      try {
        const s = await stat(path);
        if (!s.isFile()) throw new Error('not a regular file');
        size = s.size;
      } catch (err) {
        throw new TickstreamError(`cannot read ${path}: ${errorMessage(err)}`, {
          retriable: false,
          cause: err,
        });
      }
      if (this.o.source === undefined) checkSourceName(sourceNameFromPath(path), `source name from ${path}`);
      files.push({ path, size, gzip: await isGzip(path) });
    }
    this.files = files;
    this.stats.totalBytes = files.reduce((n, f) => n + f.size, 0);
    if (this.o.rejectsPath !== undefined) {
      this.rejects = await openRejects(this.o.rejectsPath, (err) => (this.rejectsFailure ??= err));
    }
  }

  /** Bytes of the files read so far (compressed bytes for gzip files), for progress against totalBytes. */
  get bytesRead(): number {
    return this.bytesDone + (this.current?.bytesRead ?? 0);
  }

  async *batches(): AsyncGenerator<readonly Tick[]> {
    await this.open();
    for (const file of this.files!) {
      if (this.o.signal?.aborted === true) return;
      this.stats.files++;
      try {
        yield* this.readFile(file);
      } catch (err) {
        if (err instanceof FileLevelError || isStreamError(err)) {
          const reason = err instanceof FileLevelError ? err.message : `${file.path}: ${errorMessage(err)}`;
          this.stats.fileErrors.push({ file: file.path, reason });
          this.o.log?.error({ file: file.path, err }, 'file skipped');
        } else {
          throw err;
        }
      } finally {
        this.current?.destroy();
        this.current = undefined;
        this.bytesDone += file.size;
      }
    }
  }

  private async *readFile(file: OpenFile): AsyncGenerator<readonly Tick[]> {
    const fileStream = createReadStream(file.path, { highWaterMark: 256 * 1024 });
    this.current = fileStream;
    const text: Readable = file.gzip
      ? pipeline(fileStream, createGunzip({ chunkSize: 128 * 1024 }), () => undefined)
      : fileStream;
    text.setEncoding('utf8');
    const format = this.o.format ?? formatFromName(file.path);
    const ctx: DecodeContext = {
      source: this.o.source ?? sourceNameFromPath(file.path),
      tsUnit: this.o.tsUnit ?? 'ns',
      validation: this.o.validation ?? 'fast',
    };
    const reader =
      format === 'csv'
        ? new CsvReader(this, file.path, ctx)
        : format === 'ndjson'
          ? new NdjsonReader(this, file.path, ctx)
          : undefined;
    let parser: RowReader | undefined = reader;
    let rest = '';
    let lineNo = 0;
    try {
      for await (const chunk of text as AsyncIterable<string>) {
        const lines = (rest + chunk).split('\n');
        rest = lines.pop()!;
        if (parser === undefined) parser = this.sniff(file.path, ctx, lines);
        const out: Tick[] = [];
        for (const line of lines) {
          lineNo++;
          parser.line(line, lineNo, out);
        }
        yield* this.emit(out);
        await this.drainRejects();
        if (this.o.signal?.aborted === true) return;
      }
      const out: Tick[] = [];
      if (rest !== '') {
        parser ??= this.sniff(file.path, ctx, [rest]);
        parser.line(rest, ++lineNo, out);
      }
      parser?.end(out);
      yield* this.emit(out);
      await this.drainRejects();
    } finally {
      text.destroy();
    }
  }

  private sniff(path: string, ctx: DecodeContext, lines: readonly string[]): RowReader {
    const first = lines.find((l) => l.trim() !== '') ?? '';
    return first
      .replace(/^\uFEFF/, '')
      .trimStart()
      .startsWith('{')
      ? new NdjsonReader(this, path, ctx)
      : new CsvReader(this, path, ctx);
  }

  private *emit(ticks: Tick[]): Generator<readonly Tick[]> {
    this.stats.ticks += ticks.length;
    if (ticks.length <= this.batchSize) {
      if (ticks.length > 0) yield ticks;
      return;
    }
    for (let i = 0; i < ticks.length; i += this.batchSize) yield ticks.slice(i, i + this.batchSize);
  }

  /** Column name for messages: the file's own name for the field. */
  columnOf(field: number): string {
    return this.columns[FIELDS[field]!];
  }

  get columnMap(): Readonly<Record<Field, string>> {
    return this.columns;
  }

  delimiter(): string {
    return this.o.delimiter ?? ',';
  }

  reject(file: string, line: number, err: RowError | string, raw: string, keyword = 'column'): void {
    let column: string | undefined;
    let kind: string;
    let reason: string;
    if (typeof err === 'string') {
      kind = reason = err;
    } else {
      if (err.field >= 0) {
        column = this.columnOf(err.field);
        const fieldName = FIELDS[err.field]!;
        // A mapped column also names the field it stands for.
        const where =
          column === DEFAULT_COLUMNS[fieldName]
            ? `${keyword} "${column}"`
            : `${keyword} "${column}" (${fieldName})`;
        kind = `${where}: ${err.message}`;
      } else {
        kind = err.message;
      }
      reason = err.value === undefined ? kind : `${kind} (got ${showValue(err.value)})`;
    }
    this.stats.rejected++;
    this.stats.byReason.set(kind, (this.stats.byReason.get(kind) ?? 0) + 1);
    const r: Rejection = { file, line, ...(column !== undefined ? { column } : {}), reason, kind, raw };
    this.rejects?.write(`${JSON.stringify({ file, line, reason, raw })}\n`);
    this.o.onReject?.(r);
  }

  private async drainRejects(): Promise<void> {
    const w = this.rejects;
    if (w !== undefined && w.writableNeedDrain && !w.destroyed)
      await new Promise<void>((r) => w.once('drain', () => r()));
  }

  /** Close the current file and the rejects file. Idempotent. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.current?.destroy();
      const w = this.rejects;
      if (w === undefined) return;
      await new Promise<void>((resolve) => w.end(() => resolve()));
      const failed = this.rejectsFailure;
      if (failed !== undefined) {
        throw new TickstreamError(`writing the rejects file ${this.o.rejectsPath}: ${errorMessage(failed)}`, {
          retriable: false,
          cause: failed,
        });
      }
    })();
    return this.closed;
  }
}

/** Open (truncate) the rejects file now, so a bad path fails before anything is read. */
async function openRejects(path: string, onError: (err: Error) => void): Promise<WriteStream> {
  const w = createWriteStream(path, { flags: 'w' });
  await new Promise<void>((resolve, reject) => {
    w.once('open', () => resolve());
    w.once('error', (err) =>
      reject(
        new TickstreamError(`cannot write the rejects file ${path}: ${err.message}`, {
          retriable: false,
          cause: err,
        }),
      ),
    );
  });
  // A later write error (disk full) is kept and reported by close(); an unhandled 'error' would kill the process.
  w.on('error', onError);
  return w;
}

function showValue(v: unknown): string {
  const s =
    typeof v === 'bigint' ? v.toString() : typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v));
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);
}

function checkSourceName(name: string, what: string): void {
  if (name.length < 1 || name.length > MAX_NAME) {
    throw new ConfigError(`${what}: a source name must be 1 to 64 characters (got "${name}"); pass --source`);
  }
}

async function isGzip(path: string): Promise<boolean> {
  if (path.toLowerCase().endsWith('.gz')) return true;
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(2);
    const { bytesRead } = await fh.read(buf, 0, 2, 0);
    return bytesRead === 2 && buf[0] === GZIP_MAGIC_0 && buf[1] === GZIP_MAGIC_1;
  } finally {
    await fh.close();
  }
}

/** The file cannot be read on (a header without the columns we need). */
class FileLevelError extends TickstreamError {
  override name = 'FileLevelError';
  constructor(message: string) {
    super(message, { retriable: false });
  }
}

function isStreamError(err: unknown): boolean {
  // zlib and fs errors carry a code (Z_DATA_ERROR, Z_BUF_ERROR, EIO...): the file is broken, not our program.
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string';
}

interface RowReader {
  line(line: string, lineNo: number, out: Tick[]): void;
  end(out: Tick[]): void;
}

class CsvReader implements RowReader {
  private idx: Int32Array | undefined;
  private width = 0;
  private pending = '';
  private pendingLine = 0;
  /** Reused for every row; decodeRow keeps the strings, never the array. */
  private readonly cells: string[] = [];
  private readonly delimiter: string;

  constructor(
    private readonly src: FileSource,
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

class NdjsonReader implements RowReader {
  private readonly keys: string[];
  private readonly tsKeyJson: string;

  constructor(
    private readonly src: FileSource,
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

// ---------------------------------------------------------------------------------------------------------
// Pacing

/**
 * Release ticks at their original pace: a tick with exchange time `ts` is let through `(ts - ts₀) / speed`
 * after the first one. Ticks that are late (or go back in time) pass at once.
 */
export interface PaceOptions {
  /** 1 = the original pace, 10 = ten times faster. */
  speed: number;
  signal?: AbortSignal;
  /** Milliseconds, monotonic; injectable for tests together with `wait`. */
  clock?: () => number;
  wait?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export async function* paced(
  batches: AsyncIterable<readonly Tick[]>,
  o: PaceOptions,
): AsyncGenerator<readonly Tick[]> {
  const { speed, signal } = o;
  const clock = o.clock ?? (() => performance.now());
  const wait = o.wait ?? sleep;
  let originTs: bigint | undefined;
  let originWall = 0;
  const nsPerWallMs = 1e6 * speed;
  for await (const batch of batches) {
    let start = 0;
    for (let i = 0; i < batch.length; i++) {
      const t = batch[i]!;
      if (originTs === undefined) {
        originTs = t.ts;
        originWall = clock();
      }
      const ahead = originWall + Number(t.ts - originTs) / nsPerWallMs - clock();
      if (ahead >= 1) {
        if (i > start) yield batch.slice(start, i);
        start = i;
        await wait(ahead, signal);
        if (signal?.aborted === true) return;
      }
    }
    if (start < batch.length) yield start === 0 ? batch : batch.slice(start);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Loading

export interface LoadOptions {
  source: FileSource;
  publisher: Publisher;
  /** Pace at the original timestamps × speed; default: as fast as possible. */
  speed?: number;
  signal?: AbortSignal;
  /** After each batch is handed to the publisher. */
  onBatch?: (ticks: number) => void;
}

export interface LoadSummary {
  files: number;
  rows: number;
  /** Ticks Redis acknowledged. */
  published: number;
  rejected: number;
  byReason: Record<string, number>;
  fileErrors: { file: string; reason: string }[];
  seconds: number;
  rowsPerSecond: number;
  /** Stopped by the signal before the end of the files. */
  stopped: boolean;
}

/**
 * Files → publisher, then flush: when this resolves every tick read is in Redis. Stopping (the signal) ends
 * reading after the current batch; what was read is still flushed. The source is closed in every case.
 */
export async function loadFiles(o: LoadOptions): Promise<LoadSummary> {
  const started = performance.now();
  const publishedBefore = o.publisher.stats.ticks;
  try {
    const batches =
      o.speed === undefined
        ? o.source.batches()
        : paced(o.source.batches(), {
            speed: o.speed,
            ...(o.signal !== undefined ? { signal: o.signal } : {}),
          });
    for await (const batch of batches) {
      await o.publisher.publish(batch);
      o.onBatch?.(batch.length);
      if (o.signal?.aborted === true) break;
    }
    await o.publisher.flush();
  } finally {
    await o.source.close();
  }
  const seconds = (performance.now() - started) / 1000;
  const s = o.source.stats;
  return {
    files: s.files,
    rows: s.rows,
    published: o.publisher.stats.ticks - publishedBefore,
    rejected: s.rejected,
    byReason: Object.fromEntries([...s.byReason].sort((a, b) => b[1] - a[1])),
    fileErrors: s.fileErrors,
    seconds,
    rowsPerSecond: Math.round(s.rows / Math.max(seconds, 1e-3)),
    stopped: o.signal?.aborted === true,
  };
}
