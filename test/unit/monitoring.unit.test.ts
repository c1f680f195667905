import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { exposeGroupGauges } from '../../cli/commands/consume.ts';
import { GroupWorker } from '../../consumers/worker.ts';
import type { Sink } from '../../consumers/sink.ts';
import { exposeIngestMetrics, type KafkaIngest } from '../../producers/kafka.ts';
import { loadConfig } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import {
  observeIndicatorJob,
  publisherInstruments,
  registry,
  sinkInstruments,
  startProcessMetrics,
} from '../../shared/metrics.ts';
import type { RedisClient } from '../../shared/redis.ts';

/**
 * No Prometheus or Grafana runs here, so their configuration is checked by reading it, as the compose file
 * is: Prometheus scrapes every process compose runs on the port it serves, the exporters and QuestDB; the
 * dashboard covers what operators look at and only queries metrics that exist.
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, 'utf8');

interface Service {
  image?: string;
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  profiles?: string[];
}
const compose = parse(read('docker-compose.yml'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;

interface ScrapeConfig {
  job_name: string;
  dns_sd_configs?: { names: string[]; type: string; port: number }[];
  static_configs?: { targets: string[] }[];
}
const prometheus = parse(read('infra/prometheus/prometheus.yml')) as {
  global: { scrape_interval: string };
  scrape_configs: ScrapeConfig[];
};
const job = (name: string): ScrapeConfig => {
  const j = prometheus.scrape_configs.find((c) => c.job_name === name);
  if (j === undefined) throw new Error(`prometheus.yml has no job "${name}"`);
  return j;
};

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { expr: string; refId: string; datasource?: { uid: string } }[];
  fieldConfig?: { defaults: { unit?: string } };
}
const dashboard = JSON.parse(read('infra/grafana/dashboards/tickstream.json')) as {
  uid: string;
  title: string;
  panels: Panel[];
};
const graphs = dashboard.panels.filter((p) => p.type !== 'row');
const exprs = graphs.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

describe('Prometheus configuration (infra/prometheus/prometheus.yml)', () => {
  it('scrapes every tickstream process compose runs, by service name, on its metrics port', () => {
    const served = Object.entries(services).filter(([, s]) => s.environment?.TICKSTREAM_METRICS_PORT);
    expect(served.length).toBeGreaterThanOrEqual(8);
    for (const [name, s] of served) {
      const sd = job(name).dns_sd_configs;
      // DNS discovery: every replica of a scaled service is a target.
      // `serve` has /metrics on its API port, not on a separate metrics port.
      const port = s.environment!.TICKSTREAM_API_PORT ?? s.environment!.TICKSTREAM_METRICS_PORT;
      expect(sd, name).toEqual([{ names: [name], type: 'A', port: Number(port) }]);
    }
    // And nothing that compose does not run.
    for (const c of prometheus.scrape_configs) {
      for (const sd of c.dns_sd_configs ?? []) for (const n of sd.names) expect(services[n], n).toBeDefined();
    }
  });

  it('scrapes the Redis and PostgreSQL exporters and QuestDB’s own metrics endpoint', () => {
    expect(job('redis').static_configs).toEqual([{ targets: ['redis-exporter:9121'] }]);
    expect(job('postgres').static_configs).toEqual([{ targets: ['postgres-exporter:9187'] }]);
    expect(job('questdb').static_configs).toEqual([{ targets: ['questdb:9003'] }]);
    expect(services.questdb?.environment?.QDB_METRICS_ENABLED).toBe('true');
    expect(services['redis-exporter']?.image).toMatch(/^oliver006\/redis_exporter:v1\./);
    expect(services['redis-exporter']?.environment?.REDIS_ADDR).toBe('redis://redis:6379');
    expect(services['postgres-exporter']?.image).toMatch(
      /^quay\.io\/prometheuscommunity\/postgres-exporter:/,
    );
    expect(services['postgres-exporter']?.environment?.DATA_SOURCE_NAME).toMatch(
      /@timescaledb:5432\/tickstream/,
    );
    expect(new Set(prometheus.scrape_configs.map((c) => c.job_name)).size).toBe(
      prometheus.scrape_configs.length,
    );
    expect(prometheus.global.scrape_interval).toMatch(/^\d+s$/);
  });

  it('is mounted into the prometheus service, and Grafana gets its provisioning and dashboards', () => {
    expect(services.prometheus?.volumes).toContain(
      './infra/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro',
    );
    expect(services.grafana?.volumes).toEqual(
      expect.arrayContaining([
        './infra/grafana/provisioning:/etc/grafana/provisioning:ro',
        './infra/grafana/dashboards:/var/lib/grafana/dashboards:ro',
      ]),
    );
    expect(services.prometheus?.ports).toContain('9090:9090');
    expect(services.grafana?.ports).toContain('3000:3000');
  });
});

describe('Grafana provisioning (infra/grafana)', () => {
  const datasources = parse(read('infra/grafana/provisioning/datasources/datasources.yml')) as {
    datasources: { name: string; uid: string; type: string; url: string; isDefault?: boolean }[];
  };
  const providers = parse(read('infra/grafana/provisioning/dashboards/dashboards.yml')) as {
    providers: { type: string; options: { path: string } }[];
  };

  it('provisions Prometheus as the default datasource, and the SQL stores', () => {
    const prom = datasources.datasources.find((d) => d.type === 'prometheus');
    expect(prom).toMatchObject({ uid: 'prometheus', url: 'http://prometheus:9090', isDefault: true });
    const sql = datasources.datasources.filter((d) => d.type === 'grafana-postgresql-datasource');
    expect(sql.map((d) => d.url).sort()).toEqual(['questdb:8812', 'timescaledb:5432']);
  });

  it('loads dashboards from the directory compose mounts them into', () => {
    expect(providers.providers).toHaveLength(1);
    expect(providers.providers[0]).toMatchObject({
      type: 'file',
      options: { path: '/var/lib/grafana/dashboards' },
    });
    expect(existsSync(`${root}infra/grafana/dashboards/tickstream.json`)).toBe(true);
  });

  it('dashboard: every panel queries the provisioned Prometheus, ids are unique, panels do not overlap', () => {
    expect(dashboard.uid).toBe('tickstream');
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of graphs) {
      expect(p.datasource?.uid, p.title).toBe('prometheus');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.expr.trim(), p.title).not.toBe('');
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    }
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      for (let dx = 0; dx < p.gridPos.w; dx++) {
        for (let dy = 0; dy < p.gridPos.h; dy++) {
          const cell = `${p.gridPos.x + dx},${p.gridPos.y + dy}`;
          expect(cells.has(cell), `${p.title} overlaps at ${cell}`).toBe(false);
          cells.add(cell);
        }
      }
    }
  });

  it('dashboard: covers throughput per group and shard, lag, pending, dead letters, latency percentiles, sink durations, event-loop lag', () => {
    const has = (re: RegExp) => exprs.some((e) => re.test(e));
    expect(has(/rate\(tickstream_worker_ticks_total\[/)).toBe(true);
    expect(has(/by \(group, stream\) \(rate\(tickstream_group_entries_read_total/)).toBe(true);
    expect(has(/tickstream_group_lag/)).toBe(true);
    expect(has(/tickstream_group_pending/)).toBe(true);
    expect(has(/tickstream_dead_letters/)).toBe(true);
    expect(
      has(/histogram_quantile\(0\.99, .*tickstream_sink_ack_age_seconds_bucket\{from="exchange"\}/),
    ).toBe(true);
    expect(has(/histogram_quantile\(0\.5, .*tickstream_sink_ack_age_seconds_bucket/)).toBe(true);
    expect(has(/tickstream_sink_flush_seconds_bucket/)).toBe(true);
    expect(has(/tickstream_sink_write_seconds_bucket/)).toBe(true);
    expect(has(/nodejs_eventloop_lag/)).toBe(true);
    // histogram_quantile needs the le label kept.
    for (const e of exprs.filter((x) => x.includes('histogram_quantile'))) expect(e).toMatch(/by \(le[,)]/);
  });

  it('dashboard: queries only metrics that the processes or exporters expose', async () => {
    // Register everything a deployment exposes: the instruments, the worker's counters, the group gauges.
    startProcessMetrics();
    sinkInstruments('g', 's');
    publisherInstruments('src', () => ({ ticks: 0, frames: 0 }));
    observeIndicatorJob('q', 'completed', 0);
    const config = loadConfig({ env: {} });
    const fakeRedis = {} as RedisClient; // never used: nothing is started, and scrapes that need it are skipped
    const sink: Sink = {
      name: 's',
      start: async () => undefined,
      write: async () => undefined,
      flush: async () => undefined,
      close: async () => undefined,
    };
    new GroupWorker({
      redis: fakeRedis,
      blocking: fakeRedis,
      layout: config.streams,
      group: 'g',
      consumer: 'c',
      sink,
      settings: config.consumer,
      log: silentLogger(),
    });
    exposeGroupGauges(fakeRedis, config.streams, 'g');
    exposeIngestMetrics({ stats: {} } as KafkaIngest, 'k');
    const ours = new Set(
      ((await registry.getMetricsAsJSON()) as unknown as { name: string }[]).map((m) => m.name),
    );
    const exporters = new Set([
      'up',
      'redis_memory_used_bytes',
      'redis_memory_max_bytes',
      'pg_stat_activity_count',
    ]);
    const used = new Set(
      exprs.flatMap((e) => [...e.matchAll(/\b([a-z_][a-z0-9_]*)(?=\{|\[|\)|$| )/g)].map((m) => m[1]!)),
    );
    const functions = new Set([
      'rate',
      'sum',
      'max',
      'by',
      'le',
      'histogram_quantile',
      'group',
      'stream',
      'source',
      'job',
      'instance',
      'kind',
      'outcome',
      'state',
    ]);
    // The extraction itself works: names with digits, with selectors, inside rate() and bare.
    for (const name of [
      'nodejs_eventloop_lag_p99_seconds',
      'process_cpu_seconds_total',
      'tickstream_group_lag',
      'up',
    ])
      expect(used, name).toContain(name);
    for (const name of used) {
      if (functions.has(name)) continue;
      const base = name.replace(/_(bucket|sum|count)$/, '');
      expect(ours.has(base) || ours.has(name) || exporters.has(name), `${name} is exposed by nothing`).toBe(
        true,
      );
    }
  });
});
