import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.ts';
import { errorMessage, TickstreamError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { packagePath } from '../paths.ts';
import { inTransaction, quoteIdent, withClient, type PgClient, type PgPool } from '../pg.ts';

/**
 * Schema migrations of the PostgreSQL archive (infra/migrations), and what `tickstream status` shows of it.
 *
 * - Files are `NNNN_name.sql`, or a pair `NNNN_name.plain.sql` + `NNNN_name.timescale.sql` when the two modes
 *   need different DDL. `{{schema}}` stands for the configured schema (quoted identifier), `{{schema_name}}` for
 *   the same as a string literal, so tests and several deployments can live in one database.
 * - Applied versions are recorded in `<schema>.schema_migrations`; all pending versions run in one transaction
 *   under an advisory lock, so concurrent `migrate` runs (several consumers starting at once) apply each step
 *   exactly once and a failure leaves nothing half-done. A second run changes nothing.
 * - A database at a newer version than this code knows is refused: writing with an older idea of the schema
 *   could silently lose columns or constraints.
 * - The mode (TimescaleDB or native partitioning) is decided once, when version 1 is applied, and stored in
 *   `<schema>.archive_meta`; later runs use the stored mode.
 */
export type ArchiveMode = 'plain' | 'timescale';
export type ArchiveSettings = Config['postgres'];

export const MIGRATIONS_DIR = packagePath('infra', 'migrations');

/** Advisory lock class for migrations ("tick"); the schema's hash is the second key. */
const LOCK_CLASS = 0x7469636b;

export class MigrationError extends TickstreamError {
  override name = 'MigrationError';
  constructor(message: string, cause?: unknown) {
    super(message, { retriable: false, cause });
  }
}

export interface MigrationStep {
  version: number;
  name: string;
  /** SQL text per mode; a common file serves both. */
  sql: Record<ArchiveMode, string>;
  files: Record<ArchiveMode, string>;
}

const FILE = /^(\d{4})_([a-z0-9_]+?)(?:\.(plain|timescale))?\.sql$/;

/** Read and check the migration files: versions 1..N without gaps, each usable in both modes. */
export function loadMigrations(dir: string = MIGRATIONS_DIR): MigrationStep[] {
  const byVersion = new Map<number, { name: string; common?: string; plain?: string; timescale?: string }>();
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith('.sql')) continue;
    const m = FILE.exec(file);
    if (m === null) throw new MigrationError(`${dir}/${file}: expected NNNN_name[.plain|.timescale].sql`);
    const version = Number(m[1]);
    const name = m[2]!;
    const entry = byVersion.get(version) ?? { name };
    if (entry.name !== name)
      throw new MigrationError(`${dir}: version ${version} has two names (${entry.name}, ${name})`);
    const kind = (m[3] ?? 'common') as 'common' | ArchiveMode;
    if (entry[kind] !== undefined)
      throw new MigrationError(`${dir}: duplicate file for version ${version} (${kind})`);
    entry[kind] = file;
    byVersion.set(version, entry);
  }
  const steps: MigrationStep[] = [];
  const versions = [...byVersion.keys()].sort((a, b) => a - b);
  versions.forEach((version, i) => {
    if (version !== i + 1)
      throw new MigrationError(
        `${dir}: versions must run 1..N without gaps (found ${version} at position ${i + 1})`,
      );
    const e = byVersion.get(version)!;
    const plain = e.plain ?? e.common;
    const timescale = e.timescale ?? e.common;
    if (
      plain === undefined ||
      timescale === undefined ||
      (e.common !== undefined && (e.plain ?? e.timescale) !== undefined)
    ) {
      throw new MigrationError(
        `${dir}: version ${version} needs either one common file or both a .plain.sql and a .timescale.sql`,
      );
    }
    steps.push({
      version,
      name: e.name,
      files: { plain, timescale },
      sql: {
        plain: readFileSync(join(dir, plain), 'utf8'),
        timescale: readFileSync(join(dir, timescale), 'utf8'),
      },
    });
  });
  if (steps.length === 0) throw new MigrationError(`${dir}: no migrations found`);
  return steps;
}

/** Substitute the schema placeholders. The schema name is already restricted to [a-z0-9_] by the config. */
export function renderSql(sql: string, schema: string): string {
  return sql
    .replaceAll('{{schema}}', quoteIdent(schema))
    .replaceAll('{{schema_name}}', `'${schema.replace(/'/g, "''")}'`);
}

export function checksum(sql: string): string {
  return createHash('sha256').update(sql).digest('hex').slice(0, 16);
}

export interface MigrateOptions {
  schema: string;
  /** auto | on | off: whether to use TimescaleDB when creating the schema. */
  timescale: ArchiveSettings['timescale'];
  compressAfter: string;
  retention: string;
  log: Logger;
  /** Tests point this at a directory of their own. */
  migrationsDir?: string;
}

export interface MigrateResult {
  schema: string;
  mode: ArchiveMode;
  from: number;
  to: number;
  applied: { version: number; name: string; file: string }[];
  /** TimescaleDB policies added or changed by this run. */
  policies: string[];
}

export function migrateOptions(settings: ArchiveSettings, log: Logger): MigrateOptions {
  return {
    schema: settings.schema,
    timescale: settings.timescale,
    compressAfter: settings.compressAfter,
    retention: settings.retention,
    log,
  };
}

/** Bring the archive schema to the newest version this code knows. Idempotent and safe to run concurrently. */
export async function migrate(pool: PgPool, o: MigrateOptions): Promise<MigrateResult> {
  const steps = loadMigrations(o.migrationsDir);
  const latest = steps[steps.length - 1]!.version;
  const q = quoteIdent(o.schema);
  const log = o.log.child({ component: 'archive.migrate', schema: o.schema });
  return withClient(pool, (client) =>
    inTransaction(client, async () => {
      await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_CLASS, o.schema]);
      // Statements below print NOTICEs when objects exist already; they are expected on every re-run.
      await client.query(`SET LOCAL client_min_messages = warning`);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${q}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${q}.schema_migrations (
           version    integer PRIMARY KEY,
           name       text NOT NULL,
           mode       text NOT NULL,
           checksum   text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now()
         )`,
      );
      const { rows } = await client.query<{ version: number; name: string; checksum: string; mode: string }>(
        `SELECT version, name, checksum, mode FROM ${q}.schema_migrations ORDER BY version`,
      );
      const current = rows.length === 0 ? 0 : rows[rows.length - 1]!.version;
      if (current > latest) throw newerSchemaError(o.schema, current, latest);

      let mode = await storedMode(client, o.schema);
      if (mode === undefined) mode = await detectMode(client, o.timescale, log);
      else if (
        (o.timescale === 'on' && mode === 'plain') ||
        (o.timescale === 'off' && mode === 'timescale')
      ) {
        log.warn(
          { mode, requested: o.timescale },
          'archive schema already exists in the other mode; keeping it (a new schema is needed to switch)',
        );
      }

      for (const row of rows) {
        const step = steps.find((s) => s.version === row.version);
        if (step !== undefined && checksum(step.sql[mode]) !== row.checksum) {
          log.warn(
            { version: row.version, file: step.files[mode] },
            'an applied migration file has changed since it was applied; it is not re-run',
          );
        }
      }

      const applied: MigrateResult['applied'] = [];
      for (const step of steps) {
        if (step.version <= current) continue;
        try {
          await client.query(renderSql(step.sql[mode], o.schema));
        } catch (err) {
          throw new MigrationError(
            `migration ${step.files[mode]} failed on schema "${o.schema}": ${errorMessage(err)}`,
            err,
          );
        }
        await client.query(
          `INSERT INTO ${q}.schema_migrations (version, name, mode, checksum) VALUES ($1, $2, $3, $4)`,
          [step.version, step.name, mode, checksum(step.sql[mode])],
        );
        applied.push({ version: step.version, name: step.name, file: step.files[mode] });
      }
      const policies = mode === 'timescale' ? await applyTimescalePolicies(client, o) : [];
      if (applied.length > 0 || policies.length > 0) {
        log.info(
          { mode, from: current, to: latest, applied: applied.map((a) => a.file), policies },
          'migrated',
        );
      }
      return { schema: o.schema, mode, from: current, to: latest, applied, policies };
    }),
  );
}

function newerSchemaError(schema: string, current: number, latest: number): MigrationError {
  return new MigrationError(
    `archive schema "${schema}" is at version ${current}, newer than this tickstream knows (${latest}): ` +
      `upgrade tickstream, or point TICKSTREAM_PG_SCHEMA at another schema`,
  );
}

async function storedMode(client: PgClient, schema: string): Promise<ArchiveMode | undefined> {
  const meta = `${quoteIdent(schema)}.archive_meta`;
  const exists = await client.query<{ ok: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS ok`, [meta]);
  if (exists.rows[0]?.ok !== true) return undefined;
  const { rows } = await client.query<{ value: string }>(`SELECT value FROM ${meta} WHERE key = 'mode'`);
  const value = rows[0]?.value;
  return value === 'plain' || value === 'timescale' ? value : undefined;
}

/**
 * TimescaleDB when asked for (on) or when installed or installable (auto). `CREATE EXTENSION timescaledb` is
 * only tried when the library is in `shared_preload_libraries`: without it the server answers with a FATAL
 * error that closes the connection, which no savepoint can catch. The decision itself is `timescaleDecision`.
 */
async function detectMode(
  client: PgClient,
  wanted: ArchiveSettings['timescale'],
  log: Logger,
): Promise<ArchiveMode> {
  if (wanted === 'off') return 'plain';
  const installed = await client.query(`SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'`);
  const available = await client.query(`SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`);
  const decision = timescaleDecision({
    wanted,
    installed: (installed.rowCount ?? 0) > 0,
    available: (available.rowCount ?? 0) > 0,
    preloaded: await timescalePreloaded(client),
  });
  if (decision.kind === 'error') throw new MigrationError(decision.message);
  if (decision.kind === 'plain') {
    if (decision.reason !== undefined) log.warn({ reason: decision.reason }, 'using native partitioning');
    return 'plain';
  }
  if (decision.kind === 'timescale') return 'timescale';
  await client.query('SAVEPOINT tickstream_timescale');
  try {
    await client.query('CREATE EXTENSION IF NOT EXISTS timescaledb');
    await client.query('RELEASE SAVEPOINT tickstream_timescale');
    return 'timescale';
  } catch (err) {
    await client.query('ROLLBACK TO SAVEPOINT tickstream_timescale');
    if (wanted === 'on') throw new MigrationError('cannot enable the timescaledb extension', err);
    log.warn({ err }, 'timescaledb is available but could not be enabled: using native partitioning');
    return 'plain';
  }
}

const PRELOAD_HINT =
  "add timescaledb to shared_preload_libraries in postgresql.conf (shared_preload_libraries = 'timescaledb') " +
  'and restart PostgreSQL';

export type TimescaleDecision =
  | { kind: 'plain'; reason?: string }
  | { kind: 'timescale' }
  | { kind: 'create' }
  | { kind: 'error'; message: string };

/**
 * Whether to use TimescaleDB, from what the server says. `preloaded` is undefined when the role may not read
 * `shared_preload_libraries` (it is superuser-only unless granted pg_read_all_settings).
 */
export function timescaleDecision(s: {
  wanted: 'auto' | 'on';
  installed: boolean;
  available: boolean;
  preloaded: boolean | undefined;
}): TimescaleDecision {
  if (s.installed) {
    if (s.preloaded === false) {
      return s.wanted === 'on'
        ? {
            kind: 'error',
            message: `TICKSTREAM_PG_TIMESCALE=on: the timescaledb extension is installed but its library is not preloaded: ${PRELOAD_HINT}`,
          }
        : {
            kind: 'plain',
            reason: `timescaledb is installed but not in shared_preload_libraries (${PRELOAD_HINT} to use it)`,
          };
    }
    return { kind: 'timescale' };
  }
  if (!s.available) {
    return s.wanted === 'on'
      ? {
          kind: 'error',
          message: 'TICKSTREAM_PG_TIMESCALE=on but the timescaledb extension is not available on this server',
        }
      : { kind: 'plain' };
  }
  if (s.preloaded === true) return { kind: 'create' };
  if (s.preloaded === false) {
    return s.wanted === 'on'
      ? {
          kind: 'error',
          message: `TICKSTREAM_PG_TIMESCALE=on: the timescaledb extension is available but not preloaded: ${PRELOAD_HINT}`,
        }
      : {
          kind: 'plain',
          reason: `timescaledb is available but not in shared_preload_libraries (${PRELOAD_HINT} to use it)`,
        };
  }
  // Cannot tell: only an explicit "on" risks CREATE EXTENSION (a FATAL error then names the cause).
  return s.wanted === 'on'
    ? { kind: 'create' }
    : {
        kind: 'plain',
        reason:
          'timescaledb is available but this role cannot read shared_preload_libraries to tell whether it is ' +
          'preloaded; set TICKSTREAM_PG_TIMESCALE=on to use it',
      };
}

/** Whether `timescaledb` is in shared_preload_libraries; undefined when this role may not read the setting. */
export async function timescalePreloaded(client: PgClient): Promise<boolean | undefined> {
  await client.query('SAVEPOINT tickstream_preload');
  try {
    const { rows } = await client.query<{ libs: string | null }>(
      `SELECT current_setting('shared_preload_libraries', true) AS libs`,
    );
    await client.query('RELEASE SAVEPOINT tickstream_preload');
    return preloadListHas(rows[0]?.libs ?? '', 'timescaledb');
  } catch {
    await client.query('ROLLBACK TO SAVEPOINT tickstream_preload');
    return undefined;
  }
}

/** `shared_preload_libraries` is a comma-separated list whose items may be quoted or carry a path. */
export function preloadListHas(list: string, library: string): boolean {
  return list
    .split(',')
    .map((item) => item.trim().replace(/^"(.*)"$/, '$1'))
    .some((item) => item.replace(/^.*\//, '').replace(/\.so$/, '') === library);
}

/**
 * TimescaleDB releases whose INSERT … ON CONFLICT DO NOTHING into a compressed chunk stops at the first
 * conflicting row and silently skips the rest (timescale/timescaledb#7672, fixed in 2.18.1).
 */
export const TIMESCALE_BAD_RANGE = { from: [2, 16, 0], to: [2, 18, 0] } as const;
export const TIMESCALE_FIXED_IN = '2.18.1';

/** `2.17.2`, `2.18.0-dev` → [2, 17, 2]; undefined when it does not start with a version number. */
export function parseVersion(text: string): [number, number, number] | undefined {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?/.exec(text.trim());
  if (m === null) return undefined;
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
}

/** Why this TimescaleDB version must not be written to, or undefined when it is fine. */
export function timescaleVersionProblem(version: string): string | undefined {
  const v = parseVersion(version);
  if (v === undefined) return undefined;
  if (compareVersions(v, TIMESCALE_BAD_RANGE.from) < 0 || compareVersions(v, TIMESCALE_BAD_RANGE.to) > 0) {
    return undefined;
  }
  return (
    `TimescaleDB ${version} silently skips rows of INSERT … ON CONFLICT DO NOTHING into compressed chunks ` +
    `(timescale/timescaledb#7672, affects 2.16.0–2.18.0): upgrade the extension to ${TIMESCALE_FIXED_IN} or ` +
    `later (ALTER EXTENSION timescaledb UPDATE after installing it) before archiving into it`
  );
}

/** The installed TimescaleDB version in this database, or undefined when the extension is not installed. */
export async function timescaleVersion(client: PgClient | PgPool): Promise<string | undefined> {
  const { rows } = await client.query<{ v: string }>(
    `SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'`,
  );
  return rows[0]?.v;
}

/** Refuse a TimescaleDB release with the known silent-loss bug; the message names the fix. */
export async function assertTimescaleVersion(client: PgClient | PgPool): Promise<void> {
  const version = await timescaleVersion(client);
  const problem = version === undefined ? undefined : timescaleVersionProblem(version);
  if (problem !== undefined) throw new MigrationError(problem);
}

/**
 * Compression and retention policies follow the configuration: added when missing, replaced when the
 * interval differs, removed when set to "off". Unchanged settings change nothing. Intervals are compared as
 * PostgreSQL prints them (the job stores that text), not by value: `'3 months'` and `'90 days'` are equal as
 * intervals but are different policies (a month is a calendar month), so changing one to the other is applied.
 */
async function applyTimescalePolicies(client: PgClient, o: MigrateOptions): Promise<string[]> {
  const changes: string[] = [];
  for (const table of ['trades', 'quotes']) {
    const rel = `${quoteIdent(o.schema)}.${table}`;
    for (const policy of [
      {
        proc: 'policy_compression',
        key: 'compress_after',
        value: o.compressAfter,
        add: 'add_compression_policy',
        remove: 'remove_compression_policy',
      },
      {
        proc: 'policy_retention',
        key: 'drop_after',
        value: o.retention,
        add: 'add_retention_policy',
        remove: 'remove_retention_policy',
      },
    ]) {
      const { rows } = await client.query<{ current: string | null; same: boolean | null }>(
        `SELECT config->>$3 AS current,
                CASE WHEN $4 = 'off' THEN NULL ELSE config->>$3 = ($4::interval)::text END AS same
           FROM timescaledb_information.jobs
          WHERE proc_name = $5 AND hypertable_schema = $1 AND hypertable_name = $2`,
        [o.schema, table, policy.key, policy.value, policy.proc],
      );
      const existing = rows[0];
      if (policy.value === 'off') {
        if (existing === undefined) continue;
        await client.query(`SELECT ${policy.remove}($1::regclass, if_exists => true)`, [rel]);
        changes.push(`${table}: removed ${policy.key}`);
        continue;
      }
      if (existing?.same === true) continue;
      if (existing !== undefined)
        await client.query(`SELECT ${policy.remove}($1::regclass, if_exists => true)`, [rel]);
      await client.query(`SELECT ${policy.add}($1::regclass, $2::interval)`, [rel, policy.value]);
      changes.push(`${table}: ${policy.key} ${policy.value}`);
    }
  }
  return changes;
}

const MS_PER_DAY = 86_400_000;

/**
 * Plain mode: make sure the day partitions of both tables exist for these days (UTC days since the epoch).
 * One statement per partition, each its own transaction, so a parent table is locked only briefly.
 * Returns how many partitions were created.
 */
export async function ensureDayPartitions(
  client: PgClient,
  schema: string,
  days: Iterable<number>,
): Promise<number> {
  let created = 0;
  for (const day of days) {
    const date = new Date(day * MS_PER_DAY).toISOString().slice(0, 10);
    for (const table of ['trades', 'quotes']) {
      const r = await client.query<{ created: boolean }>(
        `SELECT ${quoteIdent(schema)}.ensure_day_partition($1, $2::date) AS created`,
        [table, date],
      );
      if (r.rows[0]?.created === true) created++;
    }
  }
  return created;
}

/** Today (UTC) and the `ahead` following days. */
export function daysAhead(ahead: number, nowMs: number = Date.now()): number[] {
  const today = Math.floor(nowMs / MS_PER_DAY);
  return Array.from({ length: ahead + 1 }, (_, i) => today + i);
}

export interface SchemaState {
  /** 0 when the schema was never migrated. */
  version: number;
  latest: number;
  mode: ArchiveMode | undefined;
}

export async function schemaState(
  pool: PgPool,
  schema: string,
  migrationsDir?: string,
): Promise<SchemaState> {
  const latest = loadMigrations(migrationsDir).at(-1)!.version;
  return withClient(pool, async (client) => {
    const { rows } = await client.query<{ ok: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS ok`, [
      `${quoteIdent(schema)}.schema_migrations`,
    ]);
    if (rows[0]?.ok !== true) return { version: 0, latest, mode: undefined };
    const v = await client.query<{ version: number | null }>(
      `SELECT max(version) AS version FROM ${quoteIdent(schema)}.schema_migrations`,
    );
    return { version: v.rows[0]?.version ?? 0, latest, mode: await storedMode(client, schema) };
  });
}

/** For writers started without migrateOnStart: the schema must be exactly the version this code knows. */
export async function assertSchemaCurrent(pool: PgPool, schema: string): Promise<ArchiveMode> {
  const state = await schemaState(pool, schema);
  if (state.version > state.latest) throw newerSchemaError(schema, state.version, state.latest);
  if (state.version < state.latest || state.mode === undefined) {
    throw new MigrationError(
      `archive schema "${schema}" is at version ${state.version}, this tickstream needs ${state.latest}: ` +
        `run \`tickstream migrate\` (or set TICKSTREAM_PG_MIGRATE_ON_START=true)`,
    );
  }
  return state.mode;
}

/** `tickstream status` rows: one per archive table. */
export async function archiveStatus(pool: PgPool, schema: string): Promise<Record<string, unknown>[]> {
  const state = await schemaState(pool, schema);
  if (state.version === 0 || state.mode === undefined) {
    return [{ schema, mode: 'not migrated', version: `0/${state.latest}`, hint: 'run tickstream migrate' }];
  }
  const mode = state.mode;
  return withClient(pool, async (client) => {
    const out: Record<string, unknown>[] = [];
    for (const table of ['trades', 'quotes']) {
      const rel = `${quoteIdent(schema)}.${table}`;
      let rowsEstimate: number;
      let parts: number;
      let oldest: string | null;
      let newest: string | null;
      if (mode === 'timescale') {
        // approximate_row_count is 0 for chunks never analysed: the live-tuple counter covers those.
        const r = await client.query<{ n: string; chunks: string; lo: string | null; hi: string | null }>(
          `SELECT greatest(approximate_row_count($1::regclass),
                           coalesce(sum(CASE WHEN k.reltuples >= 0 THEN k.reltuples
                                             ELSE coalesce(s.n_live_tup, 0) END), 0))::bigint::text AS n,
                  count(c.*)::text AS chunks,
                  min(c.range_start)::date::text AS lo,
                  max(c.range_end - interval '1 microsecond')::date::text AS hi
             FROM timescaledb_information.chunks c
             JOIN pg_class k ON k.oid = format('%I.%I', c.chunk_schema, c.chunk_name)::regclass
             LEFT JOIN pg_stat_user_tables s ON s.relid = k.oid
            WHERE c.hypertable_schema = $2 AND c.hypertable_name = $3`,
          [rel, schema, table],
        );
        rowsEstimate = Number(r.rows[0]?.n ?? 0);
        parts = Number(r.rows[0]?.chunks ?? 0);
        oldest = r.rows[0]?.lo ?? null;
        newest = r.rows[0]?.hi ?? null;
      } else {
        // reltuples is -1 for a partition never analysed; the live-tuple counter covers those until autovacuum.
        const r = await client.query<{ n: string; parts: string; lo: string | null; hi: string | null }>(
          `SELECT coalesce(sum(CASE WHEN c.reltuples >= 0 THEN c.reltuples
                                    ELSE coalesce(s.n_live_tup, 0) END), 0)::bigint::text AS n,
                  count(*)::text AS parts,
                  min(right(c.relname, 8)) AS lo,
                  max(right(c.relname, 8)) AS hi
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
            WHERE i.inhparent = $1::regclass`,
          [rel],
        );
        rowsEstimate = Number(r.rows[0]?.n ?? 0);
        parts = Number(r.rows[0]?.parts ?? 0);
        oldest = dayName(r.rows[0]?.lo ?? null);
        newest = dayName(r.rows[0]?.hi ?? null);
      }
      out.push({
        schema,
        table,
        mode,
        version: `${state.version}/${state.latest}`,
        rows_estimate: rowsEstimate,
        [mode === 'timescale' ? 'chunks' : 'partitions']: parts,
        first_day: oldest ?? '-',
        last_day: newest ?? '-',
      });
    }
    return out;
  });
}

function dayName(yyyymmdd: string | null): string | null {
  if (yyyymmdd === null || !/^\d{8}$/.test(yyyymmdd)) return null;
  return `${yyyymmdd.slice(0, 4)}-${yyyymmdd.slice(4, 6)}-${yyyymmdd.slice(6)}`;
}

/** The refresh policy of `trades_1m` (0002_ohlcv_1m.timescale.sql) covers this far back; older is by hand. */
export const BARS_1M_POLICY_WINDOW_MS = 3 * 3_600_000;

const NS_PER_MINUTE = 60_000_000_000n;

/**
 * Materialise the continuous aggregate `trades_1m` over the minutes touched by [fromNs, toNs] (exchange
 * time, ns), so that history written behind the refresh policy's window is queryable at once. TimescaleDB
 * only; it runs outside a transaction (refresh_continuous_aggregate refuses one), hence literals, not
 * parameters (both are formatted here from numbers, the schema is a checked identifier).
 */
export async function refreshBars1m(
  pool: PgPool,
  schema: string,
  fromNs: bigint,
  toNs: bigint,
): Promise<{ from: string; to: string }> {
  const lo = (fromNs / NS_PER_MINUTE) * NS_PER_MINUTE;
  const hi = (toNs / NS_PER_MINUTE + 1n) * NS_PER_MINUTE;
  const iso = (ns: bigint): string => new Date(Number(ns / 1_000_000n)).toISOString();
  const range = { from: iso(lo), to: iso(hi) };
  const view = `${quoteIdent(schema)}.trades_1m`.replace(/'/g, "''");
  await pool.query(
    `CALL refresh_continuous_aggregate('${view}', '${range.from}'::timestamptz, '${range.to}'::timestamptz)`,
  );
  return range;
}

/**
 * `tickstream status` rows for the TimescaleDB background jobs of this schema (compression, retention, the
 * aggregate's refresh): their last run's state, so a job that keeps failing is seen. An empty list in plain
 * mode.
 */
export async function timescaleJobsStatus(pool: PgPool, schema: string): Promise<Record<string, unknown>[]> {
  const state = await schemaState(pool, schema);
  if (state.mode !== 'timescale') return [];
  const base = `
    SELECT j.job_id, j.proc_name AS job, coalesce(ca.view_name, j.hypertable_name) AS relation,
           j.schedule_interval::text AS every, s.job_status, s.last_run_status,
           s.last_run_started_at::text AS last_run, s.last_successful_finish::text AS last_success,
           s.next_start::text AS next_start, s.total_runs, s.total_failures%ERR%
      FROM timescaledb_information.jobs j
      LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
      LEFT JOIN timescaledb_information.continuous_aggregates ca
             ON ca.materialization_hypertable_schema = j.hypertable_schema
            AND ca.materialization_hypertable_name = j.hypertable_name
     WHERE j.hypertable_schema = $1 OR ca.view_schema = $1
     ORDER BY j.job_id`;
  const lastError = `,
           (SELECT e.err_message FROM timescaledb_information.job_errors e
             WHERE e.job_id = j.job_id ORDER BY e.finish_time DESC LIMIT 1) AS last_error`;
  try {
    return (await pool.query(base.replace('%ERR%', lastError), [schema])).rows;
  } catch {
    // timescaledb_information.job_errors exists from 2.9 on, and may be closed to this role.
    return (await pool.query(base.replace('%ERR%', ''), [schema])).rows;
  }
}
