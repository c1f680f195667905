import { parentPort, workerData } from 'node:worker_threads';
import type { Tick } from '../../shared/model.ts';
import { FeedConnection, type FeedLog, type FeedSettings, type FeedStats } from './connection.ts';
import { TickPacker, type TickColumns } from './handover.ts';
import { RX_MARK, type FeedEvent, type FeedMapper, type MapperSpec } from './mapper.ts';
import { HistogramSeries, LAG_BUCKETS } from './metrics.ts';

/**
 * A feed worker thread (started by source.ts, one per feed connection): it owns the venue's WebSocket and
 * the mapping (FeedConnection), and hands the main thread each read's ticks in columns of typed arrays
 * (handover.ts), which the main thread turns back into ticks and publishes. Counts, lag
 * observations, events and log lines travel with them; the main thread owns the metrics and the logger.
 * Backpressure: the worker counts the ticks it handed over that the main thread has not passed on yet (it says
 * so with `taken`); at `maxBufferedTicks` it pauses the socket, at half that it resumes. Counted here rather
 * than decided in the main thread, the pause takes effect on the very message that reaches the bound, not
 * after a round trip during which a fast socket reads on.
 */
export interface FeedWorkerInit {
  spec: MapperSpec;
  settings: FeedSettings;
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
      columns: TickColumns;
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

/** Ticks handed over at once at most (a chunk's arrays are allocated at this size); a read holds fewer. */
const MAX_CHUNK = 1024;

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
  const packer = new TickPacker(MAX_CHUNK);
  let trades = 0;
  let quotes = 0;
  let scheduled: NodeJS.Immediate | undefined;
  /** Handed over (or about to be) and not yet taken by the main thread. */
  let outstanding = 0;
  const max = init.settings.maxBufferedTicks;

  // Every message of one socket read is mapped in one turn of the event loop: hand them over together.
  const flush = () => {
    if (scheduled !== undefined) clearImmediate(scheduled);
    scheduled = undefined;
    if (packer.count === 0) return;
    const delta: LagDelta | undefined =
      lag.count === 0 ? undefined : { counts: lag.counts.slice(), sum: lag.sum, count: lag.count };
    lag.clear();
    const { columns, transfer } = packer.take();
    post({ type: 'ticks', columns, trades, quotes, lag: delta, stats: connection.stats }, transfer);
    trades = quotes = 0;
  };

  const connection: FeedConnection = new FeedConnection(
    mapper,
    init.settings,
    {
      ticks: (ticks: readonly Tick[], receivedNs: bigint) => {
        // In doubles (to a quarter of a microsecond at today's epoch): no bigint arithmetic per tick.
        const receivedSeconds = Number(receivedNs) / 1e9;
        for (const t of ticks) {
          if (!packer.add(t)) {
            flush();
            packer.add(t);
          }
          if (t.type === 'trade') trades++;
          else quotes++;
          if (!t.venue.endsWith(RX_MARK)) lag.observe(receivedSeconds - Number(t.ts) / 1e9);
        }
        outstanding += ticks.length;
        if (outstanding >= max) {
          connection.pause();
          flush();
        } else scheduled ??= setImmediate(flush);
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
