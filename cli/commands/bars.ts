import type { Command } from 'commander';
import { ConfigError, TickstreamError } from '../../shared/errors.ts';
import { handleSignals } from '../../shared/lifecycle.ts';
import { closePgPool, createPgPool, withClient } from '../../shared/pg.ts';
import { RateLine } from '../../shared/progress.ts';
import { closeRedis, connectRedis } from '../../shared/redis.ts';
import { TIMEFRAME_NAMES, type TimeframeName } from '../../consumers/bars/aggregate.ts';
import { alignRange, rebuildBars } from '../../consumers/bars/rebuild.ts';
import { recomputeStale } from '../../consumers/indicators/backfill.ts';
import { BarStore } from '../../consumers/bars/store.ts';
import { readArchive } from '../../consumers/sinks/archive.ts';
import { assertSchemaCurrent, migrate, migrateOptions } from '../../shared/schema/migrate.ts';
import { barStoreSettings, readCurrentBar, trimDecimal } from '../../consumers/sinks/bars.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';
import { escapeText, printTable } from '../table.ts';

/**
 * `tickstream bars <SYMBOL>`: the current bar (Redis) and the latest stored bars (PostgreSQL).
 * `tickstream bars rebuild --from --to`: recompute the bars of a range from the PostgreSQL archive, then the
 * indicator rows of the bars it replaced.
 */
export function registerBars(program: Command): void {
  const bars = program
    .command('bars')
    .description(
      'print a symbol\'s current and latest bars; "bars rebuild" recomputes a range from the archive',
    )
    .argument('<symbol>', 'symbol')
    .option('--tf <timeframe>', `timeframe (${TIMEFRAME_NAMES.join(', ')})`, timeframeOption, '1m')
    .option('--last <n>', 'stored bars to print', positiveInt('--last'), 10)
    .option('--json', 'print JSON')
    .action((symbol: string, opts: ShowOpts) => runCommand(() => show(symbol, opts)));
  bars
    .command('rebuild')
    .description(
      'recompute the bars of a time range from the archive (widened to whole hours), replacing them',
    )
    .requiredOption(
      '--from <time>',
      'start: ISO-8601, a date (UTC midnight), ms since the epoch, or <digits>ns',
    )
    .requiredOption('--to <time>', 'end (exclusive), same forms')
    .option('--symbols <list>', 'only these symbols (comma-separated)')
    .action((opts: RebuildOpts) => runCommand(() => rebuild(opts)));
}

interface ShowOpts {
  tf: TimeframeName;
  last: number;
  json?: boolean;
}

interface RebuildOpts {
  from: string;
  to: string;
  symbols?: string;
}

export function timeframeOption(v: string): TimeframeName {
  if (!(TIMEFRAME_NAMES as string[]).includes(v)) {
    throw new ConfigError(`--tf must be one of ${TIMEFRAME_NAMES.join(', ')} (got "${v}")`);
  }
  return v as TimeframeName;
}

/** ISO-8601 time, a date (its UTC midnight), ms since the epoch, or nanoseconds written as <digits>ns. */
export function parseTime(text: string, flag: string): bigint {
  const t = text.trim();
  const ns = /^(\d{1,19})ns$/.exec(t);
  if (ns !== null) return BigInt(ns[1]!);
  if (/^\d{1,15}$/.test(t)) return BigInt(t) * 1_000_000n;
  const iso = /^\d{4}-\d{2}-\d{2}$/.test(t) ? `${t}T00:00:00Z` : t;
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms) || !/^\d{4}-\d{2}-\d{2}/.test(t)) {
    throw new ConfigError(
      `${flag}: "${text}" is not a time (ISO-8601, a date, ms since the epoch, or <digits>ns)`,
    );
  }
  return BigInt(ms) * 1_000_000n;
}

function nsToIso(ns: bigint): string {
  return new Date(Number(ns / 1_000_000n)).toISOString();
}

async function show(symbol: string, opts: ShowOpts): Promise<void> {
  const { config, log } = makeRuntime();
  const redis = await connectRedis(config, { log });
  const pool = createPgPool(config.postgres, { log, max: 1, applicationName: 'tickstream:bars' });
  try {
    const current = await readCurrentBar(redis, config.bars.keyPrefix, symbol, opts.tf);
    const store = new BarStore(barStoreSettings(config));
    const stored = await withClient(pool, (c) => store.recentBars(c, symbol, opts.tf, opts.last));
    if (opts.json === true) {
      const rows = stored.map((r) => ({ ...r, start: r.start.toString(), rev: r.rev.toString() }));
      process.stdout.write(`${JSON.stringify({ current: current ?? null, bars: rows }, null, 2)}\n`);
      return;
    }
    process.stdout.write(
      `Current ${opts.tf} bar of ${escapeText(symbol)} (Redis ${escapeText(config.bars.keyPrefix + symbol)}:${opts.tf})\n`,
    );
    if (current === undefined) process.stdout.write('(none yet)\n');
    else {
      printTable([
        {
          time: current.time,
          open: current.open,
          high: current.high,
          low: current.low,
          close: current.close,
          volume: current.volume,
          vwap: current.vwap === '' ? '-' : current.vwap,
          trades: current.trades,
          late: current.late,
          closed: current.closed === '1' ? 'yes' : 'no',
        },
      ]);
    }
    process.stdout.write(`\nLatest ${opts.tf} bars (PostgreSQL ${config.postgres.schema}.bars)\n`);
    printTable(
      stored.map((r) => ({
        time: nsToIso(r.start),
        open: r.open,
        high: r.high,
        low: r.low,
        close: r.close,
        volume: trimDecimal(r.volume),
        vwap: r.vwap ?? '-',
        trades: r.trades,
        late: r.late,
        closed: r.closed ? 'yes' : 'no',
      })),
    );
    if (current === undefined && stored.length === 0) process.exitCode = 1;
  } finally {
    await closePgPool(pool);
    await closeRedis(redis);
  }
}

async function rebuild(opts: RebuildOpts): Promise<void> {
  const from = parseTime(opts.from, '--from');
  const to = parseTime(opts.to, '--to');
  const symbols = opts.symbols
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const { config, log } = makeRuntime();
  const store = new BarStore(barStoreSettings(config));
  const range = alignRange({ from, to }, store.settings.timeframes);
  const pool = createPgPool(config.postgres, { log, max: 2, applicationName: 'tickstream:bars-rebuild' });
  const abort = new AbortController();
  const unhook = handleSignals(
    log,
    async () => {
      // Stopping mid-way rolls the transaction back: the old bars stay as they were.
      abort.abort();
    },
    { timeoutMs: config.consumer.shutdownTimeoutMs, exitAfterStop: false },
  );
  try {
    if (config.postgres.migrateOnStart) await migrate(pool, migrateOptions(config.postgres, log));
    else await assertSchemaCurrent(pool, config.postgres.schema);
    log.info(
      { from: nsToIso(range.from), to: nsToIso(range.to), symbols: symbols ?? 'all' },
      'rebuilding bars from the archive',
    );
    const line = new RateLine(log, 'trades');
    let seen = 0;
    const ticks = readArchive(pool, config.postgres.schema, {
      from: range.from,
      to: range.to,
      types: ['trade'],
      ...(symbols !== undefined ? { symbols } : {}),
    });
    const guarded = (async function* () {
      for await (const batch of ticks) {
        // Not a configuration error (exit 2): the run was interrupted (exit 1, docs/operations.md).
        if (abort.signal.aborted) {
          throw new TickstreamError('stopped by a signal: nothing was changed', { retriable: false });
        }
        yield batch;
      }
    })();
    const result = await rebuildBars(
      pool,
      store,
      guarded,
      { from, to, symbols },
      {
        log,
        onProgress: (n) => {
          line.add(n - seen);
          seen = n;
        },
      },
    );
    line.done();
    process.stdout.write(
      `rebuilt ${nsToIso(result.from)} .. ${nsToIso(result.to)}: ${result.trades} trades → ${result.barsWritten} bars ` +
        `(replaced ${result.deleted.bars} bars; ${result.duplicates} duplicate ticks; ${result.seconds.toFixed(1)} s)\n`,
    );
    // The rebuild marked the indicator rows of what it replaced as stale (in its transaction); recompute them now
    // rather than leaving them to the next scheduled job.
    const redis = await connectRedis(config, { log });
    try {
      const recomputed = await recomputeStale(
        { pool, redis, settings: config.indicators, schema: config.postgres.schema, log },
        config.indicators.timeframes,
        symbols,
      );
      process.stdout.write(
        `indicators recomputed: ${recomputed.map((r) => `${r.tf} ${r.computed} bars (${r.written} rows written, ${r.deleted} removed)`).join(', ')}\n`,
      );
    } finally {
      await closeRedis(redis);
    }
  } finally {
    unhook();
    await closePgPool(pool);
  }
}
