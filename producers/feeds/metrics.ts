import { Counter, Gauge, register, type Metric } from 'prom-client';

/** Per-feed Prometheus metrics, on prom-client's default registry (served by the process's /metrics). */
export interface FeedMetrics {
  messages: Counter<'venue'>;
  ticks: Counter<'venue' | 'type'>;
  reconnects: Counter<'venue'>;
  gaps: Counter<'venue'>;
  malformed: Counter<'venue'>;
  duplicates: Counter<'venue'>;
  connected: Gauge<'venue'>;
  lag: TickHistogram;
}

let metrics: FeedMetrics | undefined;

/** The lag histogram's buckets (seconds), also used by feed workers for the series they send over. */
export const LAG_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** One set per process: prom-client refuses to register a name twice. */
export function feedMetrics(): FeedMetrics {
  metrics ??= {
    messages: new Counter({
      name: 'tickstream_feed_messages_total',
      help: 'WebSocket messages received from the venue',
      labelNames: ['venue'],
    }),
    ticks: new Counter({
      name: 'tickstream_feed_ticks_total',
      help: 'Ticks mapped from the venue and handed to the publisher',
      labelNames: ['venue', 'type'],
    }),
    reconnects: new Counter({
      name: 'tickstream_feed_reconnects_total',
      help: 'Connections lost and opened again',
      labelNames: ['venue'],
    }),
    gaps: new Counter({
      name: 'tickstream_feed_gaps_total',
      help: 'Sequence gaps: venue messages that never arrived',
      labelNames: ['venue'],
    }),
    malformed: new Counter({
      name: 'tickstream_feed_malformed_total',
      help: 'Messages that could not be mapped (kept in the feed events stream)',
      labelNames: ['venue'],
    }),
    duplicates: new Counter({
      name: 'tickstream_feed_duplicates_total',
      help: 'Messages seen before (replayed after a reconnect) and dropped',
      labelNames: ['venue'],
    }),
    connected: new Gauge({
      name: 'tickstream_feed_connected',
      help: '1 while the feed connection is open',
      labelNames: ['venue'],
    }),
    lag: new TickHistogram({
      name: 'tickstream_feed_lag_seconds',
      help: 'Receive time minus exchange time of each tick stamped by the venue',
      buckets: LAG_BUCKETS,
    }),
  };
  return metrics;
}

/** One venue's series of a TickHistogram: counts per bucket (the last one is +Inf), their sum and count. */
export class HistogramSeries {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  /** Add another series' observations (same buckets), e.g. those a feed worker made. */
  merge(counts: Float64Array, sum: number, count: number): void {
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += counts[i] ?? 0;
    this.sum += sum;
    this.count += count;
  }

  /** Forget every observation (after they were sent elsewhere). */
  clear(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

/**
 * A histogram labelled by venue, observed once per tick on the feed's hot path. prom-client's Histogram
 * validates and hashes its labels on every `observe`, which cost a producer as much per tick as mapping the
 * message (profiled); here a venue's series is looked up once and an observation is a bucket search and three
 * additions. It registers in prom-client's default registry and exposes what a prom-client Histogram does
 * (cumulative `_bucket` series with `le`, `_sum`, `_count`), so scrapes cannot tell them apart.
 */
export class TickHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly bounds: readonly number[];
  private readonly series = new Map<string, HistogramSeries>();

  constructor(o: { name: string; help: string; buckets: readonly number[] }) {
    this.name = o.name;
    this.help = o.help;
    this.bounds = [...o.buckets].sort((a, b) => a - b);
    register.registerMetric(this as unknown as Metric);
  }

  /** The series of `venue`, to keep and observe into. */
  venue(venue: string): HistogramSeries {
    let s = this.series.get(venue);
    if (s === undefined) this.series.set(venue, (s = new HistogramSeries(this.bounds)));
    return s;
  }

  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const [venue, s] of this.series) {
      let cumulative = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += s.counts[i]!;
        values.push({
          labels: { le: i < this.bounds.length ? this.bounds[i]! : '+Inf', venue },
          value: cumulative,
          metricName: `${this.name}_bucket`,
        });
      }
      values.push({ labels: { venue }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { venue }, value: s.count, metricName: `${this.name}_count` });
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }

  reset(): void {
    this.series.clear();
  }
}
