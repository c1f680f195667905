import type { Command } from 'commander';
import { ConfigError } from '../../shared/errors.ts';
import { closeRedis, connectRedis } from '../../shared/redis.ts';
import { trimStreams } from '../../shared/retention.ts';
import { duration, makeRuntime, positiveInt, runCommand } from '../runtime.ts';
import { printTable } from '../table.ts';

export function registerTrim(program: Command): void {
  program
    .command('trim')
    .description('trim the shard streams by age and/or size, never past an unacknowledged entry')
    .option(
      '--max-age <time>',
      'drop entries older than this (TICKSTREAM_RETENTION_MAX_AGE_MS)',
      duration('--max-age'),
    )
    .option(
      '--max-len <n>',
      'keep about this many entries per shard (TICKSTREAM_RETENTION_MAX_LEN)',
      positiveInt('--max-len'),
    )
    .action((opts: { maxAge?: number; maxLen?: number }) =>
      runCommand(async () => {
        const { config, log } = makeRuntime({
          retention: {
            ...(opts.maxAge !== undefined ? { maxAgeMs: Math.round(opts.maxAge) } : {}),
            ...(opts.maxLen !== undefined ? { maxLen: opts.maxLen } : {}),
          },
        });
        if (config.retention.maxAgeMs === 0 && config.retention.maxLen === 0) {
          throw new ConfigError(
            'nothing to trim by: give --max-age or --max-len (or set the retention variables)',
          );
        }
        const redis = await connectRedis(config, { log });
        try {
          const results = await trimStreams(redis, config.streams, config.retention);
          printTable(
            results.map((r) => ({
              stream: r.stream,
              length: r.length,
              trimmed: r.trimmed,
              min_id: r.minId ?? '-',
              held_back_by: r.heldBackBy ?? '-',
            })),
          );
        } finally {
          await closeRedis(redis);
        }
      }),
    );
}
