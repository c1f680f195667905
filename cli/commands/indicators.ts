import type { Command } from 'commander';
import { handleSignals } from '../../shared/lifecycle.ts';
import { waitForStore } from '../../shared/startup.ts';
import { closePgPool, createPgPool, withClient } from '../../shared/pg.ts';
import { closeRedis, connectRedis } from '../../shared/redis.ts';
import type { TimeframeName } from '../../consumers/bars/aggregate.ts';
import { VALUE_NAMES } from '../../consumers/indicators/compute.ts';
import { indicatorKey } from '../../consumers/indicators/job.ts';
import { IndicatorStore } from '../../consumers/indicators/store.ts';
import { IndicatorService } from '../../consumers/indicators/worker.ts';
import { startProbes } from '../probes.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';
import { escapeText, printTable } from '../table.ts';
import { parseTime, timeframeOption } from './bars.ts';
import { ConfigError, TickstreamError } from '../../shared/errors.ts';
import { backfillIndicators } from '../../consumers/indicators/backfill.ts';
import { assertSchemaCurrent, migrate, migrateOptions } from '../../shared/schema/migrate.ts';
import { startProgress, type JobProgress } from '../progress-bar.ts';

/**
 * `tickstream indicators <SYMBOL> --tf 1m`: the latest indicator values (Redis), or the stored history.
 * `tickstream indicators worker`: job schedulers + BullMQ worker, until SIGINT/SIGTERM.
 * `tickstream indicators backfill`: rows for every closed bar (consumers/indicators/backfill.ts).
 */
export function registerIndicators(program: Command): void {
  const cmd = program
    .command('indicators')
    .description('print a symbol\'s indicators; "indicators worker" runs the scheduled calculator')
    .argument('<symbol>', 'symbol')
    .option('--tf <timeframe>', 'timeframe', timeframeOption, '1m')
    .option(
      '--history <n>',
      'print the last n stored rows (PostgreSQL) instead of the latest values',
      positiveInt('--history'),
    )
    .option('--json', 'print JSON')
    .action((symbol: string, opts: ShowOpts) => runCommand(() => show(symbol, opts)));
  // `--tf` of a subcommand (backfill takes a list) is the subcommand's own, not this command's.
  cmd.enablePositionalOptions();
  cmd
    .command('worker')
    .description('run the indicator job schedulers and a worker (any number of them may run)')
    .option('--no-schedule', 'only work jobs; leave the schedulers to other processes')
    .option('--concurrency <n>', 'jobs at once (TICKSTREAM_IND_CONCURRENCY)', positiveInt('--concurrency'))
    .action((opts: WorkerOpts) => runCommand(() => work(opts)));
  cmd
    .command('backfill')
    .description(
      'compute the indicator row of every closed bar (resumable, idempotent); --from recomputes from there',
    )
    .option('--from <time>', 'recompute rows of bars from this time on (ISO-8601, a date, ms, or <digits>ns)')
    .option('--to <time>', 'only bars starting before this time (same forms)')
    .option('--symbols <list>', 'only these symbols (comma-separated; default: every symbol with bars)')
    .option('--tf <list>', 'timeframes (comma-separated; default TICKSTREAM_IND_TIMEFRAMES)', (v: string) =>
      v.split(',').map((t) => timeframeOption(t.trim())),
    )
    .action((opts: BackfillOpts) => runCommand(() => backfill(opts)));
}

interface BackfillOpts {
  from?: string;
  to?: string;
  symbols?: string;
  tf?: TimeframeName[];
}

async function backfill(opts: BackfillOpts): Promise<void> {
  const from = opts.from === undefined ? undefined : parseTime(opts.from, '--from');
  const to = opts.to === undefined ? undefined : parseTime(opts.to, '--to');
  if (from !== undefined && to !== undefined && to <= from)
    throw new ConfigError(`--to must be after --from`);
  const symbols = opts.symbols
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const { config, log } = makeRuntime();
  const tfs = opts.tf ?? config.indicators.timeframes;
  const pool = createPgPool(config.postgres, {
    log,
    max: 2,
    applicationName: 'tickstream:indicators-backfill',
  });
  const redis = await connectRedis(config, { log });
  let stopping = false;
  const unhook = handleSignals(
    log,
    async () => {
      // Rows commit pass by pass: stopping keeps what was done, and the next run carries on from there.
      stopping = true;
    },
    { timeoutMs: config.consumer.shutdownTimeoutMs, exitAfterStop: false },
  );
  let progress: JobProgress | undefined;
  let done = 0;
  try {
    if (config.postgres.migrateOnStart) await migrate(pool, migrateOptions(config.postgres, log));
    else await assertSchemaCurrent(pool, config.postgres.schema);
    const started = Date.now();
    const results = await backfillIndicators(
      { pool, redis, settings: config.indicators, schema: config.postgres.schema, log },
      {
        tfs,
        symbols,
        from,
        to,
        onTotal: (total) => (progress = startProgress({ log, unit: 'bars', total })),
        onProgress: (computed) => {
          done += computed;
          progress?.update(done, computed);
          if (stopping)
            throw new TickstreamError(
              'stopped by a signal: rows written so far are kept; run again to resume',
              {
                retriable: false,
              },
            );
        },
      },
    );
    progress?.stop();
    progress = undefined;
    printTable(
      results.map((r) => ({
        tf: r.tf,
        symbols: r.symbols,
        computed: r.computed,
        written: r.written,
        warming_up: r.warmingUp,
        deleted: r.deleted,
      })),
    );
    process.stdout.write(
      `backfilled ${results.reduce((n, r) => n + r.computed, 0)} bars, ${results.reduce((n, r) => n + r.written, 0)} rows written ` +
        `(${((Date.now() - started) / 1000).toFixed(1)} s)\n`,
    );
  } finally {
    progress?.stop();
    unhook();
    await closeRedis(redis);
    await closePgPool(pool);
  }
}

interface ShowOpts {
  tf: TimeframeName;
  history?: number;
  json?: boolean;
}

interface WorkerOpts {
  schedule: boolean;
  concurrency?: number;
}

function cell(v: number | null | string | undefined): string | number {
  return v === null || v === undefined || v === '' ? 'n/a' : v;
}

async function show(symbol: string, opts: ShowOpts): Promise<void> {
  const { config, log } = makeRuntime();
  if (opts.history !== undefined) {
    const pool = createPgPool(config.postgres, { log, max: 1, applicationName: 'tickstream:indicators' });
    try {
      const store = new IndicatorStore(config.postgres.schema);
      const rows = await withClient(pool, (c) => store.recent(c, symbol, opts.tf, opts.history!));
      if (opts.json === true) {
        process.stdout.write(
          `${JSON.stringify(
            rows.map((r) => ({ ...r, start: r.start.toString() })),
            null,
            2,
          )}\n`,
        );
      } else {
        printTable(
          rows.map((r) => ({
            time: new Date(Number(r.start / 1_000_000n)).toISOString(),
            ...Object.fromEntries(VALUE_NAMES.map((k) => [k, cell(r.values[k])])),
            status: r.status,
          })),
        );
      }
      if (rows.length === 0) process.exitCode = 1;
    } finally {
      await closePgPool(pool);
    }
    return;
  }
  const redis = await connectRedis(config, { log });
  try {
    const h = await redis.hgetall(indicatorKey(config.indicators.keyPrefix, symbol, opts.tf));
    if (Object.keys(h).length === 0) {
      process.stderr.write(`no ${opts.tf} indicators yet for ${escapeText(symbol)}\n`);
      process.exitCode = 1;
      return;
    }
    if (opts.json === true) {
      const values = Object.fromEntries(
        VALUE_NAMES.map((k) => [k, h[k] === '' || h[k] === undefined ? null : Number(h[k])]),
      );
      process.stdout.write(
        `${JSON.stringify({ symbol, tf: opts.tf, time: h.time, start: h.start, status: h.status, params: h.params, values }, null, 2)}\n`,
      );
      return;
    }
    process.stdout.write(
      `${escapeText(symbol)} ${opts.tf}, bar ${h.time ?? '?'} (${h.status ?? '?'}; ${h.params ?? ''})\n`,
    );
    printTable(VALUE_NAMES.map((k) => ({ indicator: k, value: cell(h[k]) })));
  } finally {
    await closeRedis(redis);
  }
}

async function work(opts: WorkerOpts): Promise<void> {
  const { config, log } = makeRuntime(
    opts.concurrency !== undefined ? { indicators: { concurrency: opts.concurrency } } : undefined,
  );
  const service = new IndicatorService({ config, log, schedule: opts.schedule });
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const stopping = new AbortController();
  let probes: Awaited<ReturnType<typeof startProbes>> | undefined;
  handleSignals(
    log,
    async () => {
      stopping.abort();
      await probes?.close();
      await service.close();
      stopped();
    },
    { timeoutMs: config.consumer.shutdownTimeoutMs },
  );
  let ready: boolean;
  try {
    probes = await startProbes(config, log);
    probes.setChecks(service.readiness());
    ready = await waitForStore(() => service.start(), {
      log,
      signal: stopping.signal,
      baseMs: config.consumer.retryBaseMs,
      maxMs: Math.max(config.consumer.retryMaxMs, 1000),
      what: 'the indicator worker',
    });
  } catch (err) {
    await probes?.close();
    await service.close();
    throw err;
  }
  if (!ready) return;
  log.info(
    { timeframes: config.indicators.timeframes, queue: config.indicators.queueName },
    'indicator worker running',
  );
  await done;
}
