import { afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, type PgPool } from '../../shared/pg.ts';
import { closeRedis } from '../../shared/redis.ts';
import { ArchiveSink, readArchive } from '../../consumers/sinks/archive.ts';
import {
  archiveStatus,
  assertSchemaCurrent,
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
        partitions: 3,
      }),
      expect.objectContaining({
        schema,
        table: 'quotes',
        mode: 'plain',
        version: `${LATEST}/${LATEST}`,
        partitions: 3,
      }),
    ]);
    expect(await archiveStatus(pool, schema)).toEqual(rows);
  });

  it('status of a schema never migrated says so', async () => {
    const { pool, schema } = fresh();
    expect(await archiveStatus(pool, schema)).toEqual([
      expect.objectContaining({ schema, mode: 'not migrated', version: `0/${LATEST}` }),
    ]);
  });
});

describe.skipIf(TIMESCALE_DATABASE_URL === undefined)(
  'archive on TimescaleDB (skipped: set TIMESCALE_DATABASE_URL to run against a real TimescaleDB server)',
  () => {
    it('creates hypertables, the 1-minute continuous aggregate and the policies, idempotently', async () => {
      const schema = uniqueName('archts');
      const config = testConfig({
        postgres: {
          url: TIMESCALE_DATABASE_URL!,
          schema,
          timescale: 'on',
          compressAfter: '3 days',
          retention: '90 days',
        },
      });
      const pool = createPgPool(config.postgres, { log, max: 2 });
      try {
        const first = await migrate(pool, migrateOptions(config.postgres, log));
        expect(first.mode).toBe('timescale');
        expect(first.policies).toHaveLength(4);
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
        const changed = await migrate(pool, migrateOptions({ ...config.postgres, retention: 'off' }, log));
        expect(changed.policies).toEqual(['trades: removed drop_after', 'quotes: removed drop_after']);

        const sink = new ArchiveSink({ settings: config.postgres, log, pool });
        await sink.start();
        const base = 1_700_000_000_000_000_000n;
        const ticks: Trade[] = Array.from({ length: 100 }, (_, i) => ({
          type: 'trade',
          source: 'ts',
          symbol: 'AAA',
          ts: base + BigInt(i) * 1_000_000_007n,
          seq: i,
          venue: '',
          price: 10 + i / 100,
          size: 1,
          side: '',
        }));
        await sink.write(ticks);
        await sink.flush();
        await sink.write(ticks);
        await sink.flush();
        expect(sink.stats).toMatchObject({ inserted: 100, duplicates: 100 });
        const read: Trade[] = [];
        for await (const batch of readArchive(pool, schema, {
          from: base,
          to: base + 10n ** 12n,
          batchSize: 30,
        })) {
          read.push(...(batch as Trade[]));
        }
        expect(read).toEqual(ticks);
        const bars = await pool.query(
          `SELECT count(*)::int AS n, sum(trades)::int AS t FROM "${schema}".trades_1m`,
        );
        expect(bars.rows[0]).toEqual({ n: 2, t: 100 });
        const status = await archiveStatus(pool, schema);
        expect(status[0]).toMatchObject({ table: 'trades', mode: 'timescale', chunks: 1 });
        await sink.close();
      } finally {
        await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        await closePgPool(pool);
      }
    });
  },
);
