import type { Config } from '../shared/config.ts';
import { encodeFrame, encodeRowsFrame, encodeTick, type EncodedTicks } from '../shared/codec.ts';
import { TickstreamError } from '../shared/errors.ts';
import { sleep } from '../shared/lifecycle.ts';
import type { Logger } from '../shared/logger.ts';
import { publisherInstruments, type PublisherInstruments } from '../shared/metrics.ts';
import type { Tick } from '../shared/model.ts';
import { LagCorrector, slowestGroupBacklog } from '../shared/backlog.ts';
import type { RedisClient } from '../shared/redis.ts';
import { shardOf, streamKey, type StreamLayout } from '../shared/streams.ts';
import { checkDurability, waitDurable } from './durability.ts';

/**
 * Publisher: ticks → frames → pipelined XADD into the shard streams.
 *
 * - Ticks of one symbol go to one shard, in the order they were published, so per-symbol order holds.
 * - A frame is sent when it holds `frameSize` ticks or has waited `lingerMs` (like Kafka's linger.ms).
 * - At most `maxInFlight` frames are awaiting Redis' reply; `publish` waits beyond that.
 * - Backpressure: every `backpressureIntervalMs` the slowest consumer group's backlog is read: its entries
 *   not yet delivered plus those pending, summed over every shard (shared/backlog.ts). Above `highWater`
 *   entries publishing pauses until it is at or under `lowWater`, so a stalled sink cannot grow Redis without
 *   bound: the mark bounds the total a group leaves in Redis, whatever the shard count. Streams with no groups
 *   do not hold the producer back. `paused` and `stats` show the state; a stop (the constructor's signal, or
 *   the one given to `publish`, e.g. a deadline) ends a pause.
 * - `publishEncoded` takes ticks already encoded as frame rows with their shard (a feed worker's, shared/codec.ts
 *   EncodedTicks): they join the same per-shard buffers, so frames, order, linger, window and backpressure are
 *   the same whichever way ticks arrive.
 * - Durability (`settings.durability`, producers/durability.ts): in `fsync` and `replica` mode a frame counts
 *   as published only once WAITAOF / WAIT has confirmed it, after its XADD was answered.
 * - `flush()` resolves when every published tick is in Redis, as durable as the settings ask.
 */
export type ProducerSettings = Config['producer'];

export interface PublisherOptions {
  redis: RedisClient;
  layout: StreamLayout;
  settings: ProducerSettings;
  log: Logger;
  /** Aborting ends a backpressure pause early, so that a stop request is not held up by slow consumers. */
  signal?: AbortSignal;
  /** The caller already ran `checkDurability` on this connection (e.g. once per process, not per publisher). */
  durabilityChecked?: boolean;
  /**
   * Counters, histograms and the backlog measurement to share, for a caller that builds many short-lived
   * Publishers of one source (the Kafka bridge, one per batch): each Publisher would otherwise register another
   * scrape source forever, and measure the backlog (2 × shards XINFO) again on its first publish.
   */
  shared?: SharedPublisherMetrics;
}

export interface SharedPublisherMetrics {
  stats: PublisherStats;
  metrics: PublisherInstruments;
  backpressure: BackpressureState;
}

/** What the backpressure check knows between measurements (shared/backlog.ts). */
interface BackpressureState {
  /** The slowest group's backlog at the last measurement, entries over every shard. */
  measured: number;
  /** Consumer groups on our streams at the last measurement: without any, nothing holds the producer. */
  groups: number;
  slowestGroup: string | undefined;
  /** Redis's lag is not trusted as such (stale after a restart): see shared/backlog.ts. */
  lagCorrector: LagCorrector;
  /** Frames sent since the measurement: the backlog can only have grown by those. */
  sentSinceMeasure: number;
  lastCheck: number;
}

function emptyBackpressure(): BackpressureState {
  return {
    measured: 0,
    groups: 0,
    slowestGroup: undefined,
    lagCorrector: new LagCorrector(),
    sentSinceMeasure: 0,
    lastCheck: 0,
  };
}

function emptyStats(): PublisherStats {
  return { ticks: 0, frames: 0, pausedMs: 0, maxBacklog: 0, backlogChecks: 0, pauses: 0 };
}

/** One set of counters for every Publisher of `source` given it as `shared`. */
export function sharedPublisherMetrics(source: string): SharedPublisherMetrics {
  const stats = emptyStats();
  return { stats, metrics: publisherInstruments(source, () => stats), backpressure: emptyBackpressure() };
}

export interface PublisherStats {
  ticks: number;
  frames: number;
  pausedMs: number;
  /** Largest backlog (entries, the slowest group's total over the shards) seen by the backpressure check. */
  maxBacklog: number;
  /** Backlog measurements made. */
  backlogChecks: number;
  /** Times publishing paused for backpressure. */
  pauses: number;
}

export class Publisher {
  readonly stats: PublisherStats;
  private readonly o: PublisherOptions;
  /** Per shard, what the next frame holds: ticks, or rows already encoded (`publishEncoded`). */
  private readonly buffers: (Tick | string)[][];
  private readonly keys: string[];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly metrics: PublisherInstruments;
  private lingerTimer: NodeJS.Timeout | undefined;
  private failure: unknown;
  private readonly bp: BackpressureState;
  private pausedSince: number | undefined;
  private checked: Promise<void> | undefined;
  /** XADDs sent since the last durability barrier was issued, and the barrier that will cover them. */
  private uncovered: Promise<unknown>[] = [];
  private barrier: Promise<void> | undefined;

  constructor(options: PublisherOptions) {
    this.o = options;
    if (options.shared !== undefined) {
      this.stats = options.shared.stats;
      this.metrics = options.shared.metrics;
      this.bp = options.shared.backpressure;
    } else {
      const stats = (this.stats = emptyStats());
      this.metrics = publisherInstruments(options.settings.source, () => stats);
      this.bp = emptyBackpressure();
    }
    this.buffers = Array.from({ length: options.layout.shards }, () => []);
    this.keys = Array.from({ length: options.layout.shards }, (_, i) => streamKey(options.layout, i));
  }

  /** True while publishing is held back by a consumer group's backlog. */
  get paused(): boolean {
    return this.pausedSince !== undefined;
  }

  /** The slowest group's backlog at the last measurement (entries over every shard), and that group. */
  get backlog(): { entries: number; group?: string } {
    const { measured, slowestGroup } = this.bp;
    return slowestGroup === undefined ? { entries: measured } : { entries: measured, group: slowestGroup };
  }

  /**
   * Queue ticks; resolves once they are buffered or sent and the in-flight window has room again. `signal`
   * (with the constructor's) ends a backpressure pause, e.g. at a run's deadline.
   */
  async publish(ticks: readonly Tick[], signal?: AbortSignal): Promise<void> {
    this.throwIfFailed();
    if (this.o.settings.durability !== 'ack' && this.o.durabilityChecked !== true) {
      await (this.checked ??= checkDurability(this.o.redis, this.o.settings));
    }
    const shards = this.o.layout.shards;
    for (const t of ticks) if (this.add(shardOf(t.symbol, shards), t)) await this.afterSend(signal);
    this.armLinger();
    await this.applyBackpressure(signal);
  }

  /**
   * `publish` for ticks already encoded (shared/codec.ts EncodedTicks), whose shards must have been computed
   * for this layout's shard count.
   */
  async publishEncoded(batch: EncodedTicks, signal?: AbortSignal): Promise<void> {
    this.throwIfFailed();
    if (batch.shardCount !== this.o.layout.shards)
      throw new TickstreamError(
        `encoded ticks are sharded ${batch.shardCount} ways, the streams ${this.o.layout.shards}`,
        { retriable: false },
      );
    if (this.o.settings.durability !== 'ack' && this.o.durabilityChecked !== true) {
      await (this.checked ??= checkDurability(this.o.redis, this.o.settings));
    }
    const { rows, shards } = batch;
    for (let i = 0; i < rows.length; i++) if (this.add(shards[i]!, rows[i]!)) await this.afterSend(signal);
    this.armLinger();
    await this.applyBackpressure(signal);
  }

  /** Buffer one tick or row; true when that filled a frame, which was sent. */
  private add(shard: number, item: Tick | string): boolean {
    const buf = this.buffers[shard]!;
    buf.push(item);
    if (buf.length < this.o.settings.frameSize) return false;
    this.send(shard);
    return true;
  }

  /** After a frame was sent: wait for room in the in-flight window, and for the backlog when a check is due. */
  private async afterSend(signal: AbortSignal | undefined): Promise<void> {
    if (this.inFlight.size >= this.o.settings.maxInFlight) await this.drainWindow();
    // Within one call too: a large batch must not carry the backlog far past the mark.
    if (this.backpressureDue()) await this.applyBackpressure(signal);
  }

  /** Send partial frames and wait until Redis has acknowledged every tick (and confirmed it durable, per the settings). */
  async flush(): Promise<void> {
    if (this.lingerTimer !== undefined) clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    for (let s = 0; s < this.buffers.length; s++) if (this.buffers[s]!.length > 0) this.send(s);
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
    this.throwIfFailed();
  }

  private send(shard: number): void {
    const ticks = this.buffers[shard]!;
    this.buffers[shard] = [];
    this.bp.sentSinceMeasure++;
    const key = this.keys[shard]!;
    const acked = this.metrics.publish();
    const added = this.o.redis.xadd(key, '*', ...frameOf(ticks));
    const stored = this.o.settings.durability === 'ack' ? added : this.durable(added);
    const p: Promise<void> = stored
      .then(
        () => {
          acked();
          this.stats.frames++;
          this.stats.ticks += ticks.length;
        },
        (err: unknown) => {
          this.failure ??= new TickstreamError(`publishing to ${key} failed`, {
            retriable: true,
            cause: err,
          });
        },
      )
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /**
   * Resolves once `added` is answered and then confirmed durable. The XADDs sent in one synchronous burst
   * share one WAIT / WAITAOF, issued after their replies (so it is sent after them under Cluster's
   * auto-pipelining too); WAIT covers every earlier write of the connection.
   */
  private durable(added: Promise<unknown>): Promise<unknown> {
    this.uncovered.push(added);
    this.barrier ??= new Promise<void>((resolve, reject) => {
      queueMicrotask(() => {
        const covered = this.uncovered;
        this.uncovered = [];
        this.barrier = undefined;
        Promise.all(covered)
          .then(() => waitDurable(this.o.redis, this.o.settings))
          .then(resolve, reject);
      });
    });
    return Promise.all([added, this.barrier]);
  }

  private async drainWindow(): Promise<void> {
    while (this.inFlight.size >= this.o.settings.maxInFlight) await Promise.race(this.inFlight);
    this.throwIfFailed();
  }

  private armLinger(): void {
    if (this.lingerTimer !== undefined) return;
    if (!this.buffers.some((b) => b.length > 0)) return;
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined;
      for (let s = 0; s < this.buffers.length; s++) if (this.buffers[s]!.length > 0) this.send(s);
    }, this.o.settings.lingerMs);
  }

  private backpressureDue(): boolean {
    const { highWater, backpressureIntervalMs } = this.o.settings;
    return (
      highWater > 0 && (Date.now() - this.bp.lastCheck >= backpressureIntervalMs || this.overHighWater())
    );
  }

  private overHighWater(): boolean {
    const { highWater } = this.o.settings;
    const { groups, measured, sentSinceMeasure } = this.bp;
    return highWater > 0 && groups > 0 && measured + sentSinceMeasure > highWater;
  }

  private async applyBackpressure(callSignal: AbortSignal | undefined): Promise<void> {
    const { highWater, lowWater, backpressureIntervalMs } = this.o.settings;
    if (highWater <= 0) return;
    // Between measurements the backlog can only have grown by what we sent since: count that in, so a fast
    // producer cannot overshoot the high-water mark by a whole interval's worth.
    const due = Date.now() - this.bp.lastCheck >= backpressureIntervalMs;
    if (due || this.overHighWater()) await this.measureBacklog();
    if (!this.overHighWater()) return;
    const signals = [this.o.signal, callSignal].filter((s): s is AbortSignal => s !== undefined);
    const signal = signals.length === 0 ? undefined : AbortSignal.any(signals);
    const stopped = (): boolean => signal?.aborted === true;
    if (stopped()) return;
    this.o.log.warn(
      { backlog: this.bp.measured, group: this.bp.slowestGroup, highWater },
      'consumers are behind: pausing the producer',
    );
    const started = Date.now();
    this.pausedSince = started;
    this.stats.pauses++;
    try {
      do {
        await sleep(backpressureIntervalMs, signal);
        if (stopped()) break;
        await this.measureBacklog();
      } while (this.bp.measured > lowWater);
    } finally {
      this.pausedSince = undefined;
      const paused = Date.now() - started;
      this.stats.pausedMs += paused;
      this.metrics.paused(paused);
      this.o.log.info(
        { backlog: this.bp.measured, pausedMs: paused, stopped: stopped() },
        stopped() ? 'stopped while paused' : 'backlog drained: resuming',
      );
    }
  }

  /** The slowest group's backlog summed over the shards (shared/backlog.ts). */
  private async measureBacklog(): Promise<void> {
    const bp = this.bp;
    bp.lastCheck = Date.now();
    // Frames in flight now are either counted by this measurement or still awaiting their XADD reply.
    bp.sentSinceMeasure = this.inFlight.size;
    let slowest: { entries: number; group?: string; groups: number };
    try {
      slowest = await slowestGroupBacklog(this.o.redis, this.keys, bp.lagCorrector);
    } catch (err) {
      // Keep the last figure (and a pause) rather than guess: the next check tries again.
      this.o.log.warn({ err }, "cannot measure the consumer groups' backlog");
      return;
    }
    bp.measured = slowest.entries;
    bp.groups = slowest.groups;
    bp.slowestGroup = slowest.group;
    this.stats.backlogChecks++;
    this.stats.maxBacklog = Math.max(this.stats.maxBacklog, slowest.entries);
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}

/** A frame's fields from buffered ticks and rows (all ticks, the common case, in one JSON.stringify). */
function frameOf(items: readonly (Tick | string)[]): string[] {
  let rows = 0;
  for (const item of items) if (typeof item === 'string') rows++;
  if (rows === 0) return encodeFrame(items as readonly Tick[]);
  if (rows === items.length) return encodeRowsFrame(items as readonly string[]);
  return encodeRowsFrame(items.map((item) => (typeof item === 'string' ? item : encodeTick(item))));
}
