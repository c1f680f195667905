import { parentPort, workerData } from 'node:worker_threads';
import { encodeTick } from '../../shared/codec.ts';
import type { Tick } from '../../shared/model.ts';
import { shardOf } from '../../shared/streams.ts';
import { FeedConnection, type FeedLog, type FeedSettings, type FeedStats } from './connection.ts';
import { RX_MARK, type FeedEvent, type FeedMapper, type MapperSpec } from './mapper.ts';
import { HistogramSeries, LAG_BUCKETS } from './metrics.ts';

/**
 * A feed worker thread (started by source.ts, one per feed connection): it owns the venue's WebSocket and
 * the mapping (FeedConnection), and hands the main thread each read's ticks already encoded as frame rows
 * with their shards (shared/codec.ts EncodedTicks), so that the main thread only publishes. Counts, lag
 * observations, events and log lines travel with them; the main thread owns the metrics and the logger.
 * Backpressure: the worker counts the ticks it handed over that the main thread has not passed on yet (it says
 * so with `taken`); at `maxBufferedTicks` it pauses the socket, at half that it resumes. Counted here rather
 * than decided in the main thread, the pause takes effect on the very message that reaches the bound, not
 * after a round trip during which a fast socket reads on.
 */
export interface FeedWorkerInit {
  spec: MapperSpec;
  settings: FeedSettings;
  /** The streams' shard count, for the shard of each row. */
  shards: number;
}

/** `taken`: the main thread handed on `n` of the ticks it was given (backpressure credit). */
export type ToFeedWorker = { type: 'taken'; n: number } | { type: 'stop' };

export interface LagDelta {
  counts: Float64Array;
  sum: number;
  count: number;
}

export type FromFeedWorker =
  | {
      type: 'ticks';
      /** The rows joined by ','; row i ends at `ends[i]` (and the next starts one further). */
      text: string;
      ends: Uint32Array;
      shards: Uint16Array;
      trades: number;
      quotes: number;
      lag: LagDelta | undefined;
      stats: FeedStats;
    }
  | { type: 'event'; event: FeedEvent; stats: FeedStats }
  | { type: 'state'; stats: FeedStats }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; fields: object; msg: string }
  /** The connection ended (stopped, or `fatal`: the venue refused us for good); nothing follows. */
  | { type: 'end'; fatal: string | undefined; stats: FeedStats };

/** Rows handed over at once at most; a read's worth is usually far fewer. */
const MAX_CHUNK = 4096;

async function main(): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('producers/feeds/worker.ts runs as a worker thread only');
  const init = workerData as FeedWorkerInit;
  const exports = (await import(init.spec.module)) as Record<string, new (o: unknown) => FeedMapper>;
  const Mapper = exports[init.spec.name];
  if (Mapper === undefined) throw new Error(`${init.spec.module} exports no ${init.spec.name}`);
  const mapper = new Mapper(init.spec.options);
  const post = (m: FromFeedWorker, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);

  const log: FeedLog = {
    info: (fields, msg) => post({ type: 'log', level: 'info', fields, msg }),
    warn: (fields, msg) => post({ type: 'log', level: 'warn', fields, msg }),
    error: (fields, msg) => post({ type: 'log', level: 'error', fields, msg }),
  };
  const lag = new HistogramSeries([...LAG_BUCKETS]);
  // The chunk being filled: its rows joined by ',' as they come, where each ends, and its shards.
  let text = '';
  let count = 0;
  let ends = new Uint32Array(MAX_CHUNK);
  let shards = new Uint16Array(MAX_CHUNK);
  let trades = 0;
  let quotes = 0;
  let scheduled: NodeJS.Immediate | undefined;
  /** Handed over (or about to be) and not yet taken by the main thread. */
  let outstanding = 0;
  const max = init.settings.maxBufferedTicks;
  // shardOf's own cache builds a key string per call; a feed has few symbols.
  const shardOfSymbol = new Map<string, number>();

  // Every message of one socket read is mapped in one turn of the event loop: hand them over together.
  const flush = () => {
    if (scheduled !== undefined) clearImmediate(scheduled);
    scheduled = undefined;
    if (count === 0) return;
    // One string rather than one per row: structured cloning a string costs per string far more than per
    // character (profiled), and the main thread's slices of it are views, not copies. The arrays are handed
    // over (transferred), not copied.
    const delta: LagDelta | undefined =
      lag.count === 0 ? undefined : { counts: lag.counts.slice(), sum: lag.sum, count: lag.count };
    lag.clear();
    const message: FromFeedWorker = {
      type: 'ticks',
      text,
      ends: ends.subarray(0, count),
      shards: shards.subarray(0, count),
      trades,
      quotes,
      lag: delta,
      stats: connection.stats,
    };
    post(message, [ends.buffer, shards.buffer]);
    text = '';
    count = trades = quotes = 0;
    ends = new Uint32Array(MAX_CHUNK);
    shards = new Uint16Array(MAX_CHUNK);
  };

  const connection: FeedConnection = new FeedConnection(
    mapper,
    init.settings,
    {
      ticks: (ticks: readonly Tick[], receivedNs: bigint) => {
        // In doubles (to a quarter of a microsecond at today's epoch): no bigint arithmetic per tick.
        const receivedSeconds = Number(receivedNs) / 1e9;
        for (const t of ticks) {
          if (t.type === 'trade') trades++;
          else quotes++;
          if (!t.venue.endsWith(RX_MARK)) lag.observe(receivedSeconds - Number(t.ts) / 1e9);
          text = count === 0 ? encodeTick(t) : `${text},${encodeTick(t)}`;
          let shard = shardOfSymbol.get(t.symbol);
          if (shard === undefined) shardOfSymbol.set(t.symbol, (shard = shardOf(t.symbol, init.shards)));
          shards[count] = shard;
          ends[count++] = text.length;
          if (count === MAX_CHUNK) flush();
        }
        outstanding += ticks.length;
        if (outstanding >= max) {
          connection.pause();
          flush();
        }
        else scheduled ??= setImmediate(flush);
      },
      event: (event) => {
        flush(); // in order with the ticks around it
        post({ type: 'event', event, stats: connection.stats });
      },
      state: () => post({ type: 'state', stats: connection.stats }),
    },
    log,
  );

  port.on('message', (m: ToFeedWorker) => {
    if (m.type === 'taken') {
      outstanding -= m.n;
      if (outstanding < max / 2) connection.resume();
    } else connection.stop();
  });
  const fatal = await connection.run();
  flush();
  post({ type: 'end', fatal, stats: connection.stats });
}

await main();
