import type { Command } from 'commander';
import { ConfigError } from '../../shared/errors.ts';
import { closeRedis, createRedis } from '../../shared/redis.ts';
import { listDeadLetters, requeueDeadLetters } from '../../consumers/deadletters.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';
import { escapeText, printTable } from '../table.ts';

export function registerDlq(program: Command): void {
  const dlq = program.command('dlq').description('inspect and requeue dead letters');
  dlq
    .command('list')
    .description('list dead letters with their reason')
    .option('--count <n>', 'how many', positiveInt('--count'), 50)
    .option('--group <name>', 'only this consumer group')
    .option('--json', 'print JSON')
    .action((opts: { count: number; group?: string; json?: boolean }) =>
      runCommand(async () => {
        const { config, log } = makeRuntime();
        const redis = createRedis(config, { log });
        try {
          const letters = await listDeadLetters(redis, config.streams, {
            count: opts.count,
            ...(opts.group !== undefined ? { group: opts.group } : {}),
          });
          if (opts.json === true) process.stdout.write(`${JSON.stringify(letters, null, 2)}\n`);
          else
            printTable(
              letters.map((l) => ({
                dlq_id: l.dlqId,
                group: l.group,
                origin: `${l.stream} ${l.id}${l.index !== undefined ? `#${l.index}` : ''}`,
                deliveries: l.deliveries,
                reason: l.reason.length > 100 ? `${l.reason.slice(0, 97)}...` : l.reason,
              })),
            );
        } finally {
          await closeRedis(redis);
        }
      }),
    );
  dlq
    .command('requeue')
    .description(
      'put dead letters back on their origin stream (all groups see them again; sinks are idempotent)',
    )
    .argument('[ids...]', 'dead-letter ids (from dlq list)')
    .option('--all', 'requeue every dead letter')
    .option('--group <name>', 'with --all: only this group')
    .action((ids: string[], opts: { all?: boolean; group?: string }) =>
      runCommand(async () => {
        if (ids.length === 0 && opts.all !== true) throw new ConfigError('give dead-letter ids, or --all');
        const { config, log } = makeRuntime();
        const redis = createRedis(config, { log });
        try {
          const result = await requeueDeadLetters(redis, config.streams, {
            ids,
            ...(opts.all === true ? { all: true } : {}),
            ...(opts.group !== undefined ? { group: opts.group } : {}),
          });
          process.stdout.write(`requeued ${result.requeued}\n`);
          if (result.skipped.length > 0) {
            process.stderr.write(
              `left ${result.skipped.length} Kafka dead letter(s) in place: produce the fixed message to its topic again ` +
                `(first: ${result.skipped[0]!.dlqId}, ${result.skipped[0]!.stream} offset ${result.skipped[0]!.id})\n`,
            );
          }
          if (result.missing.length > 0) {
            process.stderr.write(`not found: ${result.missing.map(escapeText).join(', ')}\n`);
            process.exitCode = 1;
          }
        } finally {
          await closeRedis(redis);
        }
      }),
    );
}
