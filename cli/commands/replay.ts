import type { Command } from 'commander';
import { BarsSink } from '../../consumers/sinks/bars.ts';
import { SINKS, sinkNames } from '../../consumers/sinks/index.ts';
import {
  archiveRange,
  archiveReplayMeta,
  parseBound,
  replayArchive,
  ReplayCheckpoint,
  replayStreams,
  streamRange,
  streamReplayMeta,
  type CheckpointState,
  type ReplayMeta,
  type ReplaySummary,
} from '../../consumers/replay.ts';
import type { Sink } from '../../consumers/sink.ts';
import { schemaState } from '../../shared/schema/migrate.ts';
import type { Config } from '../../shared/config.ts';
import type { Logger } from '../../shared/logger.ts';
import { ConfigError } from '../../shared/errors.ts';
import { handleSignals } from '../../shared/lifecycle.ts';
import { closePgPool, createPgPool, type PgPool } from '../../shared/pg.ts';
import { closeRedis, createRedis, dropIfDown } from '../../shared/redis.ts';
import { startProgress } from '../progress-bar.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';

/** `tickstream replay`: a stored range (streams or archive) straight into a sink. See docs/files-and-replay.md. */
export function registerReplay(program: Command): void {
  program
    .command('replay')
    .description('write a range of the streams (or of the archive) straight into a sink, resumably')
    .option('--sink <name>', `sink to write into (${sinkNames().join(', ')})`)
    .option('--from <time|id>', 'start: ISO-8601 time, ms since the epoch, or a stream id (inclusive)', '-')
    .option(
      '--to <time|id>',
      'end: a time (exclusive) or a stream id (inclusive); default: the newest entry now',
      '+',
    )
    .option('--source <redis|postgres>', 'read the Redis streams, or the PostgreSQL archive', 'redis')
    .option('--symbols <list>', 'only these symbols (comma-separated)')
    .option(
      '--archive-schema <name>',
      'with --source postgres: the schema to read (default: TICKSTREAM_PG_SCHEMA)',
    )
    .option('--name <name>', 'checkpoint name for this replay (default: replay-<time>)')
    .option('--resume <name>', 'continue the replay with this checkpoint name after a crash or a stop')
    .option(
      '--page <n>',
      'stream entries per read (redis, default 100) or ticks per page (postgres, default 5000)',
      positiveInt('--page'),
    )
    .action((opts: ReplayOpts, cmd: Command) => runCommand(() => replay(opts, cmd)));
}

interface ReplayOpts {
  sink?: string;
  from: string;
  to: string;
  source: string;
  symbols?: string;
  archiveSchema?: string;
  name?: string;
  resume?: string;
  page?: number;
}

async function replay(opts: ReplayOpts, cmd: Command): Promise<void> {
  if (opts.source !== 'redis' && opts.source !== 'postgres') {
    throw new ConfigError(`--source must be redis or postgres (got "${opts.source}")`);
  }
  if (opts.resume !== undefined) {
    const given = ['from', 'to', 'source', 'symbols', 'archiveSchema', 'name'].filter(
      (o) => cmd.getOptionValueSource(o) === 'cli',
    );
    if (given.length > 0) {
      throw new ConfigError(
        `--resume takes the range from the checkpoint; leave out ${given.map((o) => `--${kebab(o)}`).join(', ')}`,
      );
    }
  } else if (opts.sink === undefined) {
    throw new ConfigError(`--sink is required (one of: ${sinkNames().join(', ')})`);
  }
  if (opts.archiveSchema !== undefined && !/^[a-z_][a-z0-9_]*$/.test(opts.archiveSchema)) {
    throw new ConfigError(
      `--archive-schema must be a lower-case SQL identifier (got "${opts.archiveSchema}")`,
    );
  }
  const symbols = opts.symbols
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  // Bad bounds fail before anything connects.
  const from = parseBound(opts.from, '--from');
  const to = parseBound(opts.to, '--to');
  if (opts.resume === undefined) {
    if (opts.source === 'redis') streamRange(from, to);
    else archiveRange(from, to);
  }

  const { config, log } = makeRuntime();
  const redis = createRedis(config, { log, connectionName: 'tickstream:replay' });
  let pool: PgPool | undefined;
  let sink: Sink | undefined;
  try {
    const name =
      opts.resume ?? opts.name ?? `replay-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}Z`;
    const checkpoint = new ReplayCheckpoint(redis, config.streams.prefix, name);
    let state: CheckpointState;
    if (opts.resume !== undefined) {
      const loaded = await checkpoint.load();
      if (loaded === undefined) throw new ConfigError(`no replay named "${name}" (${checkpoint.key})`);
      if (opts.sink !== undefined && opts.sink !== loaded.meta.sink) {
        throw new ConfigError(`replay "${name}" writes into "${loaded.meta.sink}", not "${opts.sink}"`);
      }
      if (loaded.status === 'complete') {
        process.stdout.write(`Replay "${name}" is already complete (${loaded.ticks} ticks).\n`);
        return;
      }
      state = loaded;
    } else {
      const sinkName = opts.sink!;
      if (SINKS[sinkName] === undefined) {
        throw new ConfigError(`unknown sink "${sinkName}"; choose one of: ${sinkNames().join(', ')}`);
      }
      let meta: ReplayMeta;
      if (opts.source === 'redis') {
        meta = await streamReplayMeta(redis, config.streams, streamRange(from, to), sinkName, symbols);
      } else {
        const schema = opts.archiveSchema ?? config.postgres.schema;
        meta = archiveReplayMeta(archiveRange(from, to), sinkName, config.streams, schema, symbols);
        // A missing archive fails here, before a checkpoint name is taken.
        pool = await archivePool(config, log, schema);
      }
      state = await checkpoint.create(meta);
    }
    const { meta } = state;
    if (meta.source === 'postgres')
      pool ??= await archivePool(config, log, meta.schema ?? config.postgres.schema);
    const definition = SINKS[meta.sink];
    if (definition === undefined)
      throw new ConfigError(`replay "${name}" names an unknown sink "${meta.sink}"`);
    sink = await definition.create({ config, redis, log });

    const abort = new AbortController();
    const release = handleSignals(
      log,
      async () => {
        abort.abort();
        dropIfDown(redis);
      },
      { exitAfterStop: false },
    );
    const replayLog = log.child({ component: 'replay', name });
    replayLog.info({ ...meta, resumed: opts.resume !== undefined }, 'replaying');
    const progress = startProgress({ log: replayLog, unit: 'ticks', total: 0 });
    let summary: ReplaySummary;
    try {
      const common = {
        sink,
        checkpoint,
        state,
        log,
        signal: abort.signal,
        retry: { attempts: 10, baseMs: config.consumer.retryBaseMs, maxMs: config.consumer.retryMaxMs },
        onPage: (p: { ticks: number; progress: { position: number; total: number } }) =>
          progress.update(p.progress.total > 0 ? p.progress.position / p.progress.total : 0, p.ticks),
      };
      if (meta.source === 'redis') {
        summary = await replayStreams({
          ...common,
          redis,
          layout: config.streams,
          pageSize: opts.page ?? 100,
          admission: {
            frame: { maxTicks: config.consumer.maxFrameTicks, maxBytes: config.consumer.maxFrameBytes },
            maxFutureMs: config.consumer.maxFutureMs,
          },
        });
      } else {
        summary = await replayArchive({ ...common, pool: pool!, pageSize: opts.page ?? 5000 });
      }
    } finally {
      progress.stop();
      release();
    }
    replayLog.info({ ...summary }, summary.complete ? 'replay complete' : 'replay stopped');
    process.stdout.write(formatReplaySummary(summary));
    if (sink instanceof BarsSink && sink.beyondHorizon.count > 0) {
      // Bars take trades within the ledger horizon only; the rest is not lost but not in the bars either, and
      // only a rebuild from the archive puts it there. Say so, and fail, rather than report success.
      const h = sink.beyondHorizon;
      const iso = (ns: bigint) => new Date(Number(ns / 1_000_000n)).toISOString();
      process.stderr.write(
        `${h.count.toLocaleString('en-US')} trades (${iso(h.minTs!)} .. ${iso(h.maxTs!)}) were older than the bars ` +
          `ledger horizon (TICKSTREAM_BARS_LEDGER_HORIZON_MS) and were refused: their bars are unchanged.\n` +
          `Rebuild that range from the archive: tickstream bars rebuild --from ${iso(h.minTs!)} --to ${h.maxTs! + 1n}ns\n`,
      );
      process.exitCode = 1;
    }
  } finally {
    if (sink !== undefined) await sink.close();
    if (pool !== undefined) await closePgPool(pool);
    await closeRedis(redis);
  }
}

export function formatReplaySummary(s: ReplaySummary): string {
  const num = (n: number) => n.toLocaleString('en-US');
  return [
    s.complete
      ? `Replay "${s.name}" complete.`
      : `Replay "${s.name}" stopped; continue with: tickstream replay --resume ${s.name}`,
    `  pages        ${num(s.pages)}`,
    `  read         ${num(s.entries)}`,
    `  written      ${num(s.ticks)}`,
    `  refused      ${num(s.rejected)}`,
    `  undecodable  ${num(s.undecodable)}`,
    `  seconds      ${s.seconds.toFixed(2)}`,
    `  ticks/s      ${num(s.ticksPerSecond)}`,
    '',
  ].join('\n');
}

function kebab(option: string): string {
  return option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** A pool for reading the archive, once the schema is known to hold one. */
async function archivePool(config: Config, log: Logger, schema: string): Promise<PgPool> {
  const pool = createPgPool(config.postgres, { log, applicationName: 'tickstream:replay', max: 1 });
  try {
    const state = await schemaState(pool, schema);
    if (state.version === 0) {
      throw new ConfigError(
        `schema "${schema}" holds no archive (run tickstream migrate, or name the schema with --archive-schema)`,
      );
    }
    return pool;
  } catch (err) {
    await closePgPool(pool);
    throw err;
  }
}
