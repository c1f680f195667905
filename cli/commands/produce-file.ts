import type { Command } from 'commander';
import { ConfigError } from '../../shared/errors.ts';
import { handleSignals } from '../../shared/lifecycle.ts';
import { closeRedis, createRedis, dropIfDown } from '../../shared/redis.ts';
import {
  FileSource,
  loadFiles,
  parseColumnMap,
  TS_UNITS,
  type FileFormat,
  type LoadSummary,
  type Rejection,
  type TsUnit,
} from '../../producers/file/index.ts';
import { checkDurability } from '../../producers/durability.ts';
import { Publisher } from '../../producers/publisher.ts';
import { startProgress } from '../progress-bar.ts';
import { makeRuntime, positiveNumber, runCommand } from '../runtime.ts';

/** Rejected rows logged one by one before the rest only go to the counts (and the rejects file). */
const LOGGED_REJECTS = 20;

/** `tickstream produce file <path...>`: history files into the streams. Format: docs/files-and-replay.md. */
export function registerProduceFile(produce: Command): void {
  produce
    .command('file')
    .description('load CSV / NDJSON history files (optionally gzip) into the shard streams')
    .argument('<path...>', 'files to load, in order')
    .option('--format <csv|ndjson>', 'file format (default: from the extension, else sniffed)')
    .option('--map <field=column,...>', 'read fields from other columns, e.g. price=px,symbol=ticker')
    .option('--ts-unit <s|ms|us|ns>', 'unit of numeric timestamps (ISO-8601 is always accepted)', 'ns')
    .option('--source <name>', 'source name for rows without a source column (default: the file name)')
    .option('--delimiter <char>', 'CSV delimiter (default ","; "tab" for tab)')
    .option(
      '--speed <factor>',
      'pace at the original timestamps × factor (default: as fast as possible)',
      positiveNumber('--speed'),
    )
    .option('--rejects <path>', 'write rejected rows here as NDJSON {file, line, reason, raw}')
    .option('--force', 'overwrite the --rejects file if it exists (never an input file)')
    .option(
      '--max-gzip-ratio <n>',
      'refuse a gzip file that decompresses to more than n times its size (default 100, at least 64 MiB)',
      positiveNumber('--max-gzip-ratio'),
    )
    .action((paths: string[], opts: FileOpts) => runCommand(() => produceFiles(paths, opts)));
}

interface FileOpts {
  format?: string;
  map?: string;
  tsUnit: string;
  source?: string;
  delimiter?: string;
  speed?: number;
  rejects?: string;
  force?: boolean;
  maxGzipRatio?: number;
}

async function produceFiles(paths: string[], opts: FileOpts): Promise<void> {
  if (!(TS_UNITS as readonly string[]).includes(opts.tsUnit)) {
    throw new ConfigError(`--ts-unit must be one of ${TS_UNITS.join(', ')} (got "${opts.tsUnit}")`);
  }
  if (opts.format !== undefined && opts.format !== 'csv' && opts.format !== 'ndjson') {
    throw new ConfigError(`--format must be csv or ndjson (got "${opts.format}")`);
  }
  const delimiter = opts.delimiter === 'tab' ? '\t' : opts.delimiter;
  if (delimiter !== undefined && (delimiter.length !== 1 || delimiter === '"' || delimiter === '\n')) {
    throw new ConfigError(
      `--delimiter must be one character other than a quote or newline (got "${opts.delimiter}")`,
    );
  }
  const { config, log } = makeRuntime();
  const abort = new AbortController();
  const fileLog = log.child({ component: 'producer.file' });
  let logged = 0;
  const source = new FileSource({
    paths,
    ...(opts.source !== undefined ? { source: opts.source } : {}),
    ...(opts.map !== undefined ? { columns: parseColumnMap(opts.map) } : {}),
    tsUnit: opts.tsUnit as TsUnit,
    ...(opts.format !== undefined ? { format: opts.format as FileFormat } : {}),
    ...(delimiter !== undefined ? { delimiter } : {}),
    ...(opts.rejects !== undefined ? { rejectsPath: opts.rejects } : {}),
    overwriteRejects: opts.force === true,
    ...(opts.maxGzipRatio !== undefined ? { maxGzipRatio: opts.maxGzipRatio } : {}),
    signal: abort.signal,
    log: fileLog,
    onReject: (r: Rejection) => {
      if (logged < LOGGED_REJECTS)
        fileLog.warn({ file: r.file, line: r.line, reason: r.reason }, 'row rejected');
      else if (logged === LOGGED_REJECTS) {
        fileLog.warn(
          opts.rejects === undefined
            ? 'further rejected rows are only counted (pass --rejects <path> to keep them)'
            : `further rejected rows go to ${opts.rejects} only`,
        );
      }
      logged++;
    },
  });
  const redis = createRedis(config, { log, connectionName: 'tickstream:producer:file' });
  try {
    await checkDurability(redis, config.producer);
    await source.open();
  } catch (err) {
    await closeRedis(redis);
    throw err;
  }
  const publisher = new Publisher({
    redis,
    layout: config.streams,
    settings: config.producer,
    log: log.child({ component: 'publisher' }),
    signal: abort.signal,
  });
  // First signal: stop reading, flush what was read, print the summary. A second one forces exit.
  const release = handleSignals(
    log,
    async () => {
      abort.abort();
      dropIfDown(redis);
    },
    { exitAfterStop: false },
  );
  const progress = startProgress({ log: fileLog, unit: 'rows', total: source.stats.totalBytes });
  fileLog.info(
    {
      files: paths.length,
      bytes: source.stats.totalBytes,
      speed: opts.speed ?? 'max',
      shards: config.streams.shards,
    },
    'loading files',
  );
  let summary: LoadSummary;
  try {
    summary = await loadFiles({
      source,
      publisher,
      ...(opts.speed !== undefined ? { speed: opts.speed } : {}),
      signal: abort.signal,
      onBatch: (n) => progress.update(source.bytesRead, n),
    });
  } finally {
    progress.stop();
    release();
    await closeRedis(redis);
  }
  fileLog.info({ ...summary }, summary.stopped ? 'stopped' : 'loaded');
  process.stdout.write(formatSummary(summary));
  if (summary.fileErrors.length > 0) process.exitCode = 1;
}

export function formatSummary(s: LoadSummary): string {
  const num = (n: number) => n.toLocaleString('en-US');
  const lines = [
    s.stopped ? 'Stopped before the end (signal): everything read was flushed.' : 'Loaded.',
    `  files       ${num(s.files)}`,
    `  rows        ${num(s.rows)}`,
    `  published   ${num(s.published)}`,
    `  rejected    ${num(s.rejected)}`,
  ];
  for (const [reason, count] of Object.entries(s.byReason))
    lines.push(`    ${num(count).padStart(8)}  ${reason}`);
  for (const e of s.fileErrors) lines.push(`  file skipped: ${e.reason}`);
  lines.push(`  seconds     ${s.seconds.toFixed(2)}`, `  rows/s      ${num(s.rowsPerSecond)}`);
  return `${lines.join('\n')}\n`;
}
