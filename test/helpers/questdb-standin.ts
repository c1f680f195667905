import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for QuestDB's HTTP port, for tests and benchmarks that cannot run the real server. It is not
 * QuestDB: it speaks just enough of it for the hot writer.
 *
 * It is as unkind as the real server where a writer could be caught out:
 *
 * - POST /write: parses ILP (protocol 1 text and protocol 2 binary doubles) and records every row; keeps a
 *   deduplicated view per table keyed by the table's DEDUP UPSERT KEYS, compared at the designated
 *   timestamp's precision (a TIMESTAMP column keys on microseconds), like the real server.
 * - Commit per table within a request: when a row is refused (400), the rows of the *other* tables of the
 *   request are committed all the same, as QuestDB does; only the refused row's table is rolled back.
 * - Column types enforced on write for tables created through /exec: a float into a LONG, a string into a
 *   DOUBLE, a field into a SYMBOL column is refused with QuestDB's "cast error".
 * - WAL applied asynchronously: a committed request is a sequencer transaction, applied `walLagMs` later
 *   (writerTxn behind sequencerTxn in wal_tables()); a suspended table accepts writes and never applies them
 *   until resumeWal(). storedRows() shows applied rows only.
 * - GET /exec: canned answers for `select 1`, `select build()`, CREATE TABLE IF NOT EXISTS (it remembers the columns,
 *   designated timestamp and upsert keys), `table_columns('x')` and `wal_tables()`; `onExec` adds more.
 * - GET /settings as the pretended version offers it: ILP versions [1, 2] from 9.0, [1] on 8.x, no
 *   /settings at all (404) before 8.1; and /ping.
 * - Failure on demand: any status for /write (401, 413, 429, 500, 503 …), a 400 with QuestDB's error JSON
 *   for rows a predicate rejects, 413 above `maxRequestBytes`, dropped connections, "stored, then the reply
 *   is lost" (the rows are committed, then the connection drops or a 500 comes back, so a resend must rely on
 *   DEDUP), or not listening at all (connection refused) between pause() and resume().
 * - `cheap: true` skips parsing for benchmarks: it only counts requests and bytes.
 */

export interface StandinOptions {
  /** ILP protocol versions advertised on /settings (the client picks the highest it knows); by version. */
  protocolVersions?: number[];
  /** Delay between a request's commit and its rows being applied (visible in storedRows()). */
  walLagMs?: number;
  /** Bodies larger than this are refused with 413 (QuestDB's http.recv.buffer.size). */
  maxRequestBytes?: number;
  /** Version reported by `select build()`; TIMESTAMP_NS is refused below 9.1. */
  version?: string;
  cheap?: boolean;
}

export type IlpValue =
  | { type: 'float'; value: number; text: string }
  | { type: 'int'; value: bigint; text: string }
  | { type: 'string'; value: string; text: string }
  | { type: 'bool'; value: boolean; text: string }
  | { type: 'timestamp'; value: bigint; unit: 'us' | 'ns'; text: string };

export interface IlpRow {
  table: string;
  symbols: Record<string, string>;
  fields: Record<string, IlpValue>;
  /** Designated timestamp in nanoseconds, after applying the unit (suffix or ?precision=). */
  ts: bigint | undefined;
  /** The line in protocol-1 text form (binary doubles written as JavaScript prints them). */
  text: string;
}

export interface WriteRequest {
  query: string;
  bytes: number;
  status: number;
  rows: number;
}

export interface ExecReply {
  status?: number;
  body: Record<string, unknown>;
}

interface TableDef {
  name: string;
  columns: { name: string; type: string }[];
  designated: string | undefined;
  upsertKeys: string[];
}

const SETTINGS_KEY = 'line.proto.support.versions';

export class QuestDbStandin {
  readonly rows: IlpRow[] = [];
  readonly writes: WriteRequest[] = [];
  readonly execs: string[] = [];
  /** Body bytes received on /write (counted in cheap mode too). */
  bytes = 0;
  writeRequests = 0;
  /** /write requests being handled right now, and the most there ever were at once. */
  inFlightWrites = 0;
  maxInFlightWrites = 0;
  /** Delay before answering a /write, to make overlapping requests observable. */
  writeDelayMs = 0;
  onExec: ((sql: string) => ExecReply | undefined) | undefined;
  private readonly server: Server;
  private readonly options: Required<StandinOptions>;
  private readonly tables = new Map<string, TableDef>();
  private readonly stored = new Map<string, Map<string, IlpRow>>();
  private readonly suspended = new Set<string>();
  /** Sequencer transactions (committed requests) and applied ones, per table. */
  private readonly txns = new Map<string, { sequencer: number; writer: number }>();
  private readonly unapplied = new Map<string, IlpRow[][]>();
  private loseReplyTimes = 0;
  private loseReplyAs: 'drop' | 500 = 'drop';
  private failStatus = 0;
  private failMessage = '';
  private failTimes = 0;
  private dropTimes = 0;
  private rejector: ((row: IlpRow) => string | undefined) | undefined;
  private port = 0;

  private constructor(options: StandinOptions) {
    const version = options.version ?? '9.1.0';
    this.options = {
      protocolVersions:
        options.protocolVersions ??
        (versionAtLeast(version, 9, 0) ? [1, 2] : versionAtLeast(version, 8, 1) ? [1] : []),
      version,
      cheap: options.cheap ?? false,
      walLagMs: options.walLagMs ?? 0,
      maxRequestBytes: options.maxRequestBytes ?? Infinity,
    };
    this.server = createServer({ keepAlive: true }, (req, res) => this.handle(req, res));
  }

  static async start(options: StandinOptions = {}): Promise<QuestDbStandin> {
    const s = new QuestDbStandin(options);
    await s.listen(0);
    return s;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A client configuration string for this stand-in; `extra` is appended as it is ("retry_timeout=200;"). */
  clientConf(extra = ''): string {
    return `http::addr=127.0.0.1:${this.port};${extra}`;
  }

  /** Answer the next `times` /write requests with this status and message (default: until recover()). */
  failWrites(status = 500, times = Infinity, message = 'write error: stand-in failure'): void {
    this.failStatus = status;
    this.failTimes = times;
    this.failMessage = message;
  }

  /** Reject any request holding a row for which `reason` returns a message, as QuestDB rejects a bad row. */
  rejectRows(reason: (row: IlpRow) => string | undefined): void {
    this.rejector = reason;
  }

  /**
   * The next `times` /write requests are committed, then their reply is lost: the connection drops without
   * an answer ('drop'), or a 500 comes back (500). The writer cannot tell this from a failure before commit.
   */
  loseReplies(times = 1, as: 'drop' | 500 = 'drop'): void {
    this.loseReplyTimes = times;
    this.loseReplyAs = as;
  }

  /** Close the connection of the next `times` /write requests without answering. */
  dropConnections(times = Infinity): void {
    this.dropTimes = times;
  }

  /** Back to normal: no injected failures (a paused stand-in must still be resumed). */
  recover(): void {
    this.failTimes = 0;
    this.dropTimes = 0;
    this.rejector = undefined;
  }

  suspend(table: string): void {
    this.suspended.add(table);
  }

  /** ALTER TABLE … RESUME WAL: apply what the suspended table accepted meanwhile. */
  resumeWal(table: string): void {
    this.suspended.delete(table);
    this.applyPending(table);
  }

  /** writerTxn and sequencerTxn of a table, as wal_tables() reports them. */
  walState(table: string): { writerTxn: number; sequencerTxn: number } {
    const t = this.txns.get(table) ?? { sequencer: 0, writer: 0 };
    return { writerTxn: t.writer, sequencerTxn: t.sequencer };
  }

  /** Stop listening: clients now get "connection refused". */
  async pause(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  async resume(): Promise<void> {
    await this.listen(this.port);
  }

  async stop(): Promise<void> {
    if (!this.server.listening) return;
    await this.pause();
  }

  /** Rows of a table after deduplication on its upsert keys (every row when it has none). */
  storedRows(table: string): IlpRow[] {
    return [...(this.stored.get(table)?.values() ?? [])];
  }

  tableDef(table: string): TableDef | undefined {
    return this.tables.get(table);
  }

  private async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://standin');
    if (url.pathname === '/write' || url.pathname === '/api/v2/write') {
      this.handleWrite(req, res, url);
      return;
    }
    req.resume();
    req.on('end', () => {
      if (url.pathname === '/ping') {
        res.writeHead(204).end();
      } else if (url.pathname === '/settings' && this.options.protocolVersions.length === 0) {
        json(res, 404, { error: 'Not Found' });
      } else if (url.pathname === '/settings') {
        json(res, 200, {
          config: {
            'release.type': 'OSS',
            'release.version': this.options.version,
            [SETTINGS_KEY]: this.options.protocolVersions,
          },
        });
      } else if (url.pathname === '/exec') {
        const reply = this.exec(url.searchParams.get('query') ?? '');
        json(res, reply.status ?? 200, reply.body);
      } else {
        json(res, 404, { error: `stand-in has no ${url.pathname}` });
      }
    });
  }

  private handleWrite(req: IncomingMessage, res: ServerResponse, url: URL): void {
    this.writeRequests++;
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > this.options.maxRequestBytes) {
      req.resume();
      this.writes.push({ query: url.search, bytes: length, status: 413, rows: 0 });
      req.on('end', () =>
        json(res, 413, {
          code: 'request too large',
          message: `request body of ${length} bytes exceeds the ${this.options.maxRequestBytes}-byte receive buffer`,
          line: 0,
          errorId: 'standin-413',
        }),
      );
      return;
    }
    if (this.dropTimes > 0) {
      this.dropTimes--;
      req.socket.destroy();
      return;
    }
    if (this.options.cheap) {
      req.on('data', (chunk: Buffer) => (this.bytes += chunk.length));
      req.on('end', () => res.writeHead(204).end());
      return;
    }
    const chunks: Buffer[] = [];
    this.inFlightWrites++;
    this.maxInFlightWrites = Math.max(this.maxInFlightWrites, this.inFlightWrites);
    res.on('close', () => this.inFlightWrites--);
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (this.writeDelayMs > 0)
        setTimeout(() => this.answerWrite(Buffer.concat(chunks), res, url), this.writeDelayMs);
      else this.answerWrite(Buffer.concat(chunks), res, url);
    });
  }

  private answerWrite(body: Buffer, res: ServerResponse, url: URL): void {
    this.bytes += body.length;
    const record = (status: number, rows: number) =>
      this.writes.push({ query: url.search, bytes: body.length, status, rows });
    if (this.failTimes > 0) {
      this.failTimes--;
      record(this.failStatus, 0);
      json(res, this.failStatus, {
        code: this.failStatus >= 500 ? 'internal error' : 'invalid',
        message: `failed to parse line protocol:errors encountered on line(s):${this.failMessage}`,
        line: 1,
        errorId: 'standin-500',
      });
      return;
    }
    let rows: IlpRow[];
    try {
      rows = parseIlp(body, url.searchParams.get('precision') ?? 'n');
    } catch (err) {
      record(400, 0);
      json(res, 400, {
        code: 'invalid',
        message: `stand-in could not parse ILP: ${String(err)}`,
        line: 1,
        errorId: 'standin-parse',
      });
      return;
    }
    for (let i = 0; i < rows.length; i++) {
      const reason = this.rejector?.(rows[i]!) ?? this.typeError(rows[i]!);
      if (reason === undefined) continue;
      // Each table of the request is its own transaction: the other tables' rows are committed anyway.
      const failed = rows[i]!.table;
      const kept = rows.filter((r) => r.table !== failed);
      this.commit(kept);
      record(400, kept.length);
      json(res, 400, {
        code: 'invalid',
        message: `failed to parse line protocol:errors encountered on line(s):\nerror in line ${i + 1}: table: ${failed}; ${reason}`,
        line: i + 1,
        errorId: `standin-${i + 1}`,
      });
      return;
    }
    this.commit(rows);
    if (this.loseReplyTimes > 0) {
      this.loseReplyTimes--;
      record(this.loseReplyAs === 'drop' ? 0 : 500, rows.length);
      if (this.loseReplyAs === 'drop') res.socket?.destroy();
      else json(res, 500, { code: 'internal error', message: 'stand-in: reply lost after commit', line: 0 });
      return;
    }
    record(204, rows.length);
    res.writeHead(204).end();
  }

  /** QuestDB's cast errors for a row that does not fit the table's column types, or undefined. */
  private typeError(row: IlpRow): string | undefined {
    const def = this.tables.get(row.table);
    if (def === undefined) return undefined;
    for (const col of def.columns) {
      const field = row.fields[col.name];
      if (col.type === 'SYMBOL' && field !== undefined)
        return `cast error from protocol type: ${field.type.toUpperCase()} to column type: SYMBOL`;
      if (field === undefined) continue;
      const ok =
        col.type === 'LONG' || col.type === 'INT'
          ? field.type === 'int'
          : col.type === 'DOUBLE' || col.type === 'FLOAT'
            ? field.type === 'float' || field.type === 'int'
            : col.type === 'STRING' || col.type === 'VARCHAR'
              ? field.type === 'string'
              : col.type === 'BOOLEAN'
                ? field.type === 'bool'
                : true;
      if (!ok)
        return `cast error from protocol type: ${field.type.toUpperCase()} to column type: ${col.type}`;
    }
    return undefined;
  }

  /** One sequencer transaction per table of the request; applied after the WAL lag, unless suspended. */
  private commit(rows: readonly IlpRow[]): void {
    const byTable = new Map<string, IlpRow[]>();
    for (const row of rows) {
      this.rows.push(row);
      const list = byTable.get(row.table);
      if (list === undefined) byTable.set(row.table, [row]);
      else list.push(row);
    }
    for (const [table, list] of byTable) {
      const t = this.txns.get(table) ?? { sequencer: 0, writer: 0 };
      t.sequencer++;
      this.txns.set(table, t);
      const queue = this.unapplied.get(table) ?? [];
      queue.push(list);
      this.unapplied.set(table, queue);
      if (this.options.walLagMs > 0) setTimeout(() => this.applyPending(table), this.options.walLagMs);
      else this.applyPending(table);
    }
  }

  private applyPending(table: string): void {
    if (this.suspended.has(table)) return;
    const queue = this.unapplied.get(table) ?? [];
    const t = this.txns.get(table);
    for (let txn = queue.shift(); txn !== undefined; txn = queue.shift()) {
      for (const row of txn) this.store(row);
      if (t !== undefined) t.writer++;
    }
  }

  private store(row: IlpRow): void {
    let table = this.stored.get(row.table);
    if (table === undefined) this.stored.set(row.table, (table = new Map()));
    const def = this.tables.get(row.table);
    const keys = def?.upsertKeys ?? [];
    // The key is compared at the column's precision: in a TIMESTAMP (microsecond) table, two rows whose
    // times differ below the microsecond are the same row.
    const micro = def?.columns.find((c) => c.name === def.designated)?.type === 'TIMESTAMP';
    const tsKey = (ts: bigint | undefined) => String(ts === undefined ? '' : micro ? ts / 1000n : ts);
    const key =
      keys.length === 0
        ? String(table.size)
        : keys
            .map((k) =>
              k === def?.designated ? tsKey(row.ts) : (row.symbols[k] ?? row.fields[k]?.text ?? ''),
            )
            .join('|');
    table.set(key, row);
  }

  private exec(sql: string): ExecReply {
    this.execs.push(sql);
    const custom = this.onExec?.(sql);
    if (custom !== undefined) return custom;
    const q = sql.trim().replace(/\s+/g, ' ');
    const lower = q.toLowerCase();
    if (lower === 'select build()') {
      return query(
        q,
        [{ name: 'build', type: 'STRING' }],
        [[`Build Information: QuestDB ${this.options.version}, JDK 17.0.9, Commit Hash stand-in`]],
      );
    }
    // The readiness probe of the hot writer (shared/probes.ts).
    if (lower === 'select 1') return query(q, [{ name: '1', type: 'INT' }], [[1]]);
    if (lower.startsWith('create table')) return this.createTable(q);
    const tc = /^select \* from table_columns\('([^']+)'\)$/i.exec(q);
    if (tc !== null) {
      const def = this.tables.get(tc[1]!);
      if (def === undefined)
        return {
          status: 400,
          body: { query: q, error: `table does not exist [table=${tc[1]!}]`, position: 28 },
        };
      return query(
        q,
        [
          { name: 'column', type: 'STRING' },
          { name: 'type', type: 'STRING' },
          { name: 'designated', type: 'BOOLEAN' },
          { name: 'upsertKey', type: 'BOOLEAN' },
        ],
        def.columns.map((c) => [c.name, c.type, c.name === def.designated, def.upsertKeys.includes(c.name)]),
      );
    }
    if (lower === 'select * from wal_tables()') {
      return query(
        q,
        [
          { name: 'name', type: 'STRING' },
          { name: 'suspended', type: 'BOOLEAN' },
          { name: 'writerTxn', type: 'LONG' },
          { name: 'sequencerTxn', type: 'LONG' },
          { name: 'errorMessage', type: 'STRING' },
        ],
        [...this.tables.keys()].map((name) => {
          const s = this.suspended.has(name);
          const { writerTxn, sequencerTxn } = this.walState(name);
          return [name, s, writerTxn, sequencerTxn, s ? 'disk full (stand-in)' : ''];
        }),
      );
    }
    return { status: 400, body: { query: q, error: 'the stand-in does not run this query', position: 0 } };
  }

  private createTable(q: string): ExecReply {
    const m = /^create table (if not exists )?(\w+) \((.*)\) timestamp\((\w+)\)(.*)$/i.exec(q);
    if (m === null)
      return {
        status: 400,
        body: { query: q, error: 'stand-in cannot read this CREATE TABLE', position: 0 },
      };
    const name = m[2]!;
    if (/\bTIMESTAMP_NS\b/i.test(q) && !versionAtLeast(this.options.version, 9, 1)) {
      return {
        status: 400,
        body: { query: q, error: 'invalid type: TIMESTAMP_NS', position: q.search(/TIMESTAMP_NS/i) },
      };
    }
    if (this.tables.has(name)) {
      if (m[1] === undefined)
        return { status: 400, body: { query: q, error: 'table already exists', position: 13 } };
      return { body: { ddl: 'OK' } };
    }
    const columns = m[3]!.split(',').map((c) => {
      const [colName, type] = c.trim().split(' ');
      return { name: colName!, type: type!.toUpperCase() };
    });
    const keys = /dedup upsert keys\(([^)]*)\)/i.exec(m[5]!);
    this.tables.set(name, {
      name,
      columns,
      designated: m[4],
      upsertKeys: keys === null ? [] : keys[1]!.split(',').map((k) => k.trim()),
    });
    return { body: { ddl: 'OK' } };
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res
    .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
    .end(text);
}

function query(q: string, columns: { name: string; type: string }[], dataset: unknown[][]): ExecReply {
  return { body: { query: q, columns, timestamp: -1, dataset, count: dataset.length } };
}

function versionAtLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

const SPACE = 0x20;
const COMMA = 0x2c;
const EQUALS = 0x3d;
const NEWLINE = 0x0a;
const BACKSLASH = 0x5c;
const QUOTE = 0x22;
const BINARY_DOUBLE = 16;
const BINARY_ARRAY = 14;

/**
 * Parse an ILP request body. Protocol 2 sends doubles as `name==` + type byte 16 + 8 little-endian bytes,
 * which may contain newline or space bytes, so the parser walks the bytes rather than splitting lines.
 * `precision` is the request's ?precision= (the client sends "n"): the unit of unsuffixed timestamps.
 */
export function parseIlp(body: Buffer, precision = 'n'): IlpRow[] {
  const rows: IlpRow[] = [];
  let i = 0;
  /** Read an escaped name or symbol value; `raw` keeps the escapes as they were on the wire. */
  let raw = '';
  const readName = (stops: number[]): string => {
    const from = i;
    let out = '';
    while (i < body.length) {
      const c = body[i]!;
      if (c === BACKSLASH && i + 1 < body.length) {
        out += String.fromCharCode(body[i + 1]!);
        i += 2;
        continue;
      }
      if (stops.includes(c) || c === NEWLINE) break;
      const start = i;
      while (i < body.length && body[i] !== BACKSLASH && !stops.includes(body[i]!) && body[i] !== NEWLINE)
        i++;
      out += body.toString('utf8', start, i);
    }
    raw = body.toString('utf8', from, i);
    return out;
  };
  const expect = (byte: number, what: string) => {
    if (body[i] !== byte) throw new Error(`expected ${what} at byte ${i}`);
    i++;
  };
  while (i < body.length) {
    const table = readName([COMMA, SPACE]);
    const tableText = raw;
    const symbols: Record<string, string> = {};
    const symbolText: string[] = [];
    while (body[i] === COMMA) {
      i++;
      const key = readName([EQUALS]);
      const keyText = raw;
      expect(EQUALS, '=');
      const value = readName([COMMA, SPACE]);
      symbols[key] = value;
      symbolText.push(`${keyText}=${raw}`);
    }
    expect(SPACE, 'space before fields');
    const fields: Record<string, IlpValue> = {};
    const fieldText: string[] = [];
    for (;;) {
      const key = readName([EQUALS]);
      const keyText = raw;
      expect(EQUALS, '=');
      const value = readField();
      fields[key] = value;
      fieldText.push(`${keyText}=${value.text}`);
      if (body[i] === COMMA) {
        i++;
        continue;
      }
      break;
    }
    let ts: bigint | undefined;
    let tsText = '';
    if (body[i] === SPACE) {
      i++;
      const start = i;
      while (i < body.length && body[i] !== NEWLINE) i++;
      tsText = body.toString('latin1', start, i);
      ts = designatedNanos(tsText, precision);
    }
    expect(NEWLINE, 'end of line');
    const head = [tableText, ...symbolText].join(',');
    rows.push({
      table,
      symbols,
      fields,
      ts,
      text: `${head} ${fieldText.join(',')}${tsText === '' ? '' : ` ${tsText}`}`,
    });
  }
  return rows;

  function readField(): IlpValue {
    const c = body[i];
    if (c === EQUALS && body[i + 1] === BINARY_DOUBLE) {
      const value = body.readDoubleLE(i + 2);
      i += 10;
      return { type: 'float', value, text: String(value) };
    }
    if (c === EQUALS && body[i + 1] === BINARY_ARRAY)
      throw new Error('arrays are not supported by the stand-in');
    if (c === QUOTE) {
      i++;
      let out = '';
      while (i < body.length && body[i] !== QUOTE) {
        if (body[i] === BACKSLASH) i++;
        const start = i;
        i++;
        while (i < body.length && body[i] !== QUOTE && body[i] !== BACKSLASH) i++;
        out += body.toString('utf8', start, i);
      }
      i++;
      return { type: 'string', value: out, text: JSON.stringify(out) };
    }
    const start = i;
    while (i < body.length && body[i] !== COMMA && body[i] !== SPACE && body[i] !== NEWLINE) i++;
    const text = body.toString('latin1', start, i);
    if (/^-?\d+i$/.test(text)) return { type: 'int', value: BigInt(text.slice(0, -1)), text };
    if (/^-?\d+t$/.test(text))
      return { type: 'timestamp', value: BigInt(text.slice(0, -1)), unit: 'us', text };
    if (/^-?\d+n$/.test(text))
      return { type: 'timestamp', value: BigInt(text.slice(0, -1)), unit: 'ns', text };
    if (/^(t|T|true|True|TRUE|f|F|false|False|FALSE)$/.test(text)) {
      return { type: 'bool', value: /^t/i.test(text), text };
    }
    const value = Number(text);
    if (Number.isNaN(value) && text !== 'NaN') throw new Error(`cannot read field value "${text}"`);
    return { type: 'float', value, text };
  }
}

function designatedNanos(text: string, precision: string): bigint {
  if (text.endsWith('n')) return BigInt(text.slice(0, -1));
  if (text.endsWith('t')) return BigInt(text.slice(0, -1)) * 1000n;
  const v = BigInt(text);
  switch (precision) {
    case 'u':
    case 'us':
      return v * 1000n;
    case 'ms':
      return v * 1_000_000n;
    case 's':
      return v * 1_000_000_000n;
    default:
      return v;
  }
}
