import type { Command } from 'commander';
import type { Config } from '../../shared/config.ts';
import { errorMessage } from '../../shared/errors.ts';
import { redactText } from '../../shared/redact.ts';
import type { Logger } from '../../shared/logger.ts';
import { closeRedis, connectRedis, type RedisClient } from '../../shared/redis.ts';
import { streamsStatus } from '../../consumers/status.ts';
import { archiveStatus, timescaleJobsStatus } from '../../shared/schema/migrate.ts';
import { closePgPool, createPgPool } from '../../shared/pg.ts';
import { questdbStatusRows } from '../../shared/questdb.ts';
import { indicatorQueueStatus } from '../../consumers/indicators/worker.ts';
import { barsOutboxStatus } from '../../consumers/sinks/bars.ts';
import { feedsStatus } from '../../producers/feeds/report.ts';
import { makeRuntime, positiveNumber, runCommand } from '../runtime.ts';
import { watchStatus } from '../status-watch.ts';
import { printTable } from '../table.ts';

/**
 * `tickstream status`: the streams first, then one section per store that is configured. A store section is
 * a StatusSection; adding a store means adding a section to STATUS_SECTIONS, nothing else.
 */
export interface StatusSection {
  title: string;
  /** Rows to print, or undefined when the store is not configured (the section is then left out). */
  collect(deps: {
    config: Config;
    redis: RedisClient;
    log: Logger;
  }): Promise<Record<string, unknown>[] | undefined>;
}

export const STATUS_SECTIONS: StatusSection[] = [
  {
    title: 'Archive (PostgreSQL)',
    collect: async ({ config, log }) => {
      const pool = createPgPool(config.postgres, { log, max: 1, applicationName: 'tickstream:status' });
      try {
        return await archiveStatus(pool, config.postgres.schema);
      } finally {
        await closePgPool(pool);
      }
    },
  },
  {
    // Compression, retention and aggregate-refresh jobs with their last run's state; TimescaleDB mode only.
    title: 'TimescaleDB jobs',
    collect: async ({ config, log }) => {
      const pool = createPgPool(config.postgres, { log, max: 1, applicationName: 'tickstream:status' });
      try {
        const rows = await timescaleJobsStatus(pool, config.postgres.schema);
        return rows.length === 0 ? undefined : rows;
      } catch {
        return undefined; // the archive section above reports why PostgreSQL cannot be read
      } finally {
        await closePgPool(pool);
      }
    },
  },
  {
    // Hot tables' WAL state; a suspended table shows the ALTER TABLE ... RESUME WAL to run once fixed.
    title: 'QuestDB (WAL tables)',
    collect: async ({ config }) => questdbStatusRows(config.questdb),
  },
  {
    // Closed bars waiting for QuestDB (the bars sink's outbox); left out without QDB_CLIENT_CONF.
    title: 'Bars to QuestDB (outbox)',
    collect: async ({ config, log }) => barsOutboxStatus(config, log),
  },
  {
    // Live feeds (`produce feed`): connection state and counters; left out when no feed ever ran.
    title: 'Live feeds',
    collect: async ({ config, redis }) => feedsStatus(redis, config.streams),
  },
  {
    // Counts, schedulers and the newest failed jobs (kept for inspection) of the indicator queue.
    title: 'Indicator jobs (BullMQ)',
    collect: async ({ config, redis }) => indicatorQueueStatus(config, redis),
  },
];

/** Live consumers read every TICKSTREAM_BLOCK_MS; one unseen past the claim min-idle time is idle. */
function idleAfterMs(config: Config): number {
  return Math.max(config.consumer.claimMinIdleMs, 2 * config.consumer.blockMs);
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description(
      'per shard: length, first/last id; per group: lag, pending, consumers, idle; dead letters; stores',
    )
    .option('--json', 'print JSON')
    .option(
      '--watch [seconds]',
      'redraw streams and groups in place every few seconds (default 2), with rates per second',
    )
    .action((opts: { json?: boolean; watch?: boolean | string }) =>
      runCommand(async () => {
        const { config, log } = makeRuntime();
        if (opts.watch !== undefined) {
          const seconds = opts.watch === true ? 2 : positiveNumber('--watch')(opts.watch as string);
          const redis = await connectRedis(config, { log });
          const abort = new AbortController();
          const stop = () => abort.abort();
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
          try {
            await watchStatus({
              redis,
              layout: config.streams,
              intervalMs: seconds * 1000,
              signal: abort.signal,
            });
          } finally {
            process.off('SIGINT', stop);
            process.off('SIGTERM', stop);
            await closeRedis(redis);
          }
          return;
        }
        const redis = await connectRedis(config, { log });
        try {
          const status = await streamsStatus(redis, config.streams, idleAfterMs(config));
          const sections: Record<string, Record<string, unknown>[]> = {};
          // A configured store that cannot be read makes the status a failure (exit 1); the rest is printed.
          const unreadable: string[] = [];
          for (const section of STATUS_SECTIONS) {
            try {
              const rows = await section.collect({ config, redis, log });
              if (rows !== undefined) sections[section.title] = rows;
            } catch (err) {
              unreadable.push(section.title);
              sections[section.title] = [{ error: redactText(errorMessage(err)) }];
            }
          }
          if (unreadable.length > 0) {
            process.exitCode = 1;
            process.stderr.write(`tickstream: status: could not read ${unreadable.join(', ')}\n`);
          }
          if (opts.json === true) {
            process.stdout.write(`${JSON.stringify({ ...status, sections }, null, 2)}\n`);
            return;
          }
          process.stdout.write(
            `Streams (prefix "${config.streams.prefix}", ${config.streams.shards} shards)\n`,
          );
          printTable(
            status.shards.map((s) => ({
              stream: s.stream,
              length: s.length,
              first_id: s.firstId ?? '-',
              last_id: s.lastId ?? '-',
            })),
          );
          process.stdout.write('\nConsumer groups\n');
          printTable(
            status.shards.flatMap((s) =>
              s.groups.map((g) => ({
                stream: s.stream,
                group: g.group,
                lag: g.lag,
                pending: g.pending,
                consumers: g.consumers.length,
                idle_consumers: g.consumers.filter((c) => c.idle).length,
                max_idle_ms: Math.max(0, ...g.consumers.map((c) => c.idleMs)),
                last_delivered: g.lastDeliveredId,
              })),
            ),
          );
          process.stdout.write(`\nDead letters: ${status.deadLetters.total}\n`);
          const byGroup = Object.entries(status.deadLetters.byGroup);
          if (byGroup.length > 0) printTable(byGroup.map(([group, count]) => ({ group, count })));
          for (const [title, rows] of Object.entries(sections)) {
            process.stdout.write(`\n${title}\n`);
            printTable(rows);
          }
        } finally {
          await closeRedis(redis);
        }
      }),
    );
}
