import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';

function error(env: Record<string, string>): string {
  try {
    loadConfig({ env });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`accepted: ${JSON.stringify(env)}`);
}

describe('config: numbers are plain decimals', () => {
  it.each(['0x10', '1e3', '12abc', '1.5', ' ', '0b11', 'Infinity'])('refuses %j as an integer', (v) => {
    expect(error({ TICKSTREAM_SHARDS: v })).toMatch(/TICKSTREAM_SHARDS: expected a decimal integer/);
  });

  it('still takes decimal integers (with spaces or a sign) and numbers in a file', () => {
    expect(loadConfig({ env: { TICKSTREAM_SHARDS: ' 16 ' } }).streams.shards).toBe(16);
    expect(loadConfig({ env: { KAFKA_REPLICATION_FACTOR: '-1' } }).kafka.replicationFactor).toBe(-1);
    expect(loadConfig({ env: {}, overrides: { streams: { shards: 3 } } }).streams.shards).toBe(3);
    expect(loadConfig({ env: { TICKSTREAM_IND_BB_STDDEV: '2.5' } }).indicators.bbStdDev).toBe(2.5);
    expect(error({ TICKSTREAM_IND_BB_STDDEV: '0x2' })).toMatch(
      /TICKSTREAM_IND_BB_STDDEV: expected a decimal number/,
    );
  });
});

describe('config: contradictory settings are refused', () => {
  it('a low-water mark above the high-water mark', () => {
    expect(error({ TICKSTREAM_HIGH_WATER: '100', TICKSTREAM_LOW_WATER: '200' })).toMatch(
      /TICKSTREAM_LOW_WATER and TICKSTREAM_HIGH_WATER: the low-water mark \(200\) must not exceed the high-water mark \(100\)/,
    );
    // backpressure off: the low-water mark means nothing
    expect(loadConfig({ env: { TICKSTREAM_HIGH_WATER: '0' } }).producer.highWater).toBe(0);
  });

  it('not when only the high-water mark is given: the default low-water mark follows it', () => {
    const low = (env: Record<string, string>) => loadConfig({ env }).producer;
    expect(low({ TICKSTREAM_HIGH_WATER: '10000' })).toMatchObject({ highWater: 10_000, lowWater: 5_000 });
    expect(low({ TICKSTREAM_HIGH_WATER: '1' })).toMatchObject({ highWater: 1, lowWater: 0 });
    expect(low({ TICKSTREAM_HIGH_WATER: '400000' }).lowWater).toBe(50_000);
    expect(low({}).lowWater).toBe(50_000);
    expect(low({ TICKSTREAM_HIGH_WATER: '10000', TICKSTREAM_LOW_WATER: '9000' }).lowWater).toBe(9_000);
  });

  it('a first backoff above its ceiling', () => {
    expect(error({ TICKSTREAM_RETRY_BASE_MS: '5000', TICKSTREAM_RETRY_MAX_MS: '1000' })).toMatch(
      /TICKSTREAM_RETRY_BASE_MS and TICKSTREAM_RETRY_MAX_MS: the first backoff \(5000 ms\) must not exceed/,
    );
  });

  it('REDIS_URL naming another server than REDIS_CLUSTER_NODES, or a database under Cluster', () => {
    expect(error({ REDIS_URL: 'redis://elsewhere:6379', REDIS_CLUSTER_NODES: 'a:7000,b:7001' })).toMatch(
      /REDIS_URL and REDIS_CLUSTER_NODES: both name servers to connect to/,
    );
    expect(error({ REDIS_URL: 'redis://a:7000/3', REDIS_CLUSTER_NODES: 'a:7000' })).toMatch(
      /a Redis Cluster has only database 0/,
    );
    // The URL of a seed node only carries credentials and the scheme: consistent, accepted.
    const c = loadConfig({ env: { REDIS_URL: 'rediss://:pw@a:7000', REDIS_CLUSTER_NODES: 'a:7000,b:7001' } });
    expect(c.redis.clusterNodes).toEqual(['a:7000', 'b:7001']);
  });

  it('two different Redis passwords, half a client certificate, TLS files with a plain URL', () => {
    expect(error({ REDIS_URL: 'redis://:one@h:6379', REDIS_PASSWORD: 'two' })).toMatch(
      /two different passwords/,
    );
    expect(error({ REDIS_URL: 'rediss://h:6379', REDIS_TLS_CERT_FILE: '/c.pem' })).toMatch(
      /REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE: a client certificate needs its key/,
    );
    expect(error({ REDIS_URL: 'redis://h:6379', REDIS_TLS_CA_FILE: '/ca.pem' })).toMatch(/use rediss:\/\//);
  });
});

describe('config: URLs and names', () => {
  it('names REDIS_URL when its port is not a number (not a bare "Invalid URL")', () => {
    expect(error({ REDIS_URL: 'redis://h:notaport' })).toMatch(/REDIS_URL: not a valid URL/);
    expect(error({ REDIS_URL: 'redis://h:6379/db' })).toMatch(
      /REDIS_URL: the path must be a database number/,
    );
    expect(error({ DATABASE_URL: 'postgres://h:99999999/x' })).toMatch(/DATABASE_URL: not a valid URL/);
  });

  it('reads LOG_LEVEL and LOG_FORMAT in any case', () => {
    const c = loadConfig({ env: { LOG_LEVEL: 'DEBUG', LOG_FORMAT: 'Json' } });
    expect(c.log).toEqual({ level: 'debug', format: 'json' });
    expect(error({ LOG_LEVEL: 'LOUD' })).toMatch(/LOG_LEVEL/);
  });
});

describe('config errors never echo credentials', () => {
  it('masks URL userinfo in an echoed value', () => {
    const m = error({ DATABASE_URL: 'mysql://postgres:pgS3cret@db:3306/x' });
    expect(m).toMatch(
      /DATABASE_URL: must be a postgres:\/\/ URL \(got "mysql:\/\/postgres:\*\*\*@db:3306\/x"\)/,
    );
    expect(m).not.toContain('pgS3cret');
    const r = error({ REDIS_URL: 'http://:hunter2@h:6379' });
    expect(r).not.toContain('hunter2');
  });

  it('does not show a secret variable at all, nor password=... in a connection string', () => {
    const m = error({
      KAFKA_SASL_MECHANISM: 'plain',
      KAFKA_SASL_PASSWORD: 'kafkaS3cret',
      KAFKA_IDEMPOTENT: 'maybe',
    });
    expect(m).not.toContain('kafkaS3cret');
    const q = error({ QDB_CLIENT_CONF: 'http::addr=h:9000;password=qdbS3cret;', QDB_HTTP_URL: 'nonsense' });
    expect(q).not.toContain('qdbS3cret');
    const p = error({ TICKSTREAM_CONFIG: '', REDIS_PASSWORD: 'x', REDIS_URL: 'redis://:y@h:1' });
    expect(p).not.toMatch(/"x"|"y"/);
  });
});

describe('config file: prototype keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tickstream-config-'));

  it.each([
    [
      'proto.json',
      '{"__proto__": {"polluted": "yes"}, "streams": {"shards": 2}}',
      /key "__proto__" is not allowed/,
    ],
    [
      'nested.json',
      '{"streams": {"__proto__": {"polluted": "yes"}}}',
      /key "streams.__proto__" is not allowed/,
    ],
    ['ctor.yaml', 'constructor:\n  prototype:\n    polluted: yes\n', /key "constructor" is not allowed/],
    ['proto.yaml', '__proto__:\n  polluted: yes\n', /key "__proto__" is not allowed/],
  ])('refuses %s without polluting Object.prototype', (name, text, message) => {
    const file = join(dir, name);
    writeFileSync(file, text);
    expect(() => loadConfig({ env: { TICKSTREAM_CONFIG: file } })).toThrow(message);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
  });
});
