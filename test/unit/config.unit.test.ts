import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../shared/errors.ts';
import { loadConfig } from '../../shared/config.ts';
import { lingerFor, SINKS } from '../../consumers/sinks/index.ts';

describe('config', () => {
  it('has working defaults', () => {
    const c = loadConfig({ env: {} });
    expect(c.redis.url).toBe('redis://127.0.0.1:6379');
    expect(c.streams).toEqual({ prefix: 'ticks', shards: 4 });
    expect(c.consumer.maxDeliveries).toBe(5);
  });

  it('leaves the consumer linger to the sink unless TICKSTREAM_CONSUMER_LINGER_MS says, and bounds it', () => {
    expect(loadConfig({ env: {} }).consumer.lingerMs).toBeUndefined();
    expect(loadConfig({ env: { TICKSTREAM_CONSUMER_LINGER_MS: '0' } }).consumer.lingerMs).toBe(0);
    expect(loadConfig({ env: { TICKSTREAM_CONSUMER_LINGER_MS: '250' } }).consumer.lingerMs).toBe(250);
    expect(() => loadConfig({ env: { TICKSTREAM_CONSUMER_LINGER_MS: '20000' } })).toThrow(
      /TICKSTREAM_CONSUMER_LINGER_MS/,
    );
    expect(() => loadConfig({ env: { TICKSTREAM_CONSUMER_LINGER_MS: 'soon' } })).toThrow(/a decimal integer/);
    // Unset: each sink's own; set: the same for every sink.
    const unset = loadConfig({ env: {} });
    expect(Object.fromEntries(Object.entries(SINKS).map(([n, d]) => [n, lingerFor(d, unset)]))).toEqual({
      archive: 100,
      quotes: 0,
      questdb: 100,
      kafka: 0,
      bars: 500,
    });
    const set = loadConfig({ env: { TICKSTREAM_CONSUMER_LINGER_MS: '0' } });
    expect(Object.values(SINKS).map((d) => lingerFor(d, set))).toEqual([0, 0, 0, 0, 0]);
  });

  it('reads and coerces environment variables', () => {
    const c = loadConfig({
      env: {
        TICKSTREAM_SHARDS: '8',
        REDIS_CLUSTER_NODES: 'a:7000, b:7001',
        TICKSTREAM_PG_MIGRATE_ON_START: 'false',
      },
    });
    expect(c.streams.shards).toBe(8);
    expect(c.redis.clusterNodes).toEqual(['a:7000', 'b:7001']);
    expect(c.postgres.migrateOnStart).toBe(false);
  });

  it('names the bad variable and its value', () => {
    expect(() => loadConfig({ env: { TICKSTREAM_SHARDS: 'four' } })).toThrow(ConfigError);
    expect(() => loadConfig({ env: { TICKSTREAM_SHARDS: 'four' } })).toThrow(
      /TICKSTREAM_SHARDS: .*\(got "four"\)/,
    );
    expect(() => loadConfig({ env: { REDIS_URL: 'localhost:6379' } })).toThrow(
      /REDIS_URL: must be a redis:\/\/ or rediss:\/\/ URL/,
    );
    expect(() => loadConfig({ env: { TICKSTREAM_SHARDS: '0' } })).toThrow(/TICKSTREAM_SHARDS/);
  });

  it('refuses unknown TICKSTREAM_ variables (typos)', () => {
    expect(() => loadConfig({ env: { TICKSTREAM_SHARD: '3' } })).toThrow(
      /unknown configuration variable TICKSTREAM_SHARD/,
    );
  });

  it('reads a YAML file, with env taking precedence, and names file keys in errors', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tickstream-config-'));
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'streams:\n  prefix: fromfile\n  shards: 3\n');
    const c = loadConfig({ env: { TICKSTREAM_CONFIG: file, TICKSTREAM_SHARDS: '5' } });
    expect(c.streams).toEqual({ prefix: 'fromfile', shards: 5 });

    writeFileSync(file, 'streams:\n  shardz: 3\n');
    expect(() => loadConfig({ env: { TICKSTREAM_CONFIG: file } })).toThrow(/Unrecognized key.*shardz/);
    writeFileSync(file, 'consumer:\n  maxDeliveries: -1\n');
    expect(() => loadConfig({ env: { TICKSTREAM_CONFIG: file } })).toThrow(/key "consumer.maxDeliveries"/);
  });

  it('reports a missing config file clearly', () => {
    expect(() => loadConfig({ env: { TICKSTREAM_CONFIG: '/nonexistent/x.yaml' } })).toThrow(
      /TICKSTREAM_CONFIG: cannot read/,
    );
  });

  it('lets overrides (flags) beat the environment', () => {
    const c = loadConfig({
      env: { TICKSTREAM_BATCH_SIZE: '10' },
      overrides: { consumer: { batchSize: 99 } },
    });
    expect(c.consumer.batchSize).toBe(99);
  });
});
