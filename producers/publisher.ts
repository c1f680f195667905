import type { Config } from '../shared/config.ts';
import { encodeFrame } from '../shared/codec.ts';
import { TickstreamError } from '../shared/errors.ts';
import { sleep } from '../shared/lifecycle.ts';
import type { Logger } from '../shared/logger.ts';
import { publisherInstruments } from '../shared/metrics.ts';
import type { Tick } from '../shared/model.ts';
import { batch, pairs, type RedisClient } from '../shared/redis.ts';
import { shardOf, streamKey, type StreamLayout } from '../shared/streams.ts';

/**
 * Publisher: ticks → frames → pipelined XADD into the shard streams.
 *
 * - Ticks of one symbol go to one shard, in the order they were published, so per-symbol order holds.
 * - A frame is sent when it holds `frameSize` ticks or has waited `lingerMs` (like Kafka's linger.ms).
 * - At most `maxInFlight` frames are awaiting Redis' reply; `publish` waits beyond that.
 * - Backpressure: every `backpressureIntervalMs` the slowest consumer group's backlog (lag + pending) is
 *   read; above `highWater` entries publishing pauses until it is under `lowWater`, so a stalled sink
 *   cannot grow Redis without bound. Streams with no groups do not hold the producer back.
 * - `flush()` resolves when every published tick is in Redis (XADD acknowledged).
 */
export type ProducerSettings = Config['producer'];

export interface PublisherOptions {
  redis: RedisClient;
  layout: StreamLayout;
  settings: ProducerSettings;
  log: Logger;
  /** Aborting ends a backpressure pause early, so that a stop request is not held up by slow consumers. */
  signal?: AbortSignal;
}

export interface PublisherStats {
  ticks: number;
  frames: number;
  pausedMs: number;
  /** Largest backlog (entries) seen by the backpressure check. */
  maxBacklog: number;
}

export class Publisher {
  readonly stats: PublisherStats = { ticks: 0, frames: 0, pausedMs: 0, maxBacklog: 0 };
  private readonly o: PublisherOptions;
  private readonly buffers: Tick[][];
  private readonly keys: string[];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly metrics: ReturnType<typeof publisherInstruments>;
  private lingerTimer: NodeJS.Timeout | undefined;
  private failure: unknown;
  private backlog = 0;
  private sentSinceMeasure = 0;
  private lastCheck = 0;

  constructor(options: PublisherOptions) {
    this.o = options;
    this.metrics = publisherInstruments(options.settings.source, () => this.stats);
    this.buffers = Array.from({ length: options.layout.shards }, () => []);
    this.keys = Array.from({ length: options.layout.shards }, (_, i) => streamKey(options.layout, i));
  }

  /** Queue ticks; resolves once they are buffered or sent and the in-flight window has room again. */
  async publish(ticks: readonly Tick[]): Promise<void> {
    this.throwIfFailed();
    const { frameSize } = this.o.settings;
    const shards = this.o.layout.shards;
    for (const t of ticks) {
      const s = shardOf(t.symbol, shards);
      const buf = this.buffers[s]!;
      buf.push(t);
      if (buf.length >= frameSize) {
        this.send(s);
        if (this.inFlight.size >= this.o.settings.maxInFlight) await this.drainWindow();
      }
    }
    this.armLinger();
    await this.applyBackpressure();
  }

  /** Send partial frames and wait until Redis has acknowledged every tick. */
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
    this.sentSinceMeasure++;
    const acked = this.metrics.publish();
    const p: Promise<void> = this.o.redis
      .xadd(this.keys[shard]!, '*', ...encodeFrame(ticks))
      .then(
        () => {
          acked();
          this.stats.frames++;
          this.stats.ticks += ticks.length;
        },
        (err: unknown) => {
          this.failure ??= new TickstreamError('XADD failed', { retriable: true, cause: err });
        },
      )
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
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

  private async applyBackpressure(): Promise<void> {
    const { highWater, lowWater, backpressureIntervalMs } = this.o.settings;
    if (highWater <= 0) return;
    // Between measurements the backlog can only have grown by what we sent since: count that in, so a fast
    // producer cannot overshoot the high-water mark by a whole interval's worth.
    const due = Date.now() - this.lastCheck >= backpressureIntervalMs;
    if (due || this.backlog + this.sentSinceMeasure > highWater) await this.measureBacklog();
    if (this.backlog + this.sentSinceMeasure <= highWater) return;
    this.o.log.warn({ backlog: this.backlog, highWater }, 'consumers are behind: pausing the producer');
    const started = Date.now();
    do {
      await sleep(backpressureIntervalMs, this.o.signal);
      if (this.o.signal?.aborted === true) break;
      await this.measureBacklog();
    } while (this.backlog > lowWater);
    const paused = Date.now() - started;
    this.stats.pausedMs += paused;
    this.metrics.paused(paused);
    this.o.log.info({ backlog: this.backlog, pausedMs: paused }, 'backlog drained: resuming');
  }

  /** Largest (lag + pending) over every group of every shard. */
  private async measureBacklog(): Promise<void> {
    this.lastCheck = Date.now();
    // Frames in flight now are either counted by this measurement or still awaiting their XADD reply.
    this.sentSinceMeasure = this.inFlight.size;
    const results = await batch(
      this.o.redis,
      this.keys.flatMap((key) => [['XINFO', 'GROUPS', key] as const, ['XLEN', key] as const]),
    );
    let worst = 0;
    this.keys.forEach((_, i) => {
      const [err, groups] = results[2 * i] ?? [null, []];
      const length = Number(results[2 * i + 1]?.[1] ?? 0);
      if (err !== null) return; // no such stream yet
      for (const g of groups as unknown[][]) {
        const info = pairs(g);
        const pending = Number(info.get('pending') ?? 0);
        // Redis reports lag as nil when it cannot compute it (entries deleted in range); the stream length
        // is then a safe upper bound.
        const lagRaw = info.get('lag');
        const lag = lagRaw === null || lagRaw === undefined ? length : Number(lagRaw);
        worst = Math.max(worst, lag + pending);
      }
    });
    this.backlog = worst;
    this.stats.maxBacklog = Math.max(this.stats.maxBacklog, worst);
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}
