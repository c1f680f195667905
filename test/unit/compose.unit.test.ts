import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { SINKS } from '../../consumers/sinks/index.ts';
import { timescaleVersionProblem } from '../../shared/schema/migrate.ts';

/**
 * No Docker engine runs here, so docker-compose.yml is checked by reading it: the services, images, ports,
 * environment, healthchecks and start order it must have, and that the commands it runs still exist.
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(`${root}${path}`, 'utf8');

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
  profiles?: string[];
  restart?: string;
}

// Compose supports YAML merge keys (<<: *anchor); the file uses them for the shared settings.
const compose = parse(read('docker-compose.yml'), { merge: true }) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const services = compose.services;
const svc = (name: string): Service => {
  const s = services[name];
  if (s === undefined) throw new Error(`docker-compose.yml has no service "${name}"`);
  return s;
};

const PIPELINE = [
  'producer',
  'consume-quotes',
  'consume-archive',
  'consume-questdb',
  'consume-bars',
  'indicators',
];
const KAFKA = ['kafka', 'kafka-init', 'bridge-kafka-to-redis', 'bridge-redis-to-kafka'];
const STORES = ['redis', 'questdb', 'timescaledb'];
const FEED = ['feed-coinbase'];
const MONITORING = ['prometheus', 'grafana', 'redis-exporter', 'postgres-exporter'];

describe('docker-compose.yml', () => {
  it('has the stores, every pipeline process, serve, monitoring, and the kafka and feed profile services', () => {
    expect(Object.keys(services).sort()).toEqual(
      [...STORES, ...PIPELINE, 'serve', ...KAFKA, ...FEED, ...MONITORING].sort(),
    );
  });

  it('runs tickstream serve with its port published and a healthcheck on /readyz', () => {
    const serve = svc('serve');
    expect(serve.command).toEqual(['node', 'bin/tickstream.js', 'serve']);
    expect(serve.ports).toEqual(['8080:8080']);
    expect(serve.environment).toMatchObject({ TICKSTREAM_API_HOST: '0.0.0.0', TICKSTREAM_API_PORT: '8080' });
    expect(serve.healthcheck?.test.join(' ')).toContain('http://127.0.0.1:8080/readyz');
    expect(Object.keys(serve.depends_on ?? {}).sort()).toEqual(['redis', 'timescaledb']);
  });

  it('uses the expected images and publishes the stores’ ports', () => {
    expect(svc('redis').image).toMatch(/^redis:7/);
    expect(svc('questdb').image).toMatch(/^questdb\/questdb:(9\.([1-9]|\d{2,})|\d{2,}\.)/); // 9.1+: TIMESTAMP_NS
    expect(svc('timescaledb').image).toMatch(/^timescale\/timescaledb:/);
    // Pinned to a release without timescale/timescaledb#7672 (2.16.0–2.18.0 lose rows in compressed chunks).
    const tag = /^timescale\/timescaledb:(\d+\.\d+\.\d+)-pg\d+$/.exec(svc('timescaledb').image ?? '');
    expect(tag, 'a pinned version tag, not latest').not.toBeNull();
    expect(timescaleVersionProblem(tag![1]!)).toBeUndefined();
    expect(svc('kafka').image).toMatch(/^apache\/kafka:/);
    expect(svc('redis').ports).toContain('6379:6379');
    expect(svc('questdb').ports).toEqual(expect.arrayContaining(['9000:9000', '8812:8812', '9009:9009']));
    expect(svc('timescaledb').ports).toContain('5432:5432');
    expect(svc('timescaledb').environment).toMatchObject({
      POSTGRES_USER: 'tickstream',
      POSTGRES_DB: 'tickstream',
    });
  });

  it('runs Redis with AOF on and fsync every second (a restart loses at most ~1 s)', () => {
    const redis = svc('redis');
    expect(redis.command).toEqual(['redis-server', '/usr/local/etc/redis/redis.conf']);
    expect(redis.volumes).toContain('./infra/redis/redis.conf:/usr/local/etc/redis/redis.conf:ro');
    expect(redis.volumes?.some((v) => v.endsWith(':/data'))).toBe(true);
    const conf = read('infra/redis/redis.conf');
    const directive = (key: string) => new RegExp(`^${key}\\s+(\\S+)`, 'm').exec(conf)?.[1];
    expect(directive('appendonly')).toBe('yes');
    expect(directive('appendfsync')).toBe('everysec');
    expect(directive('dir')).toBe('/data');
    expect(directive('maxmemory-policy')).toBe('noeviction');
  });

  it('builds the pipeline from the repo Dockerfile and runs `node bin/tickstream.js <command>` with commands that exist', () => {
    for (const name of [...PIPELINE, 'bridge-kafka-to-redis', 'bridge-redis-to-kafka']) {
      const s = svc(name);
      expect(s.build, name).toBe('.');
      expect(s.command?.slice(0, 2), name).toEqual(['node', 'bin/tickstream.js']);
      expect(s.restart, name).toBe('unless-stopped');
    }
    const consumed = PIPELINE.filter((n) => n.startsWith('consume-')).map((n) => svc(n).command!.slice(2));
    for (const [verb, sink] of consumed) {
      expect(verb).toBe('consume');
      expect(Object.keys(SINKS)).toContain(sink);
    }
    expect(svc('consume-questdb').command?.slice(2)).toEqual(['consume', 'questdb']);
    expect(svc('producer').command?.slice(2, 4)).toEqual(['produce', 'synthetic']);
    expect(svc('indicators').command?.slice(2)).toEqual(['indicators', 'worker']);
    expect(svc('bridge-kafka-to-redis').command?.slice(2)).toEqual(['bridge', 'kafka-to-redis']);
    expect(svc('bridge-redis-to-kafka').command?.slice(2)).toEqual(['bridge', 'redis-to-kafka']);
    for (const cmd of ['consume', 'produce', 'indicators', 'bridge']) {
      expect(existsSync(`${root}cli/commands/${cmd}.ts`), cmd).toBe(true);
    }

    const dockerfile = read('Dockerfile');
    expect(dockerfile).toMatch(/^FROM node:22/m);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    for (const dir of ['bin', 'shared', 'producers', 'consumers', 'cli', 'infra']) {
      expect(dockerfile).toMatch(new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'));
    }
    const ignored = read('.dockerignore').split('\n');
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', '.git', 'test']));
  });

  it('gives every process the addresses it needs: REDIS_URL, DATABASE_URL, QDB_CLIENT_CONF, KAFKA_BROKERS', () => {
    for (const name of [...PIPELINE, 'bridge-kafka-to-redis', 'bridge-redis-to-kafka']) {
      expect(svc(name).environment?.REDIS_URL, name).toBe('redis://redis:6379');
    }
    for (const name of ['consume-archive', 'consume-bars', 'indicators']) {
      expect(svc(name).environment?.DATABASE_URL, name).toMatch(
        /^postgres:\/\/\w+:\w+@timescaledb:5432\/tickstream$/,
      );
    }
    expect(svc('consume-questdb').environment?.QDB_CLIENT_CONF).toBe('http::addr=questdb:9000;');
    expect(svc('consume-archive').environment?.TICKSTREAM_PG_MIGRATE_ON_START).toBe('true');
    for (const name of ['bridge-kafka-to-redis', 'bridge-redis-to-kafka']) {
      expect(svc(name).environment?.KAFKA_BROKERS, name).toBe('kafka:9092');
    }
  });

  it('has healthchecks on the stores and consumers, and starts services only after what they need is healthy', () => {
    for (const name of [
      ...STORES,
      'kafka',
      'consume-quotes',
      'consume-archive',
      'consume-questdb',
      'consume-bars',
    ]) {
      expect(svc(name).healthcheck?.test.length, name).toBeGreaterThan(1);
    }
    // A pipeline process's healthcheck asks its /readyz, so the port must be configured and reachable.
    for (const name of [
      'consume-quotes',
      'consume-archive',
      'consume-questdb',
      'consume-bars',
      'indicators',
    ]) {
      expect(svc(name).healthcheck?.test.join(' '), name).toContain('http://127.0.0.1:9464/readyz');
    }
    for (const name of [...PIPELINE, 'bridge-kafka-to-redis', 'bridge-redis-to-kafka']) {
      expect(svc(name).environment?.TICKSTREAM_METRICS_PORT, name).toBe('9464');
      // Prometheus scrapes from its own container: the default loopback bind would refuse it.
      expect(svc(name).environment?.TICKSTREAM_METRICS_HOST, name).toBe('0.0.0.0');
    }
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
        expect(services[dep], `${name} depends on unknown ${dep}`).toBeDefined();
        if (condition === 'service_healthy')
          expect(services[dep]!.healthcheck, `${dep} has no healthcheck`).toBeDefined();
        expect(['service_healthy', 'service_completed_successfully'], `${name} → ${dep}`).toContain(
          condition,
        );
      }
    }
    const needs = (name: string) => Object.keys(svc(name).depends_on ?? {});
    expect(needs('consume-questdb')).toEqual(expect.arrayContaining(['redis', 'questdb']));
    expect(needs('consume-archive')).toEqual(expect.arrayContaining(['redis', 'timescaledb']));
    expect(needs('consume-quotes')).toEqual(['redis']);
    expect(needs('producer')).toEqual(expect.arrayContaining(['redis', 'consume-questdb']));
    expect(needs('bridge-kafka-to-redis')).toEqual(expect.arrayContaining(['redis', 'kafka']));
  });

  it('keeps the Kafka broker and the bridge behind the kafka profile, and nothing else', () => {
    for (const name of KAFKA) expect(svc(name).profiles, name).toEqual(['kafka']);
    for (const name of [...STORES, ...PIPELINE, ...MONITORING]) {
      expect(svc(name).profiles, name).toBeUndefined();
      // A default service must not wait for one that only starts with a profile.
      for (const dep of Object.keys(svc(name).depends_on ?? {}))
        expect([...KAFKA, ...FEED], `${name} → ${dep}`).not.toContain(dep);
    }
  });

  it('runs a public feed (no key) behind the feed profile, after the quote projector is up', () => {
    const feed = svc('feed-coinbase');
    expect(feed.profiles).toEqual(['feed']);
    expect(feed.command?.slice(0, 5)).toEqual(['node', 'bin/tickstream.js', 'produce', 'feed', 'coinbase']);
    expect(feed.command).toContain('--symbols');
    expect(feed.depends_on).toMatchObject({ 'consume-quotes': { condition: 'service_healthy' } });
  });

  it('keeps data in named volumes, and every bind-mounted file exists in the repo', () => {
    expect(Object.keys(compose.volumes).sort()).toEqual([
      'grafana-data',
      'kafka-data',
      'prometheus-data',
      'questdb-data',
      'redis-data',
      'timescale-data',
    ]);
    for (const [name, s] of Object.entries(services)) {
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (source.startsWith('./'))
          expect(existsSync(`${root}${source.slice(2)}`), `${name}: ${source}`).toBe(true);
        else expect(Object.keys(compose.volumes), `${name}: ${source}`).toContain(source);
      }
    }
  });
});
