import { collectDefaultMetrics, Counter, Gauge, Histogram, register } from 'prom-client';
import type { Tick } from './model.ts';

/**
 * The process's Prometheus metrics, through prom-client's default registry, so that every component of a
 * process (a group worker, the publisher, the indicator worker, the read-side server's caches) lands on one
 * `/metrics` page (shared/probes.ts serves it).
 *
 * Metrics are created on first use and looked up by name afterwards: a process exposes what it runs, and
 * several instances of a component in one process (tests, benchmarks) share one metric, told apart by labels.
 *
 * Counters that components already keep as plain stats objects (worker.stats, ingest.stats) are read when
 * scraped (`exposeCounters`), so the hot path does not pay for a second increment.
 */
export const registry = register;

let processMetricsOn = false;

/** prom-client's default process metrics: CPU, memory, event-loop lag, GC, handles. Idempotent. */
export function startProcessMetrics(): void {
  if (processMetricsOn || register.getSingleMetric('process_cpu_user_seconds_total') !== undefined) return;
  processMetricsOn = true;
  // 10 ms resolution for the event-loop lag histogram: the tail we are after is a few milliseconds wide.
  collectDefaultMetrics({ register, eventLoopMonitoringPrecision: 10 });
}

/** The exposition text and its content type, for any HTTP server that serves /metrics. */
export async function metricsText(): Promise<{ contentType: string; body: string }> {
  return { contentType: register.contentType, body: await register.metrics() };
}

/** Seconds, from 100 µs to a minute: the spread between a Redis HSET and a PostgreSQL flush under load. */
export const DURATION_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];
/** Seconds from exchange time (or stream entry time) to acknowledgement: 1 ms up to minutes of backlog. */
export const AGE_BUCKETS = [
  0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
  60, 300,
];
/** Ticks per batch. */
export const SIZE_BUCKETS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000];

function histogram(name: string, help: string, labelNames: readonly string[], buckets: number[]) {
  const found = register.getSingleMetric(name);
  if (found !== undefined) return found as Histogram;
  return new Histogram({ name, help, labelNames, buckets, registers: [register] });
}

type Sample = { labels: Record<string, string>; value: number };

/**
 * A gauge whose value is read when scraped. `read` may be async (a Redis round trip); when it fails the
 * gauge keeps its last values rather than failing the whole scrape.
 */
export function scrapedGauge(
  name: string,
  help: string,
  labelNames: readonly string[],
  read: () => Promise<Sample[]>,
): Gauge {
  if (register.getSingleMetric(name) !== undefined) register.removeSingleMetric(name);
  return new Gauge({
    name,
    help,
    labelNames,
    registers: [register],
    async collect() {
      const values = await read().catch(() => undefined);
      if (values === undefined) return;
      this.reset();
      for (const v of values) this.set(v.labels, v.value);
    },
  });
}

/** A counter kept elsewhere (a server-side count such as a group's entries-read), read when scraped. */
export function scrapedCounter(
  name: string,
  help: string,
  labelNames: readonly string[],
  read: () => Promise<Sample[]>,
): Counter {
  if (register.getSingleMetric(name) !== undefined) register.removeSingleMetric(name);
  return new Counter({
    name,
    help,
    labelNames,
    registers: [register],
    async collect() {
      const values = await read().catch(() => undefined);
      if (values === undefined) return;
      this.reset();
      for (const v of values) this.inc(v.labels, Math.max(0, v.value));
    },
  });
}

interface StatsSource {
  labels: Record<string, string>;
  read: () => number;
}
const statsSources = new Map<string, StatsSource[]>();

/**
 * Expose numeric fields of a stats object as counters `<prefix>_<field in snake_case>_total{labels}`, read
 * when scraped. Sources with the same labels add up (two workers of one group in one process).
 */
export function exposeCounters<S extends object>(
  prefix: string,
  labels: Record<string, string>,
  stats: () => S,
  help: { [K in keyof S]?: string },
): void {
  for (const [field, text] of Object.entries(help) as [keyof S & string, string | undefined][]) {
    if (text === undefined) continue;
    const name = `${prefix}_${field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}_total`;
    let sources = statsSources.get(name);
    if (sources === undefined) {
      const list: StatsSource[] = (sources = []);
      statsSources.set(name, list);
      if (register.getSingleMetric(name) !== undefined) register.removeSingleMetric(name);
      new Counter({
        name,
        help: text,
        labelNames: Object.keys(labels),
        registers: [register],
        collect() {
          this.reset();
          for (const s of list) this.inc(s.labels, s.read());
        },
      });
    }
    sources.push({ labels, read: () => Number(stats()[field]) || 0 });
  }
}

/** Seconds since a stream id's millisecond part (`<ms>-<seq>`). */
function idAgeSeconds(id: string, nowMs: number): number {
  const dash = id.indexOf('-');
  return Math.max(0, (nowMs - Number(dash < 0 ? id : id.slice(0, dash))) / 1000);
}

export interface SinkInstruments {
  /** Ticks handed to one sink.write (after decoding, before any split). */
  batch(ticks: number): void;
  /** Start timing sink.write / sink.flush; call the returned function when it resolved. */
  write(): () => void;
  flush(): () => void;
  /**
   * After XACK: the age of each acknowledged entry (now − stream id time) and of one tick per entry, taken
   * evenly across the batch (now − exchange time). One observation per entry rather than per tick keeps the
   * cost flat (a histogram observation costs about a microsecond) while weighting by entries, which under
   * load hold full frames.
   */
  acked(entries: readonly { id: string }[], ticks: readonly Tick[]): void;
}

/** Histograms of one consumer group's sink, labelled {group, sink}. */
export function sinkInstruments(group: string, sink: string): SinkInstruments {
  const labels = ['group', 'sink'];
  const batch = histogram(
    'tickstream_sink_batch_ticks',
    'Ticks per sink write (one read batch)',
    labels,
    SIZE_BUCKETS,
  ).labels(group, sink);
  const write = histogram(
    'tickstream_sink_write_seconds',
    'Duration of a successful sink.write',
    labels,
    DURATION_BUCKETS,
  ).labels(group, sink);
  const flush = histogram(
    'tickstream_sink_flush_seconds',
    'Duration of a successful sink.flush (the durable write)',
    labels,
    DURATION_BUCKETS,
  ).labels(group, sink);
  const age = histogram(
    'tickstream_sink_ack_age_seconds',
    'Age of a tick when its stream entry was acknowledged: since exchange time (from="exchange") or since ' +
      'the stream entry was added (from="stream")',
    [...labels, 'from'],
    AGE_BUCKETS,
  );
  const fromExchange = age.labels(group, sink, 'exchange');
  const fromStream = age.labels(group, sink, 'stream');
  const timer = (h: { observe(v: number): void }) => () => {
    const started = performance.now();
    return () => h.observe((performance.now() - started) / 1000);
  };
  return {
    batch: (n) => batch.observe(n),
    write: timer(write),
    flush: timer(flush),
    acked(entries, ticks) {
      if (entries.length === 0) return;
      const nowMs = Date.now();
      for (const e of entries) fromStream.observe(idAgeSeconds(e.id, nowMs));
      if (ticks.length === 0) return;
      const nowNs = BigInt(nowMs) * 1_000_000n;
      const step = ticks.length / entries.length;
      for (let i = 0; i < entries.length; i++) {
        const t = ticks[Math.min(ticks.length - 1, Math.floor(i * step))]!;
        fromExchange.observe(Math.max(0, Number(nowNs - t.ts) / 1e9));
      }
    },
  };
}

export interface PublisherInstruments {
  /** Start timing one XADD (a frame) until Redis acknowledged it. */
  publish(): () => void;
  /** A backpressure pause ended after this many milliseconds. */
  paused(ms: number): void;
}

/** Histograms of a producer, and its counters read from `stats`, labelled {source}. */
export function publisherInstruments(
  source: string,
  stats: () => { ticks: number; frames: number },
): PublisherInstruments {
  exposeCounters('tickstream_producer', { source }, stats, {
    ticks: 'Ticks acknowledged by Redis',
    frames: 'Frames (stream entries) added',
  });
  const latency = histogram(
    'tickstream_producer_publish_seconds',
    'Time from sending a frame (XADD) to Redis acknowledging it',
    ['source'],
    DURATION_BUCKETS,
  ).labels(source);
  const pause = histogram(
    'tickstream_producer_pause_seconds',
    'Length of each backpressure pause (slowest group above the high-water mark)',
    ['source'],
    DURATION_BUCKETS,
  ).labels(source);
  return {
    publish: () => {
      const started = performance.now();
      return () => latency.observe((performance.now() - started) / 1000);
    },
    paused: (ms) => pause.observe(ms / 1000),
  };
}

/** Duration of one indicator job, labelled {queue, outcome}: completed or failed. */
export function observeIndicatorJob(queue: string, outcome: 'completed' | 'failed', seconds: number): void {
  histogram(
    'tickstream_indicator_job_seconds',
    'Duration of an indicator job, from start of processing to completion or failure',
    ['queue', 'outcome'],
    DURATION_BUCKETS,
  ).observe({ queue, outcome }, Math.max(0, seconds));
}
