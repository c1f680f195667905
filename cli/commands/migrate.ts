import type { Command } from 'commander';
import {
  archiveStatus,
  daysAhead,
  ensureDayPartitions,
  migrate,
  migrateOptions,
  refreshBars1m,
} from '../../shared/schema/migrate.ts';
import { parseTimestamp } from '../../shared/time.ts';
import { ConfigError, errorMessage, TickstreamError } from '../../shared/errors.ts';
import { closePgPool, createPgPool, pgTarget, withClient } from '../../shared/pg.ts';
import { makeRuntime, runCommand } from '../runtime.ts';
import { printTable } from '../table.ts';

/**
 * `tickstream migrate`: bring the PostgreSQL archive schema (DATABASE_URL, TICKSTREAM_PG_SCHEMA) to the
 * version this build knows, choosing TimescaleDB or native partitioning the first time. Safe to run again and
 * from several places at once; refuses a schema newer than this build.
 */
export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('create or upgrade the PostgreSQL archive schema (idempotent; detects TimescaleDB)')
    .option('--schema <name>', 'schema to migrate (TICKSTREAM_PG_SCHEMA)')
    .option('--timescale <mode>', 'auto | on | off, when creating the schema (TICKSTREAM_PG_TIMESCALE)')
    .option(
      '--refresh',
      'TimescaleDB: also materialise trades_1m over --from..--to (history loaded behind its 3-hour refresh policy)',
    )
    .option('--from <time>', 'with --refresh: start, ISO-8601 or ns since the epoch')
    .option('--to <time>', 'with --refresh: end (inclusive), ISO-8601 or ns since the epoch')
    .option('--json', 'print the result as JSON')
    .action((opts: MigrateOpts) => runCommand(() => run(opts)));
}

interface MigrateOpts {
  schema?: string;
  timescale?: string;
  refresh?: boolean;
  from?: string;
  to?: string;
  json?: boolean;
}

function refreshRange(opts: MigrateOpts): { from: bigint; to: bigint } | undefined {
  if (opts.refresh !== true) {
    if (opts.from !== undefined || opts.to !== undefined)
      throw new ConfigError('--from and --to go with --refresh');
    return undefined;
  }
  const bound = (text: string | undefined, name: string): bigint => {
    if (text === undefined) throw new ConfigError(`--refresh needs ${name}`);
    const ns = parseTimestamp(text);
    if (typeof ns === 'string') throw new ConfigError(`${name} "${text}": ${ns}`);
    return ns;
  };
  const from = bound(opts.from, '--from');
  const to = bound(opts.to, '--to');
  if (to < from) throw new ConfigError('--to is before --from');
  return { from, to };
}

async function run(opts: MigrateOpts): Promise<void> {
  if (opts.timescale !== undefined && !['auto', 'on', 'off'].includes(opts.timescale)) {
    throw new ConfigError(`--timescale must be auto, on or off (got "${opts.timescale}")`);
  }
  const refresh = refreshRange(opts);
  const { config, log } = makeRuntime({
    postgres: {
      ...(opts.schema !== undefined ? { schema: opts.schema } : {}),
      ...(opts.timescale !== undefined ? { timescale: opts.timescale as 'auto' | 'on' | 'off' } : {}),
    },
  });
  const pool = createPgPool(config.postgres, { log, max: 1, applicationName: 'tickstream:migrate' });
  try {
    const result = await migrate(pool, migrateOptions(config.postgres, log)).catch((err: unknown) => {
      if (err instanceof TickstreamError) throw err;
      throw new TickstreamError(`PostgreSQL at ${pgTarget(config.postgres.url)}: ${errorMessage(err)}`, {
        retriable: true,
        cause: err,
      });
    });
    // Writers create partitions as they go; creating today's and the next days' here makes a fresh archive
    // ready (and visible in the status below) before the first writer starts.
    const partitions =
      result.mode === 'plain'
        ? await withClient(pool, (c) =>
            ensureDayPartitions(c, config.postgres.schema, daysAhead(config.postgres.partitionsAhead)),
          )
        : 0;
    let refreshed: { from: string; to: string } | undefined;
    if (refresh !== undefined) {
      if (result.mode !== 'timescale') {
        throw new ConfigError(
          `--refresh: schema "${result.schema}" is plain PostgreSQL, where trades_1m is a view computed on read`,
        );
      }
      refreshed = await refreshBars1m(pool, config.postgres.schema, refresh.from, refresh.to);
    }
    const status = await archiveStatus(pool, config.postgres.schema);
    if (opts.json === true) {
      process.stdout.write(
        `${JSON.stringify({ ...result, partitionsCreated: partitions, refreshed, status }, null, 2)}\n`,
      );
      return;
    }
    const what =
      result.applied.length === 0
        ? `up to date at version ${result.to}`
        : `version ${result.from} → ${result.to}: applied ${result.applied.map((a) => a.file).join(', ')}`;
    process.stdout.write(`Archive schema "${result.schema}" (${result.mode}): ${what}\n`);
    for (const p of result.policies) process.stdout.write(`  policy ${p}\n`);
    if (partitions > 0) process.stdout.write(`  created ${partitions} day partitions ahead\n`);
    if (refreshed !== undefined)
      process.stdout.write(`  trades_1m refreshed from ${refreshed.from} to ${refreshed.to}\n`);
    printTable(status);
  } finally {
    await closePgPool(pool);
  }
}
