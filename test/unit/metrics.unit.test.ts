import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { loadConfig } from '../../shared/config.ts';
import { Publisher, sharedPublisherMetrics } from '../../producers/publisher.ts';
import type { RedisClient } from '../../shared/redis.ts';
import {
  exposeCounters,
  observeIndicatorJob,
  publisherInstruments,
  registry,
  scrapedGauge,
  sinkInstruments,
  startProcessMetrics,
} from '../../shared/metrics.ts';
import { readiness, RetryState, serveProbes, type ProbeServer } from '../../shared/probes.ts';
import type { Tick } from '../../shared/model.ts';

interface MetricJson {
  name: string;
  type: string;
  values: { labels: Record<string, string | number>; value: number; metricName?: string }[];
}

async function metric(name: string): Promise<MetricJson> {
  const all = (await registry.getMetricsAsJSON()) as unknown as MetricJson[];
  const m = all.find((x) => x.name === name);
  if (m === undefined) throw new Error(`no metric ${name}; have ${all.map((x) => x.name).join(', ')}`);
  return m;
}

/** The _count sample of a histogram for a label set. */
function countOf(m: MetricJson, labels: Record<string, string>): number | undefined {
  return m.values.find(
    (v) =>
      v.metricName === `${m.name}_count` && Object.entries(labels).every(([k, val]) => v.labels[k] === val),
  )?.value;
}

function labelSets(m: MetricJson): string[] {
  return [...new Set(m.values.map((v) => Object.keys(v.labels).sort().join(',')))];
}

const trade = (tsMs: number): Tick => ({
  type: 'trade',
  source: 's',
  symbol: 'AAPL',
  ts: BigInt(tsMs) * 1_000_000n,
  seq: 0,
  venue: '',
  price: 1,
  size: 1,
  side: '',
});

describe('sink instruments', () => {
  it('records batch size, write/flush durations and ack ages under {group, sink[, from]}', async () => {
    const m = sinkInstruments('g1', 'quotes');
    m.batch(120);
    m.write()();
    m.flush()();
    const now = Date.now();
    // Two entries, four ticks: one stream age per entry, and one tick per entry taken evenly (ticks 0 and 2).
    m.acked(
      [{ id: `${now - 2000}-0` }, { id: `${now - 1000}-3` }],
      [trade(now - 5000), trade(now - 4000), trade(now - 3000), trade(now - 10)],
    );

    const batch = await metric('tickstream_sink_batch_ticks');
    expect(batch.type).toBe('histogram');
    expect(labelSets(batch)).toEqual(['group,le,sink', 'group,sink']);
    expect(countOf(batch, { group: 'g1', sink: 'quotes' })).toBe(1);
    const sum = batch.values.find((v) => v.metricName === 'tickstream_sink_batch_ticks_sum');
    expect(sum?.value).toBe(120);

    for (const name of ['tickstream_sink_write_seconds', 'tickstream_sink_flush_seconds']) {
      const h = await metric(name);
      expect(labelSets(h), name).toEqual(['group,le,sink', 'group,sink']);
      expect(countOf(h, { group: 'g1', sink: 'quotes' }), name).toBe(1);
    }

    const age = await metric('tickstream_sink_ack_age_seconds');
    expect(labelSets(age)).toEqual(['from,group,le,sink', 'from,group,sink']);
    expect(countOf(age, { group: 'g1', from: 'stream' })).toBe(2);
    expect(countOf(age, { group: 'g1', from: 'exchange' })).toBe(2);
    const ageSum = (from: string) =>
      age.values.find(
        (v) => v.metricName === 'tickstream_sink_ack_age_seconds_sum' && v.labels.from === from,
      )!.value;
    // Stream ages 2 s + 1 s; exchange ages of ticks 0 and 2: 5 s + 3 s (give or take the test's own runtime).
    expect(ageSum('stream')).toBeGreaterThanOrEqual(3);
    expect(ageSum('stream')).toBeLessThan(3.5);
    expect(ageSum('exchange')).toBeGreaterThanOrEqual(8);
    expect(ageSum('exchange')).toBeLessThan(8.5);
  });

  it('observes nothing for an empty acknowledgement', async () => {
    const m = sinkInstruments('g-empty', 'archive');
    m.acked([], []);
    const age = await metric('tickstream_sink_ack_age_seconds');
    expect(countOf(age, { group: 'g-empty' }) ?? 0).toBe(0);
  });
});

describe('producer and indicator instruments', () => {
  it('labels publish latency and pauses by source, indicator jobs by queue and outcome', async () => {
    const p = publisherInstruments('synthetic', () => ({ ticks: 3, frames: 1 }));
    p.publish()();
    p.paused(1500);
    const latency = await metric('tickstream_producer_publish_seconds');
    expect(labelSets(latency)).toEqual(['le,source', 'source']);
    expect(countOf(latency, { source: 'synthetic' })).toBe(1);
    const pause = await metric('tickstream_producer_pause_seconds');
    expect(countOf(pause, { source: 'synthetic' })).toBe(1);
    expect((await metric('tickstream_producer_ticks_total')).values).toEqual([
      { labels: { source: 'synthetic' }, value: 3 },
    ]);
    expect(pause.values.find((v) => v.metricName === 'tickstream_producer_pause_seconds_sum')?.value).toBe(
      1.5,
    );

    observeIndicatorJob('ind', 'completed', 0.2);
    observeIndicatorJob('ind', 'failed', 0.1);
    const job = await metric('tickstream_indicator_job_seconds');
    expect(labelSets(job)).toEqual(['le,outcome,queue', 'outcome,queue']);
    expect(countOf(job, { queue: 'ind', outcome: 'completed' })).toBe(1);
    expect(countOf(job, { queue: 'ind', outcome: 'failed' })).toBe(1);
  });
});

describe('short-lived publishers of one source', () => {
  it('share one scrape source: one sample per label set, summing every publisher', async () => {
    const settings = { ...loadConfig({ env: {} }).producer, source: 'kafka-shared' };
    const shared = sharedPublisherMetrics(settings.source);
    const before = (await registry.metrics()).split('\n').length;
    for (let i = 0; i < 50; i++) {
      // Not connected: constructing one must not touch Redis, only the metrics.
      const p = new Publisher({
        redis: {} as RedisClient,
        layout: { prefix: 'ticks', shards: 2 },
        settings,
        log: pino({ level: 'silent' }),
        shared,
      });
      p.stats.ticks += 2;
    }
    const ticks = (await metric('tickstream_producer_ticks_total')).values.filter(
      (v) => v.labels.source === 'kafka-shared',
    );
    expect(ticks).toEqual([{ labels: { source: 'kafka-shared' }, value: 100 }]);
    // The exposition does not grow with the number of publishers.
    expect((await registry.metrics()).split('\n').length).toBe(before);
  });
});

describe('counters read from stats', () => {
  it('names them <prefix>_<snake_case>_total, reads them when scraped and adds up equal label sets', async () => {
    const a = { entries: 1, deadLettered: 2, ignored: 9 };
    const b = { entries: 10, deadLettered: 0, ignored: 9 };
    const help = { entries: 'Entries', deadLettered: 'Dead letters' };
    exposeCounters('tickstream_test', { group: 'g', sink: 's' }, () => a, help);
    exposeCounters('tickstream_test', { group: 'g', sink: 's' }, () => b, help);
    exposeCounters('tickstream_test', { group: 'h', sink: 's' }, () => b, help);
    a.entries = 5;
    const entries = await metric('tickstream_test_entries_total');
    expect(entries.type).toBe('counter');
    expect(entries.values).toEqual(
      expect.arrayContaining([
        { labels: { group: 'g', sink: 's' }, value: 15 },
        { labels: { group: 'h', sink: 's' }, value: 10 },
      ]),
    );
    expect((await metric('tickstream_test_dead_lettered_total')).values).toContainEqual({
      labels: { group: 'g', sink: 's' },
      value: 2,
    });
    await expect(metric('tickstream_test_ignored_total')).rejects.toThrow(/no metric/);
  });
});

describe('scraped gauges', () => {
  it('reads values at scrape time and keeps the last ones when reading fails', async () => {
    let fail = false;
    let lag = 7;
    scrapedGauge('tickstream_test_lag', 'lag', ['group', 'stream'], async () => {
      if (fail) throw new Error('redis down');
      return [{ labels: { group: 'g', stream: 'ticks:{0}' }, value: lag }];
    });
    expect((await metric('tickstream_test_lag')).values).toEqual([
      { labels: { group: 'g', stream: 'ticks:{0}' }, value: 7 },
    ]);
    fail = true;
    lag = 9;
    expect((await metric('tickstream_test_lag')).values[0]?.value).toBe(7);
    fail = false;
    expect((await metric('tickstream_test_lag')).values[0]?.value).toBe(9);
  });
});

describe('default process metrics', () => {
  it('include CPU, memory, event-loop lag, GC and handles', async () => {
    startProcessMetrics();
    startProcessMetrics(); // idempotent: registering twice would throw
    const names = ((await registry.getMetricsAsJSON()) as unknown as MetricJson[]).map((m) => m.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'process_cpu_seconds_total',
        'process_resident_memory_bytes',
        'nodejs_eventloop_lag_seconds',
        'nodejs_eventloop_lag_p99_seconds',
        'nodejs_gc_duration_seconds',
        'nodejs_active_handles_total',
        'nodejs_heap_size_used_bytes',
      ]),
    );
  });
});

describe('probe server', () => {
  let server: ProbeServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('serves /metrics, /healthz and /readyz on the given host, 404 elsewhere', async () => {
    server = await serveProbes({ host: '127.0.0.1', port: 0 });
    const base = `http://127.0.0.1:${server.port}`;
    expect(server.server.address()).toMatchObject({ address: '127.0.0.1' });

    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await metrics.text()).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);

    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.text()).toBe('ok\n');

    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, checks: {} });

    expect((await fetch(`${base}/other`)).status).toBe(404);
    expect((await fetch(`${base}/healthz`, { method: 'POST' })).status).toBe(405);
  });

  it('answers 503 with the failing checks, and 200 again once they pass', async () => {
    let redisUp = false;
    server = await serveProbes({
      host: '127.0.0.1',
      port: 0,
      checkTimeoutMs: 100,
      checks: [
        {
          name: 'redis',
          check: async () => {
            if (!redisUp) throw new Error('connect ECONNREFUSED');
          },
        },
        { name: 'postgres', check: async () => undefined },
      ],
    });
    const url = `http://127.0.0.1:${server.port}/readyz`;
    let res = await fetch(url);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({
      ready: false,
      checks: { redis: 'connect ECONNREFUSED', postgres: 'ok' },
    });
    // Liveness does not depend on the stores.
    expect((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status).toBe(200);
    redisUp = true;
    res = await fetch(url);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ready: true, checks: { redis: 'ok', postgres: 'ok' } });
  });

  it('fails a check that does not answer within the timeout', async () => {
    const r = await readiness([{ name: 'slow', check: () => new Promise(() => undefined) }], 30);
    expect(r).toEqual({ ready: false, checks: { slow: 'no answer within 30 ms' } });
  });
});

describe('RetryState', () => {
  it('is unready only after failing without a success for longer than the threshold', async () => {
    let now = 1000;
    const state = new RetryState(() => now);
    const check = state.check('worker', 5000);
    await expect(check.check()).resolves.toBeUndefined();
    state.failing();
    now += 3000;
    state.failing(); // a later failure does not restart the clock
    now += 2500;
    expect(state.failingForMs()).toBe(5500);
    await expect(check.check()).rejects.toThrow('retrying without success for 6 s (limit 5000 ms)');
    state.ok();
    expect(state.failingForMs()).toBe(0);
    await expect(check.check()).resolves.toBeUndefined();
  });
});

describe('metrics configuration', () => {
  it('binds loopback by default; TICKSTREAM_METRICS_HOST and TICKSTREAM_READY_STUCK_MS override', () => {
    const defaults = loadConfig({ env: {} }).metrics;
    expect(defaults).toEqual({ port: 0, host: '127.0.0.1', readyStuckMs: 60_000 });
    const set = loadConfig({
      env: {
        TICKSTREAM_METRICS_HOST: '0.0.0.0',
        TICKSTREAM_METRICS_PORT: '9464',
        TICKSTREAM_READY_STUCK_MS: '5000',
      },
    }).metrics;
    expect(set).toEqual({ port: 9464, host: '0.0.0.0', readyStuckMs: 5000 });
    expect(() => loadConfig({ env: { TICKSTREAM_METRICS_HOST: ' ' } })).toThrow(/TICKSTREAM_METRICS_HOST/);
  });
});
