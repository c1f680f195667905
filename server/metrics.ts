import { Counter, Gauge, Histogram, register } from 'prom-client';
import { startProcessMetrics } from '../shared/metrics.ts';

/**
 * The server's Prometheus metrics, on prom-client's default registry (GET /metrics also shows its default
 * process metrics). A metric is created once per process and reused, so that tests building several apps in
 * one process do not register a name twice.
 */
function reuse<T>(name: string, make: () => T): T {
  return (register.getSingleMetric(name) as T | undefined) ?? make();
}

/** `collect`, when given, sets the counter from numbers kept elsewhere when it is scraped. */
export function counter<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
  collect?: (this: Counter<L>) => void,
): Counter<L> {
  return reuse(name, () => new Counter({ name, help, labelNames, ...(collect ? { collect } : {}) }));
}

export function gauge<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
  collect?: (this: Gauge<L>) => void,
): Gauge<L> {
  return reuse(name, () => new Gauge({ name, help, labelNames, ...(collect ? { collect } : {}) }));
}

export function histogram<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
  buckets: number[],
): Histogram<L> {
  return reuse(name, () => new Histogram({ name, help, labelNames, buckets }));
}

/** prom-client's default process metrics, once per process (shared/metrics.ts). */
export const ensureDefaultMetrics = startProcessMetrics;
