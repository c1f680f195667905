import type { Config } from '../shared/config.ts';
import {
  decodeEntryFields,
  decodeFrame,
  frameLimitReason,
  toTuple,
  type FrameLimits,
} from '../shared/codec.ts';
import { errorMessage, isProgramFault, isRetriable } from '../shared/errors.ts';
import { backoffMs, once, sleep } from '../shared/lifecycle.ts';
import { waitForStore } from '../shared/startup.ts';
import { exposeCounters, sinkInstruments, type SinkInstruments } from '../shared/metrics.ts';
import { RetryState } from '../shared/probes.ts';
import type { Logger } from '../shared/logger.ts';
import { nowNs, type Tick } from '../shared/model.ts';
import { batch, isCluster, orThrow, Script, type RedisClient } from '../shared/redis.ts';
import { allStreamKeys, retryStreamKey, type StreamLayout } from '../shared/streams.ts';
import { entrySize, futureReason, splitByBytes } from './admission.ts';
import { deadLetterCommands, type NewDeadLetter } from './deadletters.ts';
import { RejectedTicksError, type Sink } from './sink.ts';

/**
 * The generic consumer-group worker: runs any Sink with at-least-once delivery.
 *
 *   XREADGROUP (blocking, batched) → decode → sink.write → sink.flush → XACK (pipelined)
 *
 * - Entries are acknowledged only after the sink's flush resolved; sinks are idempotent, so redelivery is
 *   harmless and a crash anywhere loses nothing.
 * - Entries pending on dead consumers are taken over with XAUTOCLAIM on a timer. XAUTOCLAIM returns the
 *   entries themselves, so they are processed without re-reading (a re-read would reset their idle time).
 * - An entry that cannot be decoded, or that was delivered more than `maxDeliveries` times, goes to the
 *   dead-letter stream with the reason and its original fields, then is acknowledged. A bad tick inside a
 *   good frame is dead-lettered alone.
 * - Retriable sink errors are retried with backoff while the entries stay pending. While a batch is in hand
 *   the worker keeps its claim fresh (XCLAIM JUSTID) so that live consumers do not steal and re-count it.
 * - `close()` stops reading, finishes and acknowledges the batch in flight, then closes the sink.
 */

export type ConsumerSettings = Config['consumer'];

export interface WorkerOptions {
  /** Connection for acknowledgements, claims and dead letters. */
  redis: RedisClient;
  /** Dedicated connection for the blocking XREADGROUP. The worker does not close either connection. */
  blocking: RedisClient;
  layout: StreamLayout;
  group: string;
  consumer: string;
  sink: Sink;
  settings: ConsumerSettings;
  log: Logger;
}

export interface WorkerStats {
  entries: number;
  ticks: number;
  acked: number;
  deadLettered: number;
  claimed: number;
  retries: number;
  batches: number;
}

interface Entry {
  stream: string;
  id: string;
  /** The fields as Redis holds them: decoded strictly in process(), kept as they are for dead letters. */
  raw: Buffer[];
  deliveries: number;
}

/** Whether some stream gave `count` entries to a read (COUNT applies per stream). */
function anyStreamFull(entries: readonly Entry[], count: number): boolean {
  if (entries.length < count) return false;
  const perStream = new Map<string, number>();
  for (const e of entries) {
    const n = (perStream.get(e.stream) ?? 0) + 1;
    if (n >= count) return true;
    perStream.set(e.stream, n);
  }
  return false;
}

/** Where each tick of a batch came from, for dead letters. */
interface TickOrigin {
  entry: Entry;
  index: number;
}

interface DeadLetter {
  entry: Entry;
  reason: string;
  /** Set when one tick of a frame is at fault rather than the whole entry. */
  tick?: { index: number; raw: string };
}

// Read as bytes (callBuffer): ioredis' string replies decode UTF-8 lossily, which would rewrite bad bytes.
type StreamReply = [Buffer, [Buffer, Buffer[] | null][]][] | null;

export class GroupWorker {
  readonly stats: WorkerStats = {
    entries: 0,
    ticks: 0,
    acked: 0,
    deadLettered: 0,
    claimed: 0,
    retries: 0,
    batches: 0,
  };
  private readonly o: WorkerOptions;
  private readonly streams: string[];
  /** This group's retry stream (dead letters requeued for it), read beside the shards. */
  private readonly retry: string;
  private readonly log: Logger;
  private readonly abort = new AbortController();
  private readonly claimCursors = new Map<string, string>();
  private readonly frameLimits: FrameLimits;
  /** Failing since when, without a success: /readyz reports a worker stuck retrying. */
  readonly retryState = new RetryState();
  private readonly metrics: SinkInstruments;
  /** COUNT of the next read: batchSize, or fewer while entries are so large that a read would pass batchBytes. */
  private readCount: number;
  private loop: Promise<void> | undefined;
  private failure: unknown;
  private stopping = false;
  /** While stopping, how long a batch the store refuses is still retried (see close()). */
  private stopDeadline = 0;

  constructor(options: WorkerOptions) {
    this.o = options;
    this.retry = retryStreamKey(options.layout, options.group);
    this.streams = [...allStreamKeys(options.layout), this.retry];
    this.readCount = options.settings.batchSize;
    this.frameLimits = {
      maxTicks: options.settings.maxFrameTicks,
      maxBytes: options.settings.maxFrameBytes,
    };
    this.log = options.log.child({
      component: 'worker',
      group: options.group,
      consumer: options.consumer,
      sink: options.sink.name,
    });
    this.metrics = sinkInstruments(options.group, options.sink.name);
    exposeCounters(
      'tickstream_worker',
      { group: options.group, sink: options.sink.name },
      () => this.stats,
      WORKER_COUNTERS,
    );
  }

  /**
   * Create groups and prepare the sink, then start consuming in the background. A store that does not answer
   * yet is waited for (backoff, a log line per attempt) until it does or close() is called; what retrying
   * cannot fix (credentials, configuration) is thrown at once.
   */
  async start(): Promise<void> {
    await this.ensureGroups();
    const ready = await waitForStore(() => this.o.sink.start(), {
      log: this.log,
      signal: this.abort.signal,
      baseMs: this.o.settings.retryBaseMs,
      maxMs: Math.max(this.o.settings.retryMaxMs, 1000),
      what: `sink ${this.o.sink.name}`,
    });
    if (!ready) return; // closed while waiting for the store
    // The failure is kept for done() rather than left as a rejected promise nobody may be awaiting yet.
    this.loop = this.run().catch((err: unknown) => {
      this.log.fatal({ err }, 'worker loop failed');
      this.failure = err;
    });
    this.log.info({ streams: this.streams.length, batch: this.o.settings.batchSize }, 'consuming');
  }

  /** Resolves when the worker has stopped (after close()), rejects if its loop died. */
  async done(): Promise<void> {
    await this.loop;
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * Entries still pending on this consumer once close() resolved: 0 for a clean leave, undefined when Redis
   * could not tell. Anything else was left for live consumers to claim (a store that stayed down).
   */
  pendingOnStop: number | undefined;

  /**
   * Stop reading, finish and acknowledge the batch in flight, then close the sink. Idempotent. A batch the
   * store cannot take gets a bounded wait (half of TICKSTREAM_SHUTDOWN_TIMEOUT_MS) for the store to come
   * back; after that it is left pending for live consumers to claim, and the stop is not reported as clean.
   */
  readonly close = once(async () => {
    this.stopping = true;
    this.stopDeadline = Date.now() + Math.floor(this.o.settings.shutdownTimeoutMs / 2);
    this.abort.abort();
    await this.loop; // never rejects: a loop failure is in this.failure, and closing the sink still matters
    try {
      await this.o.sink.close();
    } catch (err) {
      // Whatever it held was not flushed, so not acknowledged: it is still pending and counted below.
      this.log.error({ err }, 'closing the sink failed');
    }
    this.pendingOnStop = await this.leaveGroup();
    if (this.pendingOnStop === 0) this.log.info(this.stats, 'worker stopped');
    else {
      this.log.error(
        { ...this.stats, pending: this.pendingOnStop ?? 'unknown' },
        'worker stopped with entries pending on this consumer: live consumers claim them after ' +
          'TICKSTREAM_CLAIM_MIN_IDLE_MS, or a restart under the same TICKSTREAM_CONSUMER_NAME re-reads them',
      );
    }
  });

  /**
   * Remove this consumer from the group where it holds nothing, so `status` counts live consumers only, and
   * return how many entries it still holds (undefined when Redis could not say). A consumer that still has
   * pending entries stays: deleting it would drop them from the pending list.
   */
  private async leaveGroup(): Promise<number | undefined> {
    try {
      const summaries = orThrow(
        await batch(
          this.o.redis,
          this.streams.map((s) => ['XPENDING', s, this.o.group] as const),
        ),
      ) as [number, unknown, unknown, [string, string][] | null][];
      let held = 0;
      const idle: string[] = [];
      summaries.forEach((summary, i) => {
        const mine = Number((summary[3] ?? []).find(([name]) => name === this.o.consumer)?.[1] ?? 0);
        held += mine;
        if (mine === 0) idle.push(this.streams[i]!);
      });
      await batch(
        this.o.redis,
        idle.map((s) => ['XGROUP', 'DELCONSUMER', s, this.o.group, this.o.consumer] as const),
      );
      return held;
    } catch (err) {
      this.log.warn({ err }, 'could not leave the group');
      return undefined;
    }
  }

  /**
   * Remove consumers of the group that hold nothing and have not been seen for removeIdleMs (dead processes
   * with generated names). The check and the removal are one script, so an entry delivered in between cannot
   * be dropped from the pending list; a live consumer removed by mistake is recreated by its next read.
   */
  private async removeIdleConsumers(): Promise<void> {
    const threshold = this.o.settings.removeIdleMs;
    if (threshold <= 0) return;
    const results = await removeIdle.runMany(
      this.o.redis,
      this.streams.map((s) => [s, this.o.group, this.o.consumer, String(threshold)] as const),
    );
    const removed = new Set<string>();
    results.forEach(([err, names], i) => {
      if (err !== null) this.log.warn({ err, stream: this.streams[i] }, 'could not remove idle consumers');
      else for (const n of names as string[]) removed.add(n);
    });
    if (removed.size > 0) {
      this.log.info({ consumers: [...removed], idleMs: threshold }, 'removed idle consumers from the group');
    }
  }

  private async run(): Promise<void> {
    let nextClaim = 0;
    let nextHousekeeping = 0;
    let failures = 0;
    const { claimIntervalMs, removeIdleMs } = this.o.settings;
    while (!this.stopping) {
      try {
        if (Date.now() >= nextClaim) {
          // Our own pending entries first: those of a restart under a fixed name, or of a read whose reply
          // came back after the client had given up on it. Nothing of ours is in flight at this point.
          await this.drainOwnPending();
          await this.claimAbandoned();
          nextClaim = Date.now() + claimIntervalMs;
        }
        if (Date.now() >= nextHousekeeping) {
          await this.removeIdleConsumers();
          nextHousekeeping = Date.now() + Math.max(claimIntervalMs, Math.min(removeIdleMs / 10, 60_000));
        }
        if (this.stopping) break;
        const readAt = Date.now();
        const count = this.readCount;
        const entries = await this.read('>');
        if (entries.length > 0) await this.process(entries);
        failures = 0;
        this.retryState.ok();
        // A short read (no stream gave its COUNT, which bounds each stream of the read) means the streams are
        // drained: let more gather before the next one (TICKSTREAM_CONSUMER_LINGER_MS), so a batch group that
        // keeps up pays its per-batch costs on fewer, larger batches.
        const lingerMs = this.o.settings.lingerMs ?? 0;
        if (lingerMs > 0 && !anyStreamFull(entries, count)) {
          const wait = readAt + lingerMs - Date.now();
          if (wait > 0) await sleep(wait, this.abort.signal);
        }
      } catch (err) {
        // Redis trouble outside a sink write (claims, delivery counts, acks): whatever we hold stays pending
        // and is picked up again by drainOwnPending.
        failures++;
        this.retryState.failing();
        this.log.warn({ err }, 'worker iteration failed: retrying');
        nextClaim = 0;
        await sleep(
          backoffMs(failures, this.o.settings.retryBaseMs, this.o.settings.retryMaxMs),
          this.abort.signal,
        );
      }
    }
  }

  private async drainOwnPending(): Promise<void> {
    for (;;) {
      if (this.stopping) return;
      const entries = await this.read('0', false);
      if (entries.length === 0) return;
      await this.attachDeliveryCounts(entries);
      await this.process(entries);
    }
  }

  /** One XREADGROUP over every shard (single Redis) or one per shard (Cluster: shards live on different slots). */
  private async read(from: '>' | '0', block = true): Promise<Entry[]> {
    const { group, consumer, settings } = this.o;
    const args = (keys: string[], withBlock: boolean) => [
      'GROUP',
      group,
      consumer,
      'COUNT',
      String(this.readCount),
      ...(withBlock ? ['BLOCK', String(settings.blockMs)] : []),
      'STREAMS',
      ...keys,
      ...keys.map(() => from),
    ];
    try {
      if (!isCluster(this.o.blocking)) {
        const reply = (await this.o.blocking.callBuffer(
          'XREADGROUP',
          ...args(this.streams, block),
        )) as StreamReply;
        return this.sized(await this.entriesOf([reply]));
      }
      // Under Cluster a blocking read per shard would serialise on each node's connection, so poll the shards
      // without BLOCK and back off briefly when all were empty.
      // allSettled: a shard that failed must not make us drop what the others delivered (it is pending on us).
      const settled = await Promise.allSettled(
        this.streams.map(
          (s) => this.o.blocking.callBuffer('XREADGROUP', ...args([s], false)) as Promise<StreamReply>,
        ),
      );
      const failed = settled.find((r) => r.status === 'rejected');
      const entries = this.sized(
        await this.entriesOf(settled.map((r) => (r.status === 'fulfilled' ? r.value : null))),
      );
      if (failed !== undefined && entries.length === 0) throw failed.reason;
      if (entries.length === 0 && block) await sleep(Math.min(50, settings.blockMs), this.abort.signal);
      return entries;
    } catch (err) {
      if (errorMessage(err).includes('NOGROUP')) {
        // Redis restarted without persistence or someone deleted the stream: recreate and carry on.
        this.log.warn({ err }, 'consumer group missing: recreating');
        await this.ensureGroups();
        return [];
      }
      if (this.stopping) return [];
      this.log.warn({ err }, 'read failed: retrying');
      await sleep(backoffMs(1, this.o.settings.retryBaseMs, this.o.settings.retryMaxMs), this.abort.signal);
      return [];
    }
  }

  /**
   * Adapt the next read's COUNT to the size of the entries just read, so that a read holds about
   * batchBytes (TICKSTREAM_BATCH_BYTES) of payload at most: COUNT bounds entries, not bytes, and it bounds them
   * per stream, so a read over every shard holds up to COUNT times the number of shards.
   */
  private sized(entries: Entry[]): Entry[] {
    if (entries.length === 0) return entries;
    let bytes = 0;
    for (const e of entries) bytes += entrySize(e);
    const perEntry = Math.max(1, bytes / entries.length);
    const fits = Math.floor(this.o.settings.batchBytes / (perEntry * this.streams.length));
    this.readCount = Math.max(1, Math.min(this.o.settings.batchSize, fits));
    return entries;
  }

  /**
   * Entries of XREADGROUP replies. An entry with no body was deleted from the stream while pending (trimmed by
   * hand, or XDEL): there is nothing to deliver, so it is acknowledged to leave the pending list.
   */
  private async entriesOf(replies: StreamReply[]): Promise<Entry[]> {
    const out: Entry[] = [];
    const gone: [string, string][] = [];
    for (const reply of replies) {
      for (const [rawStream, items] of reply ?? []) {
        const stream = rawStream.toString();
        for (const [rawId, raw] of items) {
          const id = rawId.toString();
          if (raw === null) gone.push([stream, id]);
          else out.push({ stream, id, raw, deliveries: 1 });
        }
      }
    }
    if (gone.length > 0) {
      this.log.warn(
        { entries: gone.length },
        'pending entries were deleted from the stream before acknowledgement',
      );
      // Best effort: a failure here must not drop the good entries of the same read.
      await batch(
        this.o.redis,
        gone.map(([stream, id]) => ['XACK', stream, this.o.group, id] as const),
      ).catch((err: unknown) => this.log.warn({ err }, 'could not acknowledge deleted entries'));
    }
    return out;
  }

  /** XAUTOCLAIM entries idle longer than claimMinIdleMs on any consumer, and process them. */
  private async claimAbandoned(): Promise<void> {
    const { redis, group, consumer, settings } = this.o;
    for (const stream of this.streams) {
      // Bounded rounds per timer tick so that a large backlog of abandoned entries cannot starve new reads.
      for (let round = 0; round < 8 && !this.stopping; round++) {
        const cursor = this.claimCursors.get(stream) ?? '0-0';
        let reply: [Buffer, [Buffer, Buffer[] | null][], Buffer[]?];
        try {
          reply = (await redis.callBuffer(
            'XAUTOCLAIM',
            stream,
            group,
            consumer,
            String(settings.claimMinIdleMs),
            cursor,
            'COUNT',
            String(settings.batchSize),
          )) as typeof reply;
        } catch (err) {
          if (errorMessage(err).includes('NOGROUP')) await this.ensureGroups();
          else this.log.warn({ err, stream }, 'XAUTOCLAIM failed');
          break;
        }
        const [rawNext, claimed, deleted] = reply;
        const next = rawNext.toString();
        this.claimCursors.set(stream, next);
        if (deleted !== undefined && deleted.length > 0) {
          // Redis 7 has already removed these from the pending list: nothing to acknowledge.
          this.log.warn(
            { stream, ids: deleted.map(String) },
            'pending entries were deleted from the stream before acknowledgement',
          );
        }
        const entries = claimed
          .filter((c): c is [Buffer, Buffer[]] => c[1] !== null)
          .map(([id, raw]) => ({ stream, id: id.toString(), raw, deliveries: 1 }));
        if (entries.length > 0) {
          this.stats.claimed += entries.length;
          this.log.info({ stream, count: entries.length }, 'claimed abandoned entries');
          await this.attachDeliveryCounts(entries);
          await this.process(entries);
        }
        if (next === '0-0') break;
      }
    }
  }

  /** XPENDING tells how often each entry was delivered (XAUTOCLAIM already counted this claim). */
  private async attachDeliveryCounts(entries: Entry[]): Promise<void> {
    const commands = [...groupBy(entries, (e) => e.stream)].map(
      ([stream, list]) =>
        [
          'XPENDING',
          stream,
          this.o.group,
          list[0]!.id,
          list[list.length - 1]!.id,
          String(list.length),
          this.o.consumer,
        ] as const,
    );
    // Without the counts a poison entry would never reach maxDeliveries: fail the iteration instead.
    const results = orThrow(await batch(this.o.redis, commands));
    const counts = new Map<string, number>();
    for (const rows of results) {
      for (const row of rows as [string, string, number, number][]) counts.set(row[0], row[3]);
    }
    for (const e of entries) e.deliveries = counts.get(e.id) ?? e.deliveries;
  }

  /** Decode, write, flush, then dead-letter and acknowledge. Leaves everything pending if the sink stays down. */
  private async process(entries: Entry[], held: Entry[] = entries): Promise<void> {
    if (entries.length > 1 && held === entries) {
      // Bounded by bytes as well as by COUNT: decoded ticks take several times their payload in memory. The
      // whole read stays claimed (heartbeat over `held`) while its runs are written one after the other.
      const runs = splitByBytes(entries, this.o.settings.batchBytes);
      if (runs.length > 1) {
        for (const run of runs) await this.process(run, entries);
        return;
      }
    }
    this.stats.batches++;
    this.stats.entries += entries.length;
    const dead: DeadLetter[] = [];
    const ticks: Tick[] = [];
    const origins: TickOrigin[] = [];
    const receivedAt = nowNs();
    for (const entry of entries) {
      if (entry.deliveries > this.o.settings.maxDeliveries) {
        dead.push({
          entry,
          reason: `delivered ${entry.deliveries} times (max ${this.o.settings.maxDeliveries})`,
        });
        continue;
      }
      let fields: string[];
      try {
        fields = decodeEntryFields(entry.raw);
      } catch (err) {
        dead.push({ entry, reason: errorMessage(err) });
        continue;
      }
      const tooLarge = frameLimitReason(fields, this.frameLimits);
      if (tooLarge !== undefined) {
        dead.push({ entry, reason: tooLarge });
        continue;
      }
      try {
        const frame = decodeFrame(fields);
        for (const f of frame.failures)
          dead.push({ entry, reason: f.reason, tick: { index: f.index, raw: f.raw } });
        for (let i = 0; i < frame.ticks.length; i++) {
          const tick = frame.ticks[i]!;
          const origin = { entry, index: frame.positions[i]! };
          const future = futureReason(tick, receivedAt, this.o.settings.maxFutureMs);
          if (future !== undefined) {
            dead.push(this.tickLetter(origin, tick, future));
            continue;
          }
          ticks.push(tick);
          origins.push(origin);
        }
      } catch (err) {
        dead.push({ entry, reason: errorMessage(err) });
      }
    }
    // However long the sink takes (retries, a slow store), keep the entries' idle time low so that live
    // consumers do not claim them while we still work on them, nor count deliveries towards dead-lettering.
    // A sink stuck for good (a flush that never returns) must not hold its entries forever: after ten
    // claim periods the heartbeat stops and live consumers take the batch over.
    const every = Math.max(10, Math.floor(this.o.settings.claimMinIdleMs / 3));
    const giveUpAt = Date.now() + 10 * this.o.settings.claimMinIdleMs;
    const heartbeat = setInterval(() => {
      if (Date.now() < giveUpAt) void this.keepClaimed(held, every);
      else clearInterval(heartbeat);
    }, every);
    try {
      // writeDurably adds one dead letter per tick the sink refused: those were not written.
      const deadBefore = dead.length;
      if (ticks.length > 0) {
        this.metrics.batch(ticks.length);
        const ok = await this.writeDurably(ticks, origins, dead);
        if (!ok) return; // stopping while the sink was down: leave everything pending for another consumer
      }
      this.stats.ticks += ticks.length - (dead.length - deadBefore);
      await this.settle(entries, dead);
      this.metrics.acked(entries, ticks);
    } finally {
      clearInterval(heartbeat);
    }
  }

  /**
   * Write and flush until durable. Retriable errors back off and retry; a non-retriable error is narrowed down
   * by halving the batch until the ticks at fault are alone, and those are dead-lettered.
   * A retriable error that is a program fault (isProgramFault: a RangeError computing with a value, say) is
   * retried TICKSTREAM_MAX_DELIVERIES times at most, then narrowed down like a non-retriable one; the halves
   * then get one attempt each (`spent`). Store outages are retried for as long as they last.
   * Returns false when asked to stop before the batch could be written.
   */
  private async writeDurably(
    ticks: Tick[],
    origins: TickOrigin[],
    dead: DeadLetter[],
    spent = false,
  ): Promise<boolean> {
    const { sink, settings } = this.o;
    let attempt = 0;
    for (;;) {
      try {
        const wrote = this.metrics.write();
        await sink.write(ticks);
        wrote();
        const flushed = this.metrics.flush();
        await sink.flush();
        flushed();
        return true;
      } catch (err) {
        if (err instanceof RejectedTicksError) {
          for (const r of err.rejections) {
            const origin = origins[r.index];
            if (origin !== undefined) dead.push(this.tickLetter(origin, ticks[r.index]!, r.reason));
          }
          return true;
        }
        const fault =
          isRetriable(err) && isProgramFault(err) && (spent || attempt + 1 >= settings.maxDeliveries);
        if (!isRetriable(err) || fault) {
          if (ticks.length === 1) {
            const reason = fault
              ? `${errorMessage(err)} (failed ${spent ? settings.maxDeliveries : attempt + 1} times; not a store outage)`
              : errorMessage(err);
            dead.push(this.tickLetter(origins[0]!, ticks[0]!, reason));
            return true;
          }
          const mid = Math.ceil(ticks.length / 2);
          return (
            (await this.writeDurably(ticks.slice(0, mid), origins.slice(0, mid), dead, fault || spent)) &&
            (await this.writeDurably(ticks.slice(mid), origins.slice(mid), dead, fault || spent))
          );
        }
        attempt++;
        this.stats.retries++;
        this.retryState.failing();
        if (this.stopping && Date.now() >= this.stopDeadline) {
          this.log.warn(
            { err, waitedForStoreMs: Math.floor(settings.shutdownTimeoutMs / 2) },
            'stopping while the store is still failing: leaving the batch pending',
          );
          return false;
        }
        let wait = backoffMs(attempt, settings.retryBaseMs, settings.retryMaxMs);
        if (this.stopping) {
          wait = Math.min(wait, Math.max(0, this.stopDeadline - Date.now()));
          this.log.warn({ err, attempt, waitMs: wait }, 'stopping: waiting for the store to take the batch');
        } else this.log.warn({ err, attempt, waitMs: wait }, 'sink write failed: retrying');
        await sleep(wait, this.stopping ? undefined : this.abort.signal);
      }
    }
  }

  private tickLetter(origin: TickOrigin, tick: Tick, reason: string): DeadLetter {
    return { entry: origin.entry, reason, tick: { index: origin.index, raw: JSON.stringify(toTuple(tick)) } };
  }

  /**
   * Reset the idle time of entries we still hold, without counting a delivery (XCLAIM ... JUSTID). Entries
   * idle for less than half a heartbeat were just taken by someone else (we refresh ours every heartbeat):
   * the min-idle argument leaves those alone instead of snatching them back.
   */
  private async keepClaimed(entries: Entry[], everyMs: number): Promise<void> {
    try {
      const commands = [...groupBy(entries, (e) => e.stream)].map(
        ([stream, list]) =>
          [
            'XCLAIM',
            stream,
            this.o.group,
            this.o.consumer,
            String(Math.floor(everyMs / 2)),
            ...list.map((e) => e.id),
            'JUSTID',
          ] as const,
      );
      orThrow(await batch(this.o.redis, commands));
    } catch (err) {
      this.log.warn({ err }, 'could not refresh claim on in-flight entries');
    }
  }

  /** Dead letters first, then XACK: a crash in between redelivers (a duplicate dead letter), never loses. */
  private async settle(entries: Entry[], dead: DeadLetter[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        // Dead letters go in their own round trip first: under Cluster a batch is not ordered across nodes.
        if (dead.length > 0) {
          orThrow(
            await batch(
              this.o.redis,
              await deadLetterCommands(
                this.o.redis,
                this.o.layout,
                dead.map((d) => this.letterOf(d)),
              ),
            ),
          );
        }
        orThrow(
          await batch(
            this.o.redis,
            [...groupBy(entries, (e) => e.stream)].flatMap(([stream, list]) => {
              const ids = list.map((e) => e.id);
              const ack = ['XACK', stream, this.o.group, ...ids] as const;
              // Only this group reads its retry stream: an entry done with is deleted, so the stream stays empty.
              return stream === this.retry ? [ack, ['XDEL', stream, ...ids] as const] : [ack];
            }),
          ),
        );
        this.stats.acked += entries.length;
        this.stats.deadLettered += dead.length;
        if (dead.length > 0) {
          this.log.warn({ count: dead.length, first: dead[0]!.reason }, 'dead-lettered');
        }
        return;
      } catch (err) {
        if (this.stopping && attempt > 3) {
          this.log.error(
            { err },
            'could not acknowledge while stopping: entries stay pending and will be redelivered',
          );
          return;
        }
        this.log.warn({ err, attempt }, 'acknowledge failed: retrying');
        await sleep(backoffMs(attempt, this.o.settings.retryBaseMs, this.o.settings.retryMaxMs));
      }
    }
  }

  private letterOf(d: DeadLetter): NewDeadLetter {
    return {
      reason: d.reason,
      stream: d.entry.stream,
      id: d.entry.id,
      group: this.o.group,
      consumer: this.o.consumer,
      deliveries: d.entry.deliveries,
      ...(d.tick !== undefined ? { tick: d.tick } : { entry: d.entry.raw }),
    };
  }

  private async ensureGroups(): Promise<void> {
    // From id 0: a new group sees everything retained, and a group recreated after a Redis restart does not
    // skip ticks added before it came back.
    const results = await batch(
      this.o.redis,
      this.streams.map((s) => ['XGROUP', 'CREATE', s, this.o.group, '0', 'MKSTREAM'] as const),
    );
    for (const [err] of results) {
      if (err !== null && !errorMessage(err).includes('BUSYGROUP')) throw err;
    }
  }
}

// KEYS[1] stream; ARGV group, this consumer, threshold (ms). Returns the names removed.
const removeIdle = new Script(`
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local removed = {}
if not ok then return removed end
local threshold = tonumber(ARGV[3])
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] ~= ARGV[2] and info['pending'] == 0 and info['idle'] >= threshold then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(removed, info['name'])
  end
end
return removed
`);

/** The worker's counters for Prometheus, read from its stats when scraped. */
const WORKER_COUNTERS: { [K in keyof WorkerStats]: string } = {
  entries: 'Stream entries processed',
  ticks: 'Ticks written to the sink',
  acked: 'Stream entries acknowledged',
  deadLettered: 'Entries or ticks dead-lettered',
  claimed: 'Entries claimed from other consumers',
  retries: 'Retriable sink failures retried',
  batches: 'Batches processed',
};

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const map = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    let list = map.get(k);
    if (list === undefined) map.set(k, (list = []));
    list.push(item);
  }
  return map;
}
