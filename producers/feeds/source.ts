import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { encodeTick, type EncodedTicks } from '../../shared/codec.ts';
import { TickstreamError } from '../../shared/errors.ts';
import { once } from '../../shared/lifecycle.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Tick } from '../../shared/model.ts';
import { shardOf } from '../../shared/streams.ts';
import type { TickSource } from '../source.ts';
import { emptyFeedStats, FeedConnection, type FeedSettings, type FeedStats } from './connection.ts';
import { encodeChunks, TickUnpacker, type TickColumns } from './handover.ts';
import { RX_MARK, type FeedEvent, type FeedMapper } from './mapper.ts';
import { feedMetrics, type HistogramSeries } from './metrics.ts';
import type { FeedWorkerInit, FromFeedWorker, ToFeedWorker } from './worker.ts';

export { redactUrl, type FeedSettings, type FeedStats } from './connection.ts';

/**
 * A live feed as a TickSource: one WebSocket connection to a venue (connection.ts: heartbeats, reconnects,
 * pacing, mapping), kept open for as long as the source is iterated.
 *
 * By default (`settings.threads`, TICKSTREAM_FEED_THREADS) the connection and the mapping run in a worker
 * thread (worker.ts), which hands over each read's ticks in columns of typed arrays (handover.ts): on the main
 * thread a feed then costs little more than publishing them. `batches()` yields ticks; `encoded(shards)` yields
 * them encoded as frame rows with their shards, for `Publisher.publishEncoded`. A mapper
 * without a `spec` runs in the main thread.
 *
 * This class owns, on the main thread:
 * - backpressure: when `maxBufferedTicks` ticks wait for the publisher, the socket is paused (TCP then holds
 *   the venue back) until half have gone, so memory stays bounded whatever the venue sends (a worker is told
 *   how many were taken, and pauses its socket itself: worker.ts);
 * - the Prometheus metrics (prom-client's registry is per thread) and `stats`;
 * - events (gaps, malformed messages with their raw text truncated to `maxRawBytes`, venue errors) through
 *   `onEvent`; a refusal the venue states as final ends the iteration with a non-retriable FeedError, and so
 *   does a worker that fails.
 * `close()` unsubscribes, closes the socket and ends the iteration once what was received has been yielded;
 * then the worker is gone.
 */
export interface FeedSourceOptions {
  mapper: FeedMapper;
  settings: FeedSettings;
  log: Logger;
  onEvent?: (e: FeedEvent) => void;
}

export class FeedError extends TickstreamError {
  override name = 'FeedError';
}

/** What the worker counts that becomes a counter here, as last added. */
interface Reported {
  reconnects: number;
  gaps: number;
  malformed: number;
  duplicates: number;
}

export class FeedSource implements TickSource {
  readonly name: string;
  readonly stats: FeedStats;
  /** True when the feed runs in a worker thread. */
  readonly threaded: boolean;
  private readonly o: FeedSourceOptions;
  private readonly metrics = feedMetrics();
  private readonly venueLabel: { venue: string };
  private readonly lag: HistogramSeries;
  private readonly connection: FeedConnection | undefined;
  private worker: Worker | undefined;
  /** Received and not yet yielded: ticks (mapped on this thread), or a worker's chunks, in order. */
  private ticks: Tick[] = [];
  private chunks: TickColumns[] = [];
  private readonly unpacker = new TickUnpacker();
  private waiting = 0;
  private wake: (() => void) | undefined;
  private paused = false;
  private running: Promise<void> | undefined;
  private closing = false;
  private ended = false;
  private failure: FeedError | undefined;
  /**
   * Counts not yet added to the Prometheus counters: prom-client hashes the labels on every `inc`, which per
   * message cost as much as the mapping itself, so they are added once per batch handed to the publisher.
   */
  private readonly unreported = { messages: 0, trades: 0, quotes: 0 };
  private readonly reported: Reported = { reconnects: 0, gaps: 0, malformed: 0, duplicates: 0 };
  private reportedMessages = 0;

  constructor(options: FeedSourceOptions) {
    this.o = options;
    const { mapper } = options;
    this.name = `feed:${mapper.venue}`;
    this.venueLabel = { venue: mapper.venue };
    this.lag = this.metrics.lag.venue(mapper.venue);
    this.threaded = options.settings.threads !== false && mapper.spec !== undefined;
    if (this.threaded) {
      this.stats = emptyFeedStats();
      this.connection = undefined;
    } else {
      this.connection = new FeedConnection(
        mapper,
        options.settings,
        {
          ticks: (ticks, receivedNs) => this.onTicks(ticks, receivedNs),
          event: (e) => this.onEvent(e),
          state: () => this.syncCounters(),
        },
        options.log,
      );
      this.stats = this.connection.stats;
    }
  }

  /** The received ticks, in batches (the TickSource port). */
  async *batches(): AsyncIterable<readonly Tick[]> {
    this.start();
    for (;;) {
      if (this.chunks.length > 0) {
        const chunks = this.chunks;
        this.chunks = [];
        const batch =
          chunks.length === 1
            ? this.unpacker.unpack(chunks[0]!)
            : chunks.flatMap((c) => this.unpacker.unpack(c));
        this.taken(batch.length);
        yield batch;
        continue;
      }
      if (this.ticks.length > 0) {
        const batch = this.ticks;
        this.ticks = [];
        this.taken(batch.length);
        yield batch;
        continue;
      }
      this.reportCounts();
      if (this.ended) break;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * The received ticks encoded as frame rows for streams of `shards` shards, for `Publisher.publishEncoded`.
   */
  async *encoded(shards: number): AsyncIterable<EncodedTicks> {
    this.start();
    for (;;) {
      if (this.chunks.length > 0) {
        // A worker's chunks become rows straight from their columns: no tick objects on this thread.
        const chunks = this.chunks;
        this.chunks = [];
        const batch = encodeChunks(this.unpacker, chunks, shards);
        this.taken(batch.rows.length);
        yield batch;
        continue;
      }
      if (this.ticks.length > 0) {
        const batch = this.ticks;
        this.ticks = [];
        this.taken(batch.length);
        const rows = new Array<string>(batch.length);
        const shardOfRow = new Uint16Array(batch.length);
        for (let i = 0; i < batch.length; i++) {
          const t = batch[i]!;
          rows[i] = encodeTick(t);
          shardOfRow[i] = shardOf(t.symbol, shards);
        }
        yield { rows, shards: shardOfRow, shardCount: shards };
        continue;
      }
      this.reportCounts();
      if (this.ended) break;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /** Unsubscribe, close the socket and end the iteration once what was received has been yielded. */
  readonly close = once(async () => {
    this.closing = true;
    if (this.connection !== undefined) this.connection.stop();
    else this.post({ type: 'stop' });
    this.notify();
    await this.running;
  });

  private start(): void {
    if (this.running !== undefined) return;
    if (this.closing) {
      this.ended = true; // closed before it was iterated: nothing to connect
      return;
    }
    const finished = this.connection !== undefined ? this.runHere(this.connection) : this.runWorker();
    this.running = finished.finally(() => {
      this.ended = true;
      this.syncCounters();
      this.notify();
    });
  }

  private async runHere(connection: FeedConnection): Promise<void> {
    const fatal = await connection.run();
    if (fatal !== undefined) this.failure = new FeedError(fatal, { retriable: false });
  }

  private runWorker(): Promise<void> {
    const init: FeedWorkerInit = { spec: this.o.mapper.spec!, settings: this.o.settings };
    const worker = (this.worker = startFeedWorker(init));
    let ended = false;
    worker.on('message', (m: FromFeedWorker) => {
      switch (m.type) {
        case 'ticks': {
          this.chunks.push(m.columns);
          this.unreported.trades += m.trades;
          this.unreported.quotes += m.quotes;
          if (m.lag !== undefined) this.lag.merge(m.lag.counts, m.lag.sum, m.lag.count);
          Object.assign(this.stats, m.stats);
          this.received(m.columns.kinds.length);
          return;
        }
        case 'event':
          Object.assign(this.stats, m.stats);
          this.onEvent(m.event);
          return;
        case 'state':
          Object.assign(this.stats, m.stats);
          this.syncCounters();
          return;
        case 'log':
          this.o.log[m.level](m.fields, m.msg);
          return;
        case 'end':
          ended = true;
          Object.assign(this.stats, m.stats);
          if (m.fatal !== undefined) this.failure = new FeedError(m.fatal, { retriable: false });
          // Everything it sent has arrived (messages keep their order): the thread can go.
          void worker.terminate();
          return;
      }
    });
    return new Promise<void>((resolve) => {
      worker.on('error', (err) => {
        ended = true;
        this.failure ??= new FeedError(`the feed worker failed: ${err.message}`, {
          retriable: false,
          cause: err,
        });
      });
      worker.on('exit', (code) => {
        this.worker = undefined;
        this.stats.connected = false;
        if (!ended)
          this.failure ??= new FeedError(`the feed worker exited with code ${code}`, { retriable: false });
        resolve();
      });
    });
  }

  private post(m: ToFeedWorker): void {
    this.worker?.postMessage(m);
  }

  private onTicks(ticks: readonly Tick[], receivedNs: bigint): void {
    const u = this.unreported;
    for (const t of ticks) {
      if (t.type === 'trade') u.trades++;
      else u.quotes++;
      if (!t.venue.endsWith(RX_MARK)) this.lag.observe(Number(receivedNs - t.ts) / 1e9);
      this.ticks.push(t);
    }
    this.received(ticks.length);
  }

  /**
   * `n` more ticks wait: past the bound, the socket is paused. A worker counts them itself (worker.ts), from
   * what it handed over and the `taken` messages.
   */
  private received(n: number): void {
    this.waiting += n;
    if (this.connection !== undefined && this.waiting >= this.o.settings.maxBufferedTicks && !this.paused) {
      this.paused = true;
      this.connection.pause();
    }
    this.notify();
  }

  /** `n` ticks handed on: at half the bound, the socket reads again. */
  private taken(n: number): void {
    this.waiting -= n;
    if (this.connection === undefined) this.post({ type: 'taken', n });
    else if (this.paused && this.waiting < this.o.settings.maxBufferedTicks / 2) {
      this.paused = false;
      this.connection.resume();
    }
    this.reportCounts();
  }

  private onEvent(e: FeedEvent): void {
    this.syncCounters();
    this.o.onEvent?.(e);
  }

  private reportCounts(): void {
    const u = this.unreported;
    const venue = this.o.mapper.venue;
    const messages = this.stats.messages - this.reportedMessages;
    this.reportedMessages = this.stats.messages;
    if (messages > 0) this.metrics.messages.inc(this.venueLabel, messages);
    if (u.trades > 0) this.metrics.ticks.inc({ venue, type: 'trade' }, u.trades);
    if (u.quotes > 0) this.metrics.ticks.inc({ venue, type: 'quote' }, u.quotes);
    u.trades = u.quotes = 0;
    this.syncCounters();
  }

  /** Add to the event counters what `stats` gained since, and set the connection gauge. */
  private syncCounters(): void {
    const r = this.reported;
    const s = this.stats;
    const m = this.metrics;
    if (s.reconnects > r.reconnects) m.reconnects.inc(this.venueLabel, s.reconnects - r.reconnects);
    if (s.gaps > r.gaps) m.gaps.inc(this.venueLabel, s.gaps - r.gaps);
    if (s.malformed > r.malformed) m.malformed.inc(this.venueLabel, s.malformed - r.malformed);
    if (s.duplicates > r.duplicates) m.duplicates.inc(this.venueLabel, s.duplicates - r.duplicates);
    r.reconnects = s.reconnects;
    r.gaps = s.gaps;
    r.malformed = s.malformed;
    r.duplicates = s.duplicates;
    m.connected.set(this.venueLabel, s.connected ? 1 : 0);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

/**
 * Start worker.ts next to this module: worker.js in the compiled build (dist/), worker.ts under tsx. Node 20
 * does not apply tsx's loader to a worker's entry (privatenumber/tsx#354), so under tsx the worker is a small
 * bootstrap that registers tsx in the thread and then imports the TypeScript entry.
 */
export function startFeedWorker(init: FeedWorkerInit): Worker {
  const url = feedWorkerUrl();
  if (url.pathname.endsWith('.js')) return new Worker(url, { workerData: init });
  const tsx = tsxEsmApi();
  const bootstrap = `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(url.href)}); });`;
  return new Worker(bootstrap, { eval: true, workerData: init });
}

/**
 * The URL of tsx's `tsx/esm/api` (its ES module entry, which `register()`s the loader in the calling thread),
 * found through tsx's own export map: `import.meta.resolve` is not there under vitest, and `require.resolve`
 * picks the CommonJS entry.
 */
function tsxEsmApi(): string {
  const manifest = createRequire(import.meta.url).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as {
    exports: Record<string, { import?: { default?: string } } | string>;
  };
  const entry = pkg.exports['./esm/api'];
  const path = typeof entry === 'object' ? entry.import?.default : undefined;
  if (path === undefined) throw new Error('tsx exports no ES module "./esm/api"');
  return new URL(path, pathToFileURL(manifest)).href;
}

/** worker.js beside a compiled source.js, worker.ts beside source.ts. */
export function feedWorkerUrl(): URL {
  return new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url);
}
