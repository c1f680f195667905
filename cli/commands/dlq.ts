import type { Command } from 'commander';
import { ConfigError } from '../../shared/errors.ts';
import { closeRedis, connectRedis } from '../../shared/redis.ts';
import { listDeadLetters, requeueDeadLetters } from '../../consumers/deadletters.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';
import { escapeText, printTable } from '../table.ts';

/** A stream entry id: milliseconds-sequence. */
const DEAD_LETTER_ID = /^\d{1,20}-\d{1,20}$/;

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
        const redis = await connectRedis(config, { log });
        try {
          const letters = await listDeadLetters(redis, config.streams, {
            count: opts.count,
            ...(opts.group !== undefined ? { group: opts.group } : {}),
          });
          if (opts.json === true) {
            // Bytes as base64, so that what is not valid UTF-8 can be seen exactly.
            const shown = letters.map(({ raw, ...l }) => ({
              ...l,
              ...(raw !== undefined && l.invalidUtf8 === true
                ? { fieldsBase64: raw.map((b) => b.toString('base64')) }
                : {}),
            }));
            process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
          } else
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
      "put dead letters back for the group that failed them (its retry stream; other groups don't see them)",
    )
    .argument('[ids...]', 'dead-letter ids (from dlq list)')
    .option('--all', 'requeue every dead letter')
    .option('--group <name>', 'only letters of this group (with ids: others are left in place)')
    .action((ids: string[], opts: { all?: boolean; group?: string }) =>
      runCommand(async () => {
        if (ids.length === 0 && opts.all !== true) throw new ConfigError('give dead-letter ids, or --all');
        if (ids.length > 0 && opts.all === true) {
          throw new ConfigError('give dead-letter ids or --all, not both');
        }
        if (opts.group !== undefined && opts.all !== true) throw new ConfigError('--group goes with --all');
        const bad = ids.find((id) => !DEAD_LETTER_ID.test(id));
        if (bad !== undefined) {
          throw new ConfigError(
            `"${bad}" is not a dead-letter id: ids look like 1764500000000-0 (the dlq_id column of "tickstream dlq list")`,
          );
        }
        const { config, log } = makeRuntime();
        const redis = await connectRedis(config, { log });
        try {
          const result = await requeueDeadLetters(redis, config.streams, {
            ids,
            ...(opts.all === true ? { all: true } : {}),
            ...(opts.group !== undefined ? { group: opts.group } : {}),
          });
          process.stdout.write(`requeued ${result.requeued}\n`);
          const kafka = result.skipped.filter((l) => l.kind === 'kafka');
          const otherGroup = result.skipped.filter((l) => l.kind !== 'kafka');
          if (otherGroup.length > 0) {
            process.stderr.write(
              `left ${otherGroup.length} dead letter(s) of other groups in place: ${otherGroup.map((l) => `${l.dlqId} (${l.group})`).join(', ')}\n`,
            );
          }
          if (kafka.length > 0) {
            process.stderr.write(
              `left ${kafka.length} Kafka dead letter(s) in place: produce the fixed message to its topic again ` +
                `(first: ${kafka[0]!.dlqId}, ${kafka[0]!.stream} offset ${kafka[0]!.id})\n`,
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
