import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, inTransaction, withClient, type PgPool } from '../../shared/pg.ts';
import { closeRedis } from '../../shared/redis.ts';
import { ArchiveSink, compareTicks, readArchive } from '../../consumers/sinks/archive.ts';
import {
  archiveStatus,
  assertSchemaCurrent,
  timescaleJobsStatus,
  timescalePreloaded,
  timescaleVersionProblem,
  loadMigrations,
  migrate,
  migrateOptions,
  MigrationError,
} from '../../shared/schema/migrate.ts';
import {
  DATABASE_URL,
  REDIS_URL,
  cleanupPrefix,
  testConfig,
  testRedis,
  uniqueName,
  waitUntil,
} from '../helpers/index.ts';
import { runCli } from '../helpers/cli.ts';

const log = silentLogger();
const LATEST = loadMigrations().at(-1)!.version;
const TIMESCALE_DATABASE_URL = process.env.TIMESCALE_DATABASE_URL;

/** Everything a migration can change in a schema: relations, columns, functions, recorded versions. */
async function snapshot(pool: PgPool, schema: string): Promise<unknown> {
  const relations = await pool.query(
    `SELECT c.relname, c.relkind, c.relispartition
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 ORDER BY c.relname`,
    [schema],
  );
  const columns = await pool.query(
    `SELECT table_name, column_name, data_type, collation_name FROM information_schema.columns
      WHERE table_schema = $1 ORDER BY table_name, ordinal_position`,
    [schema],
  );
  const functions = await pool.query(
    `SELECT p.proname, md5(p.prosrc) AS src FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = $1 ORDER BY p.proname`,
    [schema],
  );
  const versions = await pool.query(
    `SELECT version, name, mode, checksum, applied_at FROM "${schema}".schema_migrations ORDER BY version`,
  );
  return {
    relations: relations.rows,
    columns: columns.rows,
    functions: functions.rows,
    versions: versions.rows,
  };
}

describe('archive migrations (real PostgreSQL)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function fresh(overrides: Partial<Config['postgres']> = {}): {
    config: Config;
    pool: PgPool;
    schema: string;
  } {
    const schema = uniqueName('arch');
    const config = testConfig({ postgres: { schema, timescale: 'off', partitionsAhead: 1, ...overrides } });
    const pool = createPgPool(config.postgres, { log, max: 2 });
    cleanups.push(async () => {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await closePgPool(pool);
    });
    return { config, pool, schema };
  }

  it('migrates an empty schema to the latest version, and a second run changes nothing', async () => {
    const { config, pool, schema } = fresh();
    const first = await migrate(pool, migrateOptions(config.postgres, log));
    expect(first).toMatchObject({ schema, mode: 'plain', from: 0, to: LATEST });
    expect(first.applied.map((a) => a.version)).toEqual(Array.from({ length: LATEST }, (_, i) => i + 1));

    const partitioned = await pool.query<{ relname: string }>(
      `SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 ORDER BY 1`,
      [schema],
    );
    expect(partitioned.rows.map((r) => r.relname)).toEqual(['quotes', 'trades']);
    const meta = await pool.query(`SELECT value FROM "${schema}".archive_meta WHERE key = 'mode'`);
    expect(meta.rows).toEqual([{ value: 'plain' }]);

    const before = await snapshot(pool, schema);
    const second = await migrate(pool, migrateOptions(config.postgres, log));
    expect(second).toMatchObject({ from: LATEST, to: LATEST, applied: [], mode: 'plain' });
    expect(await snapshot(pool, schema)).toEqual(before);
    expect(await assertSchemaCurrent(pool, schema)).toBe('plain');
  });

  it('refuses a schema newer than this code, in migrate and in the writer', async () => {
    const { config, pool, schema } = fresh();
    await migrate(pool, migrateOptions(config.postgres, log));
    await pool.query(
      `INSERT INTO "${schema}".schema_migrations (version, name, mode, checksum) VALUES ($1, 'future', 'plain', 'x')`,
      [LATEST + 1],
    );
    const before = await snapshot(pool, schema);
    const refused = migrate(pool, migrateOptions(config.postgres, log));
    await expect(refused).rejects.toBeInstanceOf(MigrationError);
    await expect(refused).rejects.toThrow(
      new RegExp(`version ${LATEST + 1}, newer than this tickstream knows \\(${LATEST}\\)`),
    );
    expect(await snapshot(pool, schema)).toEqual(before);

    for (const migrateOnStart of [true, false]) {
      const sink = new ArchiveSink({ settings: { ...config.postgres, migrateOnStart }, log, pool });
      await expect(sink.start()).rejects.toThrow(/newer than this tickstream knows/);
    }
  });

  it('a writer without migrateOnStart refuses an unmigrated schema and says what to run', async () => {
    const { config, pool } = fresh();
    const sink = new ArchiveSink({ settings: { ...config.postgres, migrateOnStart: false }, log, pool });
    await expect(sink.start()).rejects.toThrow(
      /version 0, this tickstream needs \d+: run `tickstream migrate`/,
    );
  });

  it('concurrent migrations (several writers starting at once) apply each version exactly once', async () => {
    const { config, schema } = fresh();
    const pools = Array.from({ length: 4 }, () => createPgPool(config.postgres, { log, max: 1 }));
    try {
      const results = await Promise.all(pools.map((p) => migrate(p, migrateOptions(config.postgres, log))));
      expect(results.reduce((n, r) => n + r.applied.length, 0)).toBe(LATEST);
      const versions = await pools[0]!.query(`SELECT version FROM "${schema}".schema_migrations ORDER BY 1`);
      expect(versions.rows.map((r: { version: number }) => r.version)).toEqual(
        Array.from({ length: LATEST }, (_, i) => i + 1),
      );
    } finally {
      await Promise.all(pools.map((p) => closePgPool(p)));
    }
  });

  it('TICKSTREAM_PG_TIMESCALE=on is refused clearly where TimescaleDB cannot be enabled', async () => {
    const { config, pool, schema } = fresh({ timescale: 'on' });
    const available = await pool.query(`SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`);
    if (available.rowCount === 0) {
      await expect(migrate(pool, migrateOptions(config.postgres, log))).rejects.toThrow(
        /TICKSTREAM_PG_TIMESCALE=on but the timescaledb extension is not available/,
      );
      const left = await pool.query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`, [schema]);
      expect(left.rowCount).toBe(0); // the whole migration rolled back
    } else {
      expect((await migrate(pool, migrateOptions(config.postgres, log))).mode).toBe('timescale');
    }
  });

  it('`tickstream migrate` applies, re-runs as a no-op, and `tickstream status` reports mode, tables and partitions', async () => {
    const { config, pool, schema } = fresh();
    const redis = testRedis(config);
    cleanups.push(async () => {
      await cleanupPrefix(redis, config.streams.prefix);
      await closeRedis(redis);
    });
    const env = {
      DATABASE_URL,
      REDIS_URL,
      TICKSTREAM_PG_SCHEMA: schema,
      TICKSTREAM_PG_TIMESCALE: 'off',
      TICKSTREAM_PG_PARTITIONS_AHEAD: '2',
      TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
      LOG_LEVEL: 'warn',
    };
    const first = await runCli(['migrate', '--json'], env);
    expect(first.code, first.stderr).toBe(0);
    const applied = JSON.parse(first.stdout) as {
      mode: string;
      applied: unknown[];
      partitionsCreated: number;
    };
    expect(applied).toMatchObject({ mode: 'plain', partitionsCreated: 6 });
    expect(applied.applied).toHaveLength(LATEST);

    const again = await runCli(['migrate'], env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`Archive schema "${schema}" (plain): up to date at version ${LATEST}`);
    // Nothing to create, unless a UTC day began since the first run: then exactly the new last day, per table.
    const createdAgain = Number(/created (\d+) day partitions ahead/.exec(again.stdout)?.[1] ?? 0);
    expect([0, 2]).toContain(createdAgain);
    const partitions = 3 + createdAgain / 2;

    const status = await runCli(['status', '--json'], env);
    expect(status.code, status.stderr).toBe(0);
    const rows = (JSON.parse(status.stdout) as { sections: Record<string, Record<string, unknown>[]> })
      .sections['Archive (PostgreSQL)'];
    expect(rows).toEqual([
      expect.objectContaining({
        schema,
        table: 'trades',
        mode: 'plain',
        version: `${LATEST}/${LATEST}`,
        partitions,
      }),
      expect.objectContaining({
        schema,
        table: 'quotes',
        mode: 'plain',
        version: `${LATEST}/${LATEST}`,
        partitions,
      }),
    ]);
    expect(await archiveStatus(pool, schema)).toEqual(rows);
  });

  it('reads shared_preload_libraries before trying CREATE EXTENSION (this server does not preload timescaledb)', async () => {
    const { pool } = fresh();
    const libs = await pool.query<{ libs: string }>(
      `SELECT current_setting('shared_preload_libraries') AS libs`,
    );
    const expected = /(^|[\s,"/])timescaledb(\.so)?("|\s*(,|$))/.test(libs.rows[0]!.libs);
    expect(await withClient(pool, (c) => inTransaction(c, () => timescalePreloaded(c)))).toBe(expected);
    // A role that may not read the setting: undefined (unknown), and the transaction stays usable.
    const role = uniqueName('noread');
    await pool.query(`CREATE ROLE ${role}`);
    try {
      const seen = await withClient(pool, (c) =>
        inTransaction(c, async () => {
          await c.query(`SET LOCAL ROLE ${role}`);
          const preloaded = await timescalePreloaded(c);
          const alive = await c.query<{ one: number }>('SELECT 1 AS one');
          return { preloaded, alive: alive.rows[0]?.one };
        }),
      );
      expect(seen).toEqual({ preloaded: undefined, alive: 1 });
    } finally {
      await pool.query(`DROP ROLE ${role}`);
    }
  });

  it('status of a schema never migrated says so', async () => {
    const { pool, schema } = fresh();
    expect(await archiveStatus(pool, schema)).toEqual([
      expect.objectContaining({ schema, mode: 'not migrated', version: `0/${LATEST}` }),
    ]);
  });
});

/**
 * Drop a TimescaleDB test schema: its background jobs first, so that none is running (or starts) against the
 * tables while they are dropped (deadlock detected, could not open relation with OID …).
 */
async function dropTimescaleSchema(pool: PgPool, schema: string): Promise<void> {
  await pool.query(
    `SELECT delete_job(j.job_id)
       FROM timescaledb_information.jobs j
       LEFT JOIN timescaledb_information.continuous_aggregates ca
              ON ca.materialization_hypertable_schema = j.hypertable_schema
             AND ca.materialization_hypertable_name = j.hypertable_name
      WHERE j.hypertable_schema = $1 OR ca.view_schema = $1`,
    [schema],
  );
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
}

const MS = 1_000_000n;

/** Trades of one symbol from `startMs` on, `stepMs` apart, seq from `seq0`. */
function tradesAt(startMs: number, count: number, stepMs: number, seq0 = 0, source = 'ts'): Trade[] {
  return Array.from({ length: count }, (_, i) => ({
    type: 'trade' as const,
    source,
    symbol: i % 2 === 0 ? 'AAA' : 'BBB',
    ts: BigInt(startMs + i * stepMs) * MS + BigInt(i % 1000),
    seq: seq0 + i,
    venue: '',
    price: 10 + (i % 100) / 100,
    size: 1 + (i % 3),
    side: i % 2 === 0 ? 'buy' : 'sell',
  }));
}

describe.skipIf(TIMESCALE_DATABASE_URL === undefined)(
  'archive on TimescaleDB (skipped: set TIMESCALE_DATABASE_URL to run against a real TimescaleDB server)',
  () => {
    // Policies that cannot act during a test: data is from the last few days, compression after 30 days,
    // retention after 10 years. Chunks are compressed by hand where a test needs it.
    const quiet = { compressAfter: '30 days', retention: '3650 days' };
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c();
    });

    function fresh(overrides: Partial<Config['postgres']> = {}): {
      config: Config;
      pool: PgPool;
      schema: string;
    } {
      const schema = uniqueName('archts');
      const config = testConfig({
        postgres: { url: TIMESCALE_DATABASE_URL!, schema, timescale: 'on', ...quiet, ...overrides },
      });
      const pool = createPgPool(config.postgres, { log, max: 3 });
      cleanups.push(async () => {
        await dropTimescaleSchema(pool, schema);
        await closePgPool(pool);
      });
      return { config, pool, schema };
    }

    async function version(pool: PgPool): Promise<string> {
      const { rows } = await pool.query<{ v: string }>(
        `SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'`,
      );
      return rows[0]!.v;
    }

    async function digest(pool: PgPool, schema: string): Promise<{ rows: number; distinct: number }> {
      const { rows } = await pool.query<{ rows: number; distinct: number }>(
        `SELECT count(*)::int AS rows, count(DISTINCT (ts_ns, seq, source, symbol))::int AS distinct
           FROM "${schema}".trades`,
      );
      return rows[0]!;
    }

    it('creates hypertables, the 1-minute continuous aggregate and the policies, idempotently', async () => {
      const { config, pool, schema } = fresh();
      const first = await migrate(pool, migrateOptions(config.postgres, log));
      expect(first.mode).toBe('timescale');
      expect(first.policies).toEqual([
        'trades: compress_after 30 days',
        'trades: drop_after 3650 days',
        'quotes: compress_after 30 days',
        'quotes: drop_after 3650 days',
      ]);
      const hypertables = await pool.query(
        `SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = $1 ORDER BY 1`,
        [schema],
      );
      expect(hypertables.rows.map((r: { hypertable_name: string }) => r.hypertable_name)).toEqual([
        'quotes',
        'trades',
      ]);
      const caggs = await pool.query(
        `SELECT view_name FROM timescaledb_information.continuous_aggregates WHERE view_schema = $1`,
        [schema],
      );
      expect(caggs.rows).toEqual([{ view_name: 'trades_1m' }]);

      const second = await migrate(pool, migrateOptions(config.postgres, log));
      expect(second).toMatchObject({ applied: [], policies: [] });
      // Equal as intervals, different policies: the configured text decides (a month is a calendar month).
      const months = await migrate(
        pool,
        migrateOptions({ ...config.postgres, retention: '120 months' }, log),
      );
      expect(months.policies).toEqual(['trades: drop_after 120 months', 'quotes: drop_after 120 months']);
      const jobs = await pool.query<{ v: string }>(
        `SELECT config->>'drop_after' AS v FROM timescaledb_information.jobs
          WHERE hypertable_schema = $1 AND proc_name = 'policy_retention'`,
        [schema],
      );
      expect(jobs.rows).toEqual([{ v: '10 years' }, { v: '10 years' }]);
      const changed = await migrate(pool, migrateOptions({ ...config.postgres, retention: 'off' }, log));
      expect(changed.policies).toEqual(['trades: removed drop_after', 'quotes: removed drop_after']);

      const status = await timescaleJobsStatus(pool, schema);
      expect(status.map((r) => r.job).sort()).toEqual([
        'policy_compression',
        'policy_compression',
        'policy_refresh_continuous_aggregate',
      ]);
      for (const row of status) expect(row).toHaveProperty('last_run_status');
    });

    it('writes, deduplicates, reads back; status counts rows of chunks never analysed', async () => {
      const { config, pool, schema } = fresh();
      const bad = timescaleVersionProblem(await version(pool));
      const sink = new ArchiveSink({ settings: config.postgres, log, pool });
      if (bad !== undefined) {
        await expect(sink.start()).rejects.toThrow(/upgrade the extension to 2\.18\.1 or later/);
        return;
      }
      await sink.start();
      // The last minutes before now: in the refresh window, never touched by compression or retention.
      const ticks = tradesAt(Date.now() - 120_000, 100, 1_000);
      await sink.write(ticks);
      await sink.flush();
      await sink.write(ticks);
      await sink.flush();
      expect(sink.stats).toMatchObject({ inserted: 100, duplicates: 100, shortfalls: 0 });
      const read: Trade[] = [];
      for await (const batch of readArchive(pool, schema, {
        from: ticks[0]!.ts,
        to: ticks[99]!.ts + 1n,
        batchSize: 30,
      })) {
        read.push(...(batch as Trade[]));
      }
      expect(read).toEqual([...ticks].sort(compareTicks));
      const bars = await pool.query(`SELECT sum(trades)::int AS t FROM "${schema}".trades_1m`);
      expect(bars.rows[0]).toEqual({ t: 100 });
      await waitUntil(
        async () => (await archiveStatus(pool, schema))[0]?.rows_estimate === 100,
        'status to count the unanalysed chunk',
      );
      await sink.close();
    });

    it.each([false, true])(
      'new and already-stored ticks mixed in one batch into a compressed chunk: every new tick stored, none twice (backfillDecompress %s)',
      async (backfillDecompress) => {
        const { config, pool, schema } = fresh({ backfillDecompress });
        const bad = timescaleVersionProblem(await version(pool));
        const sink = new ArchiveSink({ settings: config.postgres, log, pool });
        if (bad !== undefined) {
          await expect(sink.start()).rejects.toThrow(/upgrade the extension to 2\.18\.1 or later/);
          return;
        }
        await sink.start();
        // Two days ago, one chunk; every tenth tick held back, to arrive later among the stored ones.
        const all = tradesAt(Date.now() - 2 * 86_400_000, 2_000, 10);
        const stored = all.filter((_, i) => i % 10 !== 9);
        await sink.write(stored);
        await sink.flush();
        const compressed = await pool.query(
          `SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('"${schema}".trades') c`,
        );
        expect(compressed.rowCount).toBeGreaterThan(0);

        await sink.write(all);
        await sink.flush();
        expect(sink.stats).toMatchObject({
          inserted: all.length,
          duplicates: stored.length,
          shortfalls: 0,
        });
        expect(await digest(pool, schema)).toEqual({ rows: all.length, distinct: all.length });
        // And a replay of everything again: nothing new, nothing twice.
        await sink.write(all);
        await sink.flush();
        expect(await digest(pool, schema)).toEqual({ rows: all.length, distinct: all.length });
        expect(sink.stats.chunksDecompressed > 0).toBe(backfillDecompress);
        await sink.close();
      },
    );

    it('history written behind the refresh policy is in trades_1m after the writer closes, and by migrate --refresh', async () => {
      const { config, pool, schema } = fresh();
      if (timescaleVersionProblem(await version(pool)) !== undefined) return; // covered by the tests above
      const sink = new ArchiveSink({ settings: config.postgres, log, pool });
      await sink.start();
      const ticks = tradesAt(Date.now() - 26 * 3_600_000, 600, 1_000); // 10 minutes, a day ago
      await sink.write(ticks);
      await sink.flush();
      await sink.close();
      expect(sink.stats.aggregateRefreshes).toBeGreaterThan(0);
      const bars = await pool.query(
        `SELECT count(*)::int AS n, sum(trades)::int AS t FROM "${schema}".trades_1m WHERE bucket < now() - interval '4 hours'`,
      );
      expect(bars.rows[0]).toEqual({ n: expect.any(Number), t: 600 });

      // By hand: rows written behind the writer's back (plain SQL) appear after migrate --refresh.
      const extra = tradesAt(Date.now() - 30 * 3_600_000, 60, 1_000, 10_000);
      for (const t of extra) {
        await pool.query(
          `INSERT INTO "${schema}".trades (ts, ts_ns, source, symbol, seq, venue, price, size, side)
           VALUES (to_timestamp($1::bigint / 1e9), $1::bigint, $2, $3, $4, '', $5, $6, $7)`,
          [t.ts.toString(), t.source, t.symbol, t.seq, t.price, t.size, t.side],
        );
      }
      const env = {
        DATABASE_URL: TIMESCALE_DATABASE_URL!,
        REDIS_URL,
        TICKSTREAM_PG_SCHEMA: schema,
        TICKSTREAM_PG_COMPRESS_AFTER: quiet.compressAfter,
        TICKSTREAM_PG_RETENTION: quiet.retention,
        LOG_LEVEL: 'warn',
      };
      const from = new Date(Number(extra[0]!.ts / MS)).toISOString();
      const to = new Date(Number(extra.at(-1)!.ts / MS)).toISOString();
      const run = await runCli(['migrate', '--refresh', '--from', from, '--to', to], env);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toContain('trades_1m refreshed from');
      const after = await pool.query(
        `SELECT sum(trades)::int AS t FROM "${schema}".trades_1m WHERE bucket < now() - interval '4 hours'`,
      );
      expect(after.rows[0]).toEqual({ t: 660 });
    });
  },
);
