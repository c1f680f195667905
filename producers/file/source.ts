import { createReadStream, createWriteStream, type ReadStream, type WriteStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { basename } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ConfigError, errorMessage, TickstreamError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Tick } from '../../shared/model.ts';
import type { TsUnit } from '../../shared/time.ts';
import type { TickSource } from '../source.ts';
import type { DecodeContext } from './decoding.ts';
import { DEFAULT_COLUMNS, FIELDS, type ColumnMap, type Field, type RowError } from './fields.ts';
import {
  CsvReader,
  EXCERPT_CHARS,
  FileLevelError,
  LineSplitter,
  NdjsonReader,
  type Overlong,
  type ReaderHost,
  type RowReader,
} from './readers.ts';
import { MAX_NAME, type Validation } from './validation.ts';

/**
 * History files as a TickSource: CSV or NDJSON, plain or gzip, read as a stream (never loaded whole).
 * Format, column mapping, timestamps and rejects are documented in docs/files-and-replay.md.
 *
 * producers/file/ is the only place where file rows become ticks: readers.ts splits records, decoding.ts turns
 * a row into a tick, validation.ts applies the model's rules. A row that cannot become a valid Tick is not
 * yielded: it is counted by reason, reported with its file, line and the column at fault, and optionally
 * written to a rejects file; the run goes on.
 */

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
  /**
   * Append every rejected row here as NDJSON {file, line, reason, raw}. It must not be one of the inputs, and
   * must not exist unless `overwriteRejects` (`--force`), in which case it is truncated first.
   */
  rejectsPath?: string;
  overwriteRejects?: boolean;
  /**
   * A gzip file may decompress to at most this many times its size (at least 64 MiB): a gzip bomb stops with
   * a file error instead of running for minutes. Default 100; real tick files compress 5 to 20 times.
   */
  maxGzipRatio?: number;
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
  /** The record as read, or its first EXCERPT_CHARS characters when longer (then `rawLength` is set). */
  readonly raw: string;
  readonly rawLength?: number;
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

export class FileSource implements TickSource, ReaderHost {
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
      await checkRejectsPath(this.o.rejectsPath, this.o.paths, this.o.overwriteRejects === true);
      this.rejects = await openRejects(
        this.o.rejectsPath,
        this.o.overwriteRejects === true,
        (err) => (this.rejectsFailure ??= err),
      );
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
    const splitter = new LineSplitter();
    const lines: (string | Overlong)[] = [];
    let lineNo = 0;
    let inflated = 0;
    const maxInflated = file.gzip
      ? gzipLimit(file.size, this.o.maxGzipRatio ?? DEFAULT_GZIP_RATIO)
      : Infinity;
    const feed = (out: Tick[]) => {
      parser ??= this.sniff(file.path, ctx, lines);
      for (const line of lines) {
        lineNo++;
        if (typeof line === 'string') parser.line(line, lineNo, out);
        else parser.overlong(line, lineNo);
      }
      lines.length = 0;
    };
    try {
      for await (const chunk of text as AsyncIterable<string>) {
        inflated += chunk.length;
        if (inflated > maxInflated) {
          throw new FileLevelError(
            `${file.path}: decompresses to more than ${maxInflated} characters, ` +
              `${this.o.maxGzipRatio ?? DEFAULT_GZIP_RATIO} times its ${file.size} bytes: refused as a likely gzip bomb`,
          );
        }
        splitter.push(chunk, lines);
        const out: Tick[] = [];
        if (lines.length > 0) feed(out);
        yield* this.emit(out);
        await this.drainRejects();
        if (this.o.signal?.aborted === true) return;
      }
      const out: Tick[] = [];
      splitter.end(lines);
      if (lines.length > 0) feed(out);
      (parser as RowReader | undefined)?.end(out);
      yield* this.emit(out);
      await this.drainRejects();
    } finally {
      text.destroy();
    }
  }

  private sniff(path: string, ctx: DecodeContext, lines: readonly (string | Overlong)[]): RowReader {
    const first = lines.find((l): l is string => typeof l === 'string' && l.trim() !== '') ?? '';
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
    // A reject keeps a bounded excerpt: the rejects file never grows by more than that per row.
    const kept = raw.length > EXCERPT_CHARS ? raw.slice(0, EXCERPT_CHARS) : raw;
    const cut = kept.length < raw.length ? { rawLength: raw.length } : {};
    const r: Rejection = {
      file,
      line,
      ...(column !== undefined ? { column } : {}),
      reason,
      kind,
      raw: kept,
      ...cut,
    };
    this.rejects?.write(`${JSON.stringify({ file, line, reason, raw: kept, ...cut })}\n`);
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

const DEFAULT_GZIP_RATIO = 100;
const MIN_GZIP_LIMIT = 64 * 1024 * 1024;

/** Characters a gzip file of `size` bytes may decompress to. */
export function gzipLimit(size: number, ratio: number): number {
  return Math.max(MIN_GZIP_LIMIT, size * ratio);
}

/**
 * Refuse a rejects path that is one of the inputs (the same file, by device and inode, whatever the spelling
 * or link), and one that exists unless the caller asked to overwrite it.
 */
async function checkRejectsPath(path: string, inputs: readonly string[], overwrite: boolean): Promise<void> {
  let target: Stats;
  try {
    target = await stat(path);
  } catch {
    return; // does not exist yet: cannot be an input (they were all found)
  }
  for (const input of inputs) {
    const s = await stat(input).catch(() => undefined);
    if (s !== undefined && s.dev === target.dev && s.ino === target.ino) {
      throw new ConfigError(`--rejects ${path} is the input file ${input}: choose another path`);
    }
  }
  if (!overwrite) {
    throw new ConfigError(`--rejects ${path} exists: pass --force to overwrite it, or choose another path`);
  }
}

/** Open the rejects file now, so a bad path fails before anything is read. */
async function openRejects(
  path: string,
  overwrite: boolean,
  onError: (err: Error) => void,
): Promise<WriteStream> {
  // 'wx' fails if the file appeared since the check: never truncate something we did not mean to.
  const w = createWriteStream(path, { flags: overwrite ? 'w' : 'wx' });
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

function isStreamError(err: unknown): boolean {
  // zlib and fs errors carry a code (Z_DATA_ERROR, Z_BUF_ERROR, EIO...): the file is broken, not our program.
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string';
}
