import { Counter, Gauge, Histogram } from 'prom-client';

/** Per-feed Prometheus metrics, on prom-client's default registry (served by the process's /metrics). */
export interface FeedMetrics {
  messages: Counter<'venue'>;
  ticks: Counter<'venue' | 'type'>;
  reconnects: Counter<'venue'>;
  gaps: Counter<'venue'>;
  malformed: Counter<'venue'>;
  duplicates: Counter<'venue'>;
  connected: Gauge<'venue'>;
  lag: Histogram<'venue'>;
}

let metrics: FeedMetrics | undefined;

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
    lag: new Histogram({
      name: 'tickstream_feed_lag_seconds',
      help: 'Receive time minus exchange time of each tick stamped by the venue',
      labelNames: ['venue'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    }),
  };
  return metrics;
}
