import { futureReason } from './admission.ts';
import { decodeEntryFields, decodeFrame, frameLimitReason, type FrameLimits } from '../shared/codec.ts';
import { ConfigError, errorMessage, isRetriable, TickstreamError } from '../shared/errors.ts';
import { backoffMs, sleep } from '../shared/lifecycle.ts';
import type { Logger } from '../shared/logger.ts';
import { nowNs, type Tick } from '../shared/model.ts';
import type { PgPool } from '../shared/pg.ts';
import type { RedisClient } from '../shared/redis.ts';
import {
  compareStreamIds,
  nextStreamId,
  parseStreamId,
  shardOf,
  streamKey,
  type StreamLayout,
} from '../shared/streams.ts';
import { parseTimestamp } from '../shared/time.ts';
import { readArchive, type ArchivePosition } from './sinks/archive.ts';
import { RejectedTicksError, type Sink } from './sink.ts';

/**
 * Replay for backfill: read a stored range again and write it straight into a sink, outside any consumer
 * group (no XREADGROUP, no XACK, no pending entries: the groups do not notice).
 *
 * - From the streams: XRANGE page by page over each shard in turn, decode, `sink.write` + `sink.flush` per
 *   page. Order holds per shard, hence per symbol; shards are not merged.
 * - From the archive: `readArchive` in exchange-time order, a page per batch.
 *
 * Checkpoints: after a page is flushed, the last stream id of that shard (or the last archive position) is
 * stored in the Redis hash `<prefix>:replay:<name>`, so `--resume <name>` after a crash starts right after
 * it. A crash between the flush and the checkpoint write replays that one page again, which the sinks'
 * idempotency makes harmless; nothing is ever skipped. Replaying a range twice stores nothing new.
 */

// ---------------------------------------------------------------------------------------------------------
// Bounds

export const MAX_SEQ = '18446744073709551615';
export const MIN_ID = '0-0';
export const MAX_ID = `${MAX_SEQ}-${MAX_SEQ}`;
const NS_PER_MS = 1_000_000n;
const MAX_INT8 = 9_223_372_036_854_775_807n;

/** A bound as given on the command line: a stream id, or a time (ISO-8601 or milliseconds since the epoch). */
export type Bound = { kind: 'id'; id: string } | { kind: 'time'; ns: bigint } | { kind: 'open' };

export function parseBound(text: string, flag: string): Bound {
  const t = text.trim();
  if (t === '-' || t === '+' || t === '') return { kind: 'open' };
  if (/^\d{1,20}-\d{1,20}$/.test(t)) return { kind: 'id', id: t };
  if (/^\d+$/.test(t) && t.length > 15) {
    throw new ConfigError(
      `${flag}: "${t}" is too long for milliseconds; give ms since the epoch, ISO-8601 or a stream id`,
    );
  }
  // A bare date means its midnight, UTC.
  const ns = parseTimestamp(/^\d{4}-\d{2}-\d{2}$/.test(t) ? `${t}T00:00:00Z` : t, 'ms');
  if (typeof ns === 'string') {
    throw new ConfigError(
      `${flag}: "${t}" is not a time (ISO-8601 or ms since the epoch) nor a stream id: ${ns}`,
    );
  }
  return { kind: 'time', ns };
}

/**
 * Stream-id range for XRANGE, both ends inclusive. Ids are taken as they are (XRANGE's own meaning); times
 * make a half-open range [from, to) on the entry's arrival time, which is what a stream id records.
 */
export function streamRange(from: Bound, to: Bound): { from: string; to: string } {
  const f =
    from.kind === 'open'
      ? MIN_ID
      : from.kind === 'id'
        ? completeId(from.id, '0')
        : `${ceilDiv(from.ns, NS_PER_MS)}-0`;
  let t: string;
  if (to.kind === 'open') t = MAX_ID;
  else if (to.kind === 'id') t = completeId(to.id, MAX_SEQ);
  else {
    const ms = ceilDiv(to.ns, NS_PER_MS) - 1n;
    t = ms < 0n ? MIN_ID : `${ms}-${MAX_SEQ}`;
  }
  if (compareIds(f, t) > 0) {
    throw new ConfigError(`--from is after --to (${f} > ${t}): the range is empty`);
  }
  return { from: f, to: t };
}

function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am !== bm ? (am < bm ? -1 : 1) : as === bs ? 0 : as < bs ? -1 : 1;
}

/** Exchange-time range for the archive, in nanoseconds, [from, to). */
export function archiveRange(from: Bound, to: Bound): { from: bigint; to: bigint } {
  if (from.kind === 'id' || to.kind === 'id') {
    throw new ConfigError('--source postgres takes times (ISO-8601 or ms since the epoch), not stream ids');
  }
  const range = { from: from.kind === 'open' ? 0n : from.ns, to: to.kind === 'open' ? MAX_INT8 : to.ns };
  if (range.from >= range.to) {
    throw new ConfigError(`--from is not before --to (${range.from} ≥ ${range.to} ns): the range is empty`);
  }
  return range;
}

function completeId(id: string, seq: string): string {
  return id.includes('-') ? id : `${id}-${seq}`;
}

function ceilDiv(a: bigint, b: bigint): bigint {
  return (a + b - 1n) / b;
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoints

export interface ReplayMeta {
  source: 'redis' | 'postgres';
  sink: string;
  /** redis: stream ids, both inclusive. postgres: nanoseconds as decimal strings, [from, to). */
  from: string;
  to: string;
  symbols?: string[];
  /** postgres: the archive schema read from. */
  schema?: string;
  /** The layout the checkpoint's shard numbers refer to. */
  prefix: string;
  shards: number;
  createdAt: string;
}

export interface CheckpointState {
  meta: ReplayMeta;
  /** Last flushed position per part: a stream id per shard ("0", "1", …), or an archive position ("archive"). */
  positions: Map<string, string>;
  done: Set<string>;
  ticks: number;
  status: 'running' | 'complete';
}

const NAME = /^[A-Za-z0-9_.:-]{1,100}$/;
/** Finished checkpoints are kept this long for inspection, then Redis drops them. */
const COMPLETE_TTL_SECONDS = 7 * 86_400;

export class ReplayCheckpoint {
  readonly key: string;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
    readonly name: string,
  ) {
    if (!NAME.test(name)) {
      throw new ConfigError(
        `replay name "${name}": letters, digits and _ . : - only, at most 100 characters`,
      );
    }
    this.key = `${prefix}:replay:${name}`;
  }

  /** Start a new replay under this name; refused when one exists (resume it, or pick another name). */
  async create(meta: ReplayMeta): Promise<CheckpointState> {
    const created = await this.redis.hsetnx(this.key, 'meta', JSON.stringify(meta));
    if (created !== 1) {
      throw new ConfigError(
        `a replay named "${this.name}" exists (${this.key}); continue it with --resume ${this.name} or choose another --name`,
      );
    }
    await this.redis.hset(this.key, 'status', 'running', 'ticks', '0', 'updated_at', String(Date.now()));
    return { meta, positions: new Map(), done: new Set(), ticks: 0, status: 'running' };
  }

  async load(): Promise<CheckpointState | undefined> {
    const h = await this.redis.hgetall(this.key);
    if (h.meta === undefined) return undefined;
    const positions = new Map<string, string>();
    const done = new Set<string>();
    for (const [k, v] of Object.entries(h)) {
      if (k.startsWith('pos:')) positions.set(k.slice(4), v);
      else if (k.startsWith('done:')) done.add(k.slice(5));
    }
    return {
      meta: JSON.parse(h.meta) as ReplayMeta,
      positions,
      done,
      ticks: Number(h.ticks ?? 0),
      status: h.status === 'complete' ? 'complete' : 'running',
    };
  }

  /** Record that everything up to `position` of `part` is flushed into the sink. */
  async save(part: string, position: string, ticks: number): Promise<void> {
    await this.redis
      .multi()
      .hset(this.key, `pos:${part}`, position, 'updated_at', String(Date.now()))
      .hincrby(this.key, 'ticks', ticks)
      .exec();
  }

  async finish(part: string): Promise<void> {
    await this.redis.hset(this.key, `done:${part}`, '1');
  }

  async complete(): Promise<void> {
    await this.redis
      .multi()
      .hset(this.key, 'status', 'complete', 'updated_at', String(Date.now()))
      .expire(this.key, COMPLETE_TTL_SECONDS)
      .exec();
  }

  async delete(): Promise<void> {
    await this.redis.del(this.key);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Running

/** The replay could not go on (a sink kept failing, or a stop came while it did); the checkpoint is intact. */
export class ReplayError extends TickstreamError {
  override name = 'ReplayError';
  constructor(message: string, cause?: unknown) {
    super(message, { retriable: true, cause });
  }
}

export interface ReplayProgress {
  /** How far through the range (arbitrary units, comparable with total). */
  position: number;
  total: number;
}

export interface PageReport {
  part: string;
  /** The checkpointed position after this page. */
  position: string;
  entries: number;
  ticks: number;
  progress: ReplayProgress;
}

export interface ReplayOptions {
  sink: Sink;
  checkpoint: ReplayCheckpoint;
  state: CheckpointState;
  log: Logger;
  signal?: AbortSignal;
  /** Attempts per page while the sink fails with retriable errors, and the backoff between them. */
  retry?: { attempts: number; baseMs: number; maxMs: number };
  onPage?: (page: PageReport) => void;
}

export interface ReplaySummary {
  name: string;
  pages: number;
  /** Stream entries read (redis) or rows read (postgres). */
  entries: number;
  /** Ticks written and flushed into the sink in this run. */
  ticks: number;
  /** Ticks the store refused (logged with the reason). */
  rejected: number;
  /** Stream entries or ticks that did not decode (left out, logged). */
  undecodable: number;
  seconds: number;
  ticksPerSecond: number;
  /** Every part reached the end of the range. */
  complete: boolean;
}

const DEFAULT_RETRY = { attempts: 10, baseMs: 200, maxMs: 10_000 };
const LOGGED_PROBLEMS = 20;

class PageWriter {
  rejected = 0;
  private logged = 0;
  constructor(private readonly o: ReplayOptions) {}

  /** write + flush, retrying retriable failures; a batch the store refuses is narrowed down to the culprits. */
  async write(ticks: readonly Tick[]): Promise<void> {
    if (ticks.length === 0) return;
    const retry = this.o.retry ?? DEFAULT_RETRY;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.o.sink.write(ticks);
        await this.o.sink.flush();
        return;
      } catch (err) {
        if (err instanceof RejectedTicksError) {
          for (const r of err.rejections) this.refused(ticks[r.index], r.reason);
          return;
        }
        if (!isRetriable(err)) {
          if (ticks.length === 1) {
            this.refused(ticks[0], errorMessage(err));
            return;
          }
          const half = Math.ceil(ticks.length / 2);
          await this.write(ticks.slice(0, half));
          await this.write(ticks.slice(half));
          return;
        }
        if (attempt >= retry.attempts || this.o.signal?.aborted === true) {
          throw new ReplayError(
            `sink "${this.o.sink.name}" failed ${attempt} time(s): ${errorMessage(err)}; continue later with --resume ${this.o.checkpoint.name}`,
            err,
          );
        }
        const delay = backoffMs(attempt, retry.baseMs, retry.maxMs);
        this.o.log.warn({ err, attempt, delayMs: delay }, 'sink failed; retrying the page');
        await sleep(delay, this.o.signal);
      }
    }
  }

  private refused(t: Tick | undefined, reason: string): void {
    this.rejected++;
    if (this.logged++ < LOGGED_PROBLEMS) {
      this.o.log.warn(
        { symbol: t?.symbol, ts: t?.ts.toString(), seq: t?.seq, reason },
        'tick refused by the sink',
      );
    }
  }
}

export interface StreamReplayOptions extends ReplayOptions {
  redis: RedisClient;
  layout: StreamLayout;
  /** Stream entries per XRANGE (each entry is a frame of up to TICKSTREAM_FRAME_SIZE ticks). */
  pageSize: number;
  /**
   * The live consumers' stream-boundary checks, so a replay stores nothing they refused: frames over these
   * caps and ticks further ahead of the clock than `maxFutureMs` are left out and counted as undecodable.
   */
  admission?: { frame: FrameLimits; maxFutureMs: number };
}

/** What to record for a new stream replay: `+` becomes the newest id now, so a live stream cannot run away. */
export async function streamReplayMeta(
  redis: RedisClient,
  layout: StreamLayout,
  range: { from: string; to: string },
  sink: string,
  symbols?: readonly string[],
): Promise<ReplayMeta> {
  let to = range.to;
  if (to === MAX_ID) {
    let newest = MIN_ID;
    for (const shard of shardsFor(layout, symbols)) {
      const last = (await redis.xrevrange(streamKey(layout, shard), '+', '-', 'COUNT', 1))[0];
      if (last !== undefined && compareStreamIds(last[0], newest) > 0) newest = last[0];
    }
    to = newest;
  }
  return {
    source: 'redis',
    sink,
    from: range.from,
    to,
    ...(symbols !== undefined ? { symbols: [...symbols] } : {}),
    prefix: layout.prefix,
    shards: layout.shards,
    createdAt: new Date().toISOString(),
  };
}

function shardsFor(layout: StreamLayout, symbols?: readonly string[]): number[] {
  if (symbols === undefined) return Array.from({ length: layout.shards }, (_, i) => i);
  return [...new Set(symbols.map((s) => shardOf(s, layout.shards)))].sort((a, b) => a - b);
}

/** Replay stream entries [meta.from, meta.to] of every shard into the sink. */
export async function replayStreams(o: StreamReplayOptions): Promise<ReplaySummary> {
  const started = performance.now();
  const { meta } = o.state;
  if (meta.source !== 'redis')
    throw new ConfigError(`replay "${o.checkpoint.name}" reads from ${meta.source}, not redis`);
  if (meta.prefix !== o.layout.prefix || meta.shards !== o.layout.shards) {
    throw new ConfigError(
      `replay "${o.checkpoint.name}" was made for ${meta.shards} shards of "${meta.prefix}", not ${o.layout.shards} of "${o.layout.prefix}"`,
    );
  }
  const log = o.log.child({ component: 'replay', name: o.checkpoint.name, sink: o.sink.name });
  const writer = new PageWriter({ ...o, log });
  const symbols = meta.symbols === undefined ? undefined : new Set(meta.symbols);
  const summary = { pages: 0, entries: 0, ticks: 0, undecodable: 0 };
  let logged = 0;
  await o.sink.start();

  // Progress is measured on the arrival-time span of each shard's part of the range.
  const shards = shardsFor(o.layout, meta.symbols);
  const spans = new Map<number, { first: number; last: number }>();
  let total = 0;
  for (const shard of shards) {
    const key = streamKey(o.layout, shard);
    const first = (await o.redis.xrange(key, meta.from, meta.to, 'COUNT', 1))[0];
    const last = (await o.redis.xrevrange(key, meta.to, meta.from, 'COUNT', 1))[0];
    if (first === undefined || last === undefined) continue;
    const span = { first: msOf(first[0]), last: msOf(last[0]) };
    spans.set(shard, span);
    total += span.last - span.first + 1;
  }
  let doneSpan = 0;
  let stopped = false;

  for (const shard of shards) {
    const part = String(shard);
    const span = spans.get(shard);
    if (o.state.done.has(part)) {
      if (span !== undefined) doneSpan += span.last - span.first + 1;
      continue;
    }
    const key = streamKey(o.layout, shard);
    const resumeAt = o.state.positions.get(part);
    let start = resumeAt === undefined ? meta.from : nextStreamId(resumeAt);
    for (;;) {
      if (o.signal?.aborted === true) {
        stopped = true;
        break;
      }
      // Bytes, decoded strictly: a lossy decode would replay invalid bytes as U+FFFD (see decodeEntryFields).
      const page = (await o.redis.callBuffer('XRANGE', key, start, meta.to, 'COUNT', String(o.pageSize))) as [
        Buffer,
        Buffer[],
      ][];
      if (page.length === 0) break;
      const entries = page.map(([id, raw]) => [id.toString(), raw] as const);
      const ticks: Tick[] = [];
      const now = nowNs();
      for (const [id, raw] of entries) {
        let fields: string[];
        try {
          fields = decodeEntryFields(raw);
        } catch (err) {
          summary.undecodable++;
          if (logged++ < LOGGED_PROBLEMS)
            log.warn({ stream: key, id, reason: errorMessage(err) }, 'entry left out');
          continue;
        }
        const tooLarge = o.admission === undefined ? undefined : frameLimitReason(fields, o.admission.frame);
        if (tooLarge !== undefined) {
          summary.undecodable++;
          if (logged++ < LOGGED_PROBLEMS) log.warn({ stream: key, id, reason: tooLarge }, 'entry left out');
          continue;
        }
        try {
          const frame = decodeFrame(fields);
          for (const t of frame.ticks) {
            if (symbols !== undefined && !symbols.has(t.symbol)) continue;
            const future =
              o.admission === undefined ? undefined : futureReason(t, now, o.admission.maxFutureMs);
            if (future === undefined) ticks.push(t);
            else {
              summary.undecodable++;
              if (logged++ < LOGGED_PROBLEMS) log.warn({ stream: key, id, reason: future }, 'tick left out');
            }
          }
          summary.undecodable += frame.failures.length;
          for (const f of frame.failures)
            if (logged++ < LOGGED_PROBLEMS)
              log.warn({ stream: key, id, reason: f.reason }, 'tick left out: does not decode');
        } catch (err) {
          summary.undecodable++;
          if (logged++ < LOGGED_PROBLEMS)
            log.warn({ stream: key, id, err }, 'entry left out: not a tick frame');
        }
      }
      await writer.write(ticks);
      const lastId = entries[entries.length - 1]![0];
      await o.checkpoint.save(part, lastId, ticks.length);
      summary.pages++;
      summary.entries += entries.length;
      summary.ticks += ticks.length;
      const position =
        span === undefined ? doneSpan : doneSpan + Math.min(msOf(lastId), span.last) - span.first + 1;
      o.onPage?.({
        part,
        position: lastId,
        entries: entries.length,
        ticks: ticks.length,
        progress: { position, total },
      });
      if (entries.length < o.pageSize) break;
      start = nextStreamId(lastId);
    }
    if (stopped) break;
    await o.checkpoint.finish(part);
    if (span !== undefined) doneSpan += span.last - span.first + 1;
  }
  if (!stopped) await o.checkpoint.complete();
  return finish(o.checkpoint.name, summary, writer.rejected, started, !stopped);
}

function msOf(id: string): number {
  return Number(parseStreamId(id)[0]);
}

function finish(
  name: string,
  s: { pages: number; entries: number; ticks: number; undecodable: number },
  rejected: number,
  started: number,
  complete: boolean,
): ReplaySummary {
  const seconds = (performance.now() - started) / 1000;
  return {
    name,
    ...s,
    ticks: s.ticks - rejected,
    rejected,
    seconds,
    ticksPerSecond: Math.round(s.ticks / Math.max(seconds, 1e-3)),
    complete,
  };
}

export interface ArchiveReplayOptions extends ReplayOptions {
  pool: PgPool;
  /** Ticks per page. */
  pageSize: number;
}

export function archiveReplayMeta(
  range: { from: bigint; to: bigint },
  sink: string,
  layout: StreamLayout,
  schema: string,
  symbols?: readonly string[],
): ReplayMeta {
  return {
    source: 'postgres',
    sink,
    schema,
    from: range.from.toString(),
    to: range.to.toString(),
    ...(symbols !== undefined ? { symbols: [...symbols] } : {}),
    prefix: layout.prefix,
    shards: layout.shards,
    createdAt: new Date().toISOString(),
  };
}

const ARCHIVE_PART = 'archive';

/** Replay archived ticks with exchange time in [meta.from, meta.to) into the sink, in time order. */
export async function replayArchive(o: ArchiveReplayOptions): Promise<ReplaySummary> {
  const started = performance.now();
  const { meta } = o.state;
  if (meta.source !== 'postgres')
    throw new ConfigError(`replay "${o.checkpoint.name}" reads from ${meta.source}, not postgres`);
  const log = o.log.child({ component: 'replay', name: o.checkpoint.name, sink: o.sink.name });
  const writer = new PageWriter({ ...o, log });
  const summary = { pages: 0, entries: 0, ticks: 0, undecodable: 0 };
  const from = BigInt(meta.from);
  const to = BigInt(meta.to);
  const saved = o.state.positions.get(ARCHIVE_PART);
  const after = saved === undefined ? undefined : parsePosition(saved);
  await o.sink.start();
  if (o.state.done.has(ARCHIVE_PART)) {
    await o.checkpoint.complete();
    return finish(o.checkpoint.name, summary, 0, started, true);
  }

  // Progress on exchange time, from the first tick seen to the end of the range (or now, when open).
  const end = to === MAX_INT8 ? BigInt(Date.now()) * NS_PER_MS : to;
  let first: bigint | undefined;
  let stopped = false;
  if (meta.schema === undefined)
    throw new ConfigError(`replay "${o.checkpoint.name}" names no archive schema`);
  for await (const ticks of readArchive(o.pool, meta.schema, {
    from,
    to,
    ...(meta.symbols !== undefined ? { symbols: meta.symbols } : {}),
    batchSize: o.pageSize,
    ...(after !== undefined ? { after } : {}),
  })) {
    await writer.write(ticks);
    const last = ticks[ticks.length - 1]!;
    const position = formatPosition(last);
    await o.checkpoint.save(ARCHIVE_PART, position, ticks.length);
    summary.pages++;
    summary.entries += ticks.length;
    summary.ticks += ticks.length;
    first ??= ticks[0]!.ts;
    const span = end > first ? Number(end - first) : 1;
    o.onPage?.({
      part: ARCHIVE_PART,
      position,
      entries: ticks.length,
      ticks: ticks.length,
      progress: { position: Math.min(span, Number(last.ts - first)), total: span },
    });
    if (o.signal?.aborted === true) {
      stopped = true;
      break;
    }
  }
  if (!stopped) {
    await o.checkpoint.finish(ARCHIVE_PART);
    await o.checkpoint.complete();
  }
  return finish(o.checkpoint.name, summary, writer.rejected, started, !stopped);
}

function formatPosition(t: ArchivePosition): string {
  return JSON.stringify({ ts: t.ts.toString(), seq: t.seq, source: t.source, symbol: t.symbol });
}

function parsePosition(text: string): ArchivePosition {
  const p = JSON.parse(text) as { ts: string; seq: number; source: string; symbol: string };
  return { ts: BigInt(p.ts), seq: p.seq, source: p.source, symbol: p.symbol };
}
