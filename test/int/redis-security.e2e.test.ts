import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_URL, REDIS_URL, uniqueName, waitUntil } from '../helpers/index.ts';
import { finished, runCli, startCli, stopChildren, type CliResult } from '../helpers/cli.ts';
import {
  clusterBinariesAvailable,
  freePort,
  startLocalCluster,
  type LocalCluster,
} from '../helpers/cluster.ts';
import { opensslAvailable, startPrivateRedis, type PrivateRedis } from '../helpers/redis-tls-server.ts';

/**
 * The CLI against Redis servers configured otherwise than the shared one, each private to this file: one with
 * a password, TLS-only ones with a private CA (certificates made here with openssl), a Cluster with a password,
 * and addresses where nothing listens. What is checked: no secret in any output, one-shot commands fail fast
 * with a clear error, long-running ones stop on an authentication error and promptly on SIGTERM, a failed
 * SELECT is fatal, and credentials and TLS reach every server.
 */
const available = clusterBinariesAvailable();
afterEach(stopChildren);
const PASSWORD = `pw-${uniqueName('h8')}`;
const WRONG = `wrong-${uniqueName('h8')}`;

/** Everything the process printed, for the secret checks. */
const all = (r: CliResult) => `${r.stdout}\n${r.stderr}`;

function env(extra: Record<string, string>): Record<string, string> {
  return {
    DATABASE_URL,
    TICKSTREAM_STREAM_PREFIX: uniqueName('sec'),
    TICKSTREAM_REDIS_CONNECT_TIMEOUT_MS: '3000',
    ...extra,
  };
}

describe.skipIf(!available)('a Redis with a password', { timeout: 240_000 }, () => {
  let server: PrivateRedis;
  let url: string;
  beforeAll(async () => {
    server = await startPrivateRedis({ password: PASSWORD });
    url = `redis://127.0.0.1:${server.port}`;
  });
  afterAll(() => server?.stop());

  it('one-shot commands with a wrong password exit 1 with a clear error and never print it', async () => {
    const results = await Promise.all([
      runCli(['status'], env({ REDIS_URL: `redis://:${WRONG}@127.0.0.1:${server.port}` })),
      runCli(['quote', 'AAPL'], env({ REDIS_URL: url, REDIS_PASSWORD: WRONG })),
      runCli(['dlq', 'list'], env({ REDIS_URL: `redis://default:${WRONG}@127.0.0.1:${server.port}` })),
    ]);
    for (const r of results) {
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(
        `cannot connect to Redis at redis://127.0.0.1:${server.port} (REDIS_URL): WRONGPASS`,
      );
      expect(all(r)).not.toContain(WRONG);
    }
  });

  it('long-running processes (consumer, producer, BullMQ indicator worker) exit 1 on a wrong password and never print it', async () => {
    const e = env({ REDIS_URL: `redis://:${WRONG}@127.0.0.1:${server.port}`, LOG_LEVEL: 'debug' });
    const results = await Promise.all([
      runCli(['consume', 'quotes'], e, 90_000),
      runCli(['produce', 'synthetic', '--count', '100'], e, 90_000),
      runCli(['indicators', 'worker'], { ...e, TICKSTREAM_PG_SCHEMA: uniqueName('sec') }, 90_000),
    ]);
    for (const r of results) {
      expect(r.code, r.stderr).toBe(1);
      expect(r.signal).toBeNull();
      expect(r.stderr).toMatch(/redis refused the connection settings: not retrying/);
      expect(r.stderr).toMatch(/WRONGPASS/);
      expect(all(r)).not.toContain(WRONG);
    }
  });

  it('the right password, from REDIS_PASSWORD or from the URL, reaches the server', async () => {
    const prefix = uniqueName('sec');
    const produced = await runCli(
      ['produce', 'synthetic', '--count', '300', '--symbols', '3'],
      env({ REDIS_URL: url, REDIS_PASSWORD: PASSWORD, TICKSTREAM_STREAM_PREFIX: prefix }),
    );
    expect(produced.code, produced.stderr).toBe(0);
    expect(all(produced)).not.toContain(PASSWORD);
    const status = await runCli(
      ['status', '--json'],
      env({ REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${server.port}`, TICKSTREAM_STREAM_PREFIX: prefix }),
    );
    expect(status.code, status.stderr).toBe(0);
    const shards = (JSON.parse(status.stdout) as { shards: { length: number }[] }).shards;
    expect(shards.reduce((n, s) => n + s.length, 0)).toBeGreaterThan(0);
    expect(Number(server.cli('dbsize'))).toBeGreaterThan(0);
  });

  it('a database index the server does not have is fatal, and nothing is written to database 0', async () => {
    const prefix = uniqueName('sec');
    const e = env({
      REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${server.port}/99`,
      TICKSTREAM_STREAM_PREFIX: prefix,
    });
    const [status, produce] = await Promise.all([
      runCli(['status'], e),
      runCli(['produce', 'synthetic', '--count', '100'], e, 90_000),
    ]);
    expect(status.code, status.stderr).toBe(1);
    expect(status.stderr).toMatch(
      /Redis at redis:\/\/127\.0\.0\.1:\d+\/99 \(REDIS_URL\): ERR DB index is out of range/,
    );
    expect(produce.code, produce.stderr).toBe(1);
    expect(produce.stderr).toMatch(/DB index is out of range/);
    expect(produce.stderr).not.toMatch(/"msg":"produced"/);
    expect(server.cli('--scan', '--pattern', `${prefix}*`)).toBe('');
    expect(all(status) + all(produce)).not.toContain(PASSWORD);
  });
});

describe.skipIf(!available)('unreachable servers', { timeout: 240_000 }, () => {
  let port: number;
  beforeAll(async () => {
    port = await freePort(); // nothing listens there
  });

  // The bounds below are generous for a loaded machine (each process starts TypeScript through tsx); before
  // the fix these commands never ended at all.
  it('one-shot commands fail fast with exit 1 and name the server', async () => {
    const e = env({ REDIS_URL: `redis://127.0.0.1:${port}` });
    const results = await Promise.all([
      runCli(['status'], e, 90_000),
      runCli(['quote', 'AAPL'], e, 90_000),
      runCli(['trim', '--max-len', '10'], e, 90_000),
      runCli(['dlq', 'requeue', '--all'], e, 90_000),
    ]);
    for (const r of results) {
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(
        `tickstream: cannot connect to Redis at redis://127.0.0.1:${port} (REDIS_URL)`,
      );
      expect(r.stderr).toMatch(/ECONNREFUSED/);
    }
  });

  it('REDIS_CLUSTER_NODES pointing at a server that is not a cluster fails fast with the reason', async () => {
    const r = await runCli(['status'], env({ REDIS_CLUSTER_NODES: new URL(REDIS_URL).host }), 90_000);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(
      /cannot connect to Redis Cluster .* \(REDIS_CLUSTER_NODES\): .*cluster support disabled/,
    );
  });

  it('a consumer and a producer retry with a periodic log line, and stop promptly on SIGTERM', async () => {
    const e = env({ REDIS_URL: `redis://127.0.0.1:${port}`, TICKSTREAM_SHUTDOWN_TIMEOUT_MS: '120000' });
    const children = [
      startCli(['consume', 'quotes'], e),
      startCli(['produce', 'synthetic', '--rate', '100'], e),
    ];
    try {
      for (const child of children) {
        await waitUntil(
          () => child.out.stderr.includes('redis connection error: retrying'),
          'a first retry line',
          {
            timeoutMs: 60_000,
          },
        );
      }
      // The reminder comes every 10 s while the server stays away.
      await waitUntil(
        () => children[0]!.out.stderr.includes('redis still unreachable: retrying'),
        'a reminder',
        {
          timeoutMs: 60_000,
        },
      );
      for (const child of children) child.kill('SIGTERM');
      // Well within the 120 s shutdown timeout: a stop does not wait for a server that is not there.
      const results = await Promise.all(children.map((c) => finished(c, 40_000)));
      for (const r of results) {
        expect(r.signal).toBeNull();
        expect(r.code, r.stderr).not.toBe(130);
        expect(r.stderr).not.toMatch(/graceful stop timed out/);
      }
    } finally {
      await stopChildren();
    }
  });

  it('status exits 1 when a configured store (PostgreSQL, QuestDB) cannot be read', async () => {
    const pgPort = await freePort();
    const r = await runCli(
      ['status', '--json'],
      env({
        REDIS_URL,
        DATABASE_URL: `postgres://postgres:${PASSWORD}@127.0.0.1:${pgPort}/x`,
        QDB_HTTP_URL: `http://127.0.0.1:${pgPort}`,
        TICKSTREAM_PG_CONNECT_TIMEOUT_MS: '2000',
        TICKSTREAM_QDB_TIMEOUT_MS: '2000',
      }),
    );
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/could not read Archive \(PostgreSQL\), QuestDB \(WAL tables\)/);
    const sections = (JSON.parse(r.stdout) as { sections: Record<string, { error?: string }[]> }).sections;
    expect(sections['Archive (PostgreSQL)']?.[0]?.error).toBeTruthy();
    expect(all(r)).not.toContain(PASSWORD);
  });
});

describe.skipIf(!available || !opensslAvailable())(
  'a TLS-only Redis with a private CA',
  { timeout: 240_000 },
  () => {
    let server: PrivateRedis;
    let mutual: PrivateRedis;
    beforeAll(async () => {
      [server, mutual] = await Promise.all([
        startPrivateRedis({ tls: { clientAuth: false }, password: PASSWORD }),
        startPrivateRedis({ tls: { clientAuth: true } }),
      ]);
    });
    afterAll(() => {
      server?.stop();
      mutual?.stop();
    });

    it('connects with REDIS_TLS_CA_FILE; without it, or with another CA, fails fast saying why', async () => {
      const url = `rediss://:${PASSWORD}@127.0.0.1:${server.port}`;
      const [ok, unknownCa, otherCa] = await Promise.all([
        runCli(['status'], env({ REDIS_URL: url, REDIS_TLS_CA_FILE: server.tls!.ca })),
        runCli(['status'], env({ REDIS_URL: url })),
        runCli(['quote', 'X'], env({ REDIS_URL: url, REDIS_TLS_CA_FILE: server.tls!.otherCa })),
      ]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(/^Streams/);
      for (const r of [unknownCa, otherCa]) {
        expect(r.code, r.stderr).toBe(1);
        expect(r.stderr).toMatch(
          /cannot connect to Redis at rediss:\/\/127\.0\.0\.1:\d+ \(REDIS_URL\): .*(self-signed|certificate)/,
        );
      }
      for (const r of [ok, unknownCa, otherCa]) expect(all(r)).not.toContain(PASSWORD);
    });

    it('presents a client certificate (REDIS_TLS_CERT_FILE/KEY_FILE) to a server that requires one', async () => {
      const prefix = uniqueName('sec');
      const tls = mutual.tls!;
      const base = {
        REDIS_URL: `rediss://127.0.0.1:${mutual.port}`,
        REDIS_TLS_CA_FILE: tls.ca,
        TICKSTREAM_STREAM_PREFIX: prefix,
      };
      const produced = await runCli(
        ['produce', 'synthetic', '--count', '200', '--symbols', '2'],
        env({ ...base, REDIS_TLS_CERT_FILE: tls.clientCert, REDIS_TLS_KEY_FILE: tls.clientKey }),
      );
      expect(produced.code, produced.stderr).toBe(0);
      expect(mutual.cli('--scan', '--pattern', `${prefix}*`)).not.toBe('');
      const refused = await runCli(['status'], env(base));
      expect(refused.code, refused.stderr).toBe(1);
      expect(refused.stderr).toMatch(/cannot connect to Redis at rediss:/);
    });
  },
);

describe.skipIf(!available)('a Redis Cluster with a password', { timeout: 240_000 }, () => {
  let cluster: LocalCluster;
  beforeAll(async () => {
    cluster = await startLocalCluster({ password: PASSWORD });
  }, 60_000);
  afterAll(async () => cluster?.stop());

  it('REDIS_PASSWORD, or the password in REDIS_URL, reaches every node', async () => {
    const prefix = uniqueName('sec');
    const nodes = cluster.nodes.join(',');
    const produced = await runCli(
      ['produce', 'synthetic', '--count', '400', '--symbols', '8'],
      env({
        REDIS_CLUSTER_NODES: nodes,
        REDIS_PASSWORD: PASSWORD,
        TICKSTREAM_STREAM_PREFIX: prefix,
        TICKSTREAM_SHARDS: '4',
      }),
    );
    expect(produced.code, produced.stderr).toBe(0);
    expect(produced.stderr).not.toMatch(/NOAUTH/);
    const status = await runCli(
      ['status', '--json'],
      env({
        REDIS_CLUSTER_NODES: nodes,
        REDIS_URL: `redis://:${PASSWORD}@${cluster.nodes[1]}`,
        TICKSTREAM_STREAM_PREFIX: prefix,
        TICKSTREAM_SHARDS: '4',
        // BullMQ's keys must share a slot under Cluster (docs/configuration.md); status reads its queue.
        TICKSTREAM_IND_BULL_PREFIX: `{${prefix}}`,
      }),
    );
    expect(status.code, status.stderr).toBe(0);
    const shards = (JSON.parse(status.stdout) as { shards: { length: number }[] }).shards;
    // Four shards spread over three masters: every shard got entries, so every node was written.
    expect(shards).toHaveLength(4);
    for (const s of shards) expect(s.length).toBeGreaterThan(0);
    expect(all(produced) + all(status)).not.toContain(PASSWORD);
  });

  it('a wrong cluster password fails fast, never printed', async () => {
    const r = await runCli(
      ['status'],
      env({ REDIS_CLUSTER_NODES: cluster.nodes.join(','), REDIS_PASSWORD: WRONG }),
      90_000,
    );
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/cannot connect to Redis Cluster .*: WRONGPASS/);
    expect(all(r)).not.toContain(WRONG);
  });
});
