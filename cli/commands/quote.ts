import type { Command } from 'commander';
import { closeRedis, connectRedis } from '../../shared/redis.ts';
import { readQuotes, resetQuotes } from '../../consumers/sinks/quotes.ts';
import { makeRuntime, runCommand } from '../runtime.ts';
import { escapeText, printTable } from '../table.ts';

export function registerQuote(program: Command): void {
  program
    .command('quote')
    .description('print the current quote of each symbol (from the latest-quote projector)')
    .argument('<symbols...>', 'one or more symbols')
    .option('--json', 'print JSON instead of a table')
    .option(
      '--reset',
      'forget the projected quote of these symbols (repair after a future-dated tick; docs/operations.md)',
    )
    .action((symbols: string[], opts: { json?: boolean; reset?: boolean }) =>
      runCommand(async () => {
        const { config, log } = makeRuntime();
        const redis = await connectRedis(config, { log });
        try {
          if (opts.reset === true) {
            const removed = new Set(await resetQuotes(redis, config.quotes, symbols));
            for (const s of symbols) {
              process.stdout.write(
                removed.has(s)
                  ? `reset the quote of ${escapeText(s)}: the next quote or trade sets it again\n`
                  : `no quote to reset for ${escapeText(s)}\n`,
              );
            }
            return;
          }
          const quotes = await readQuotes(redis, config.quotes, symbols);
          if (opts.json === true) {
            process.stdout.write(`${JSON.stringify(Object.fromEntries(quotes), null, 2)}\n`);
          } else {
            printTable(symbols.map((s) => quoteRow(s, quotes.get(s))));
          }
          const missing = symbols.filter((s) => !quotes.has(s));
          if (missing.length > 0) {
            process.stderr.write(`no quote yet for: ${missing.map(escapeText).join(', ')}\n`);
            process.exitCode = 1;
          }
        } finally {
          await closeRedis(redis);
        }
      }),
    );
}

/** One printed row of `tickstream quote` (and of the demo's summary). */
export function quoteRow(symbol: string, q: Record<string, string> | undefined): Record<string, string> {
  return {
    symbol,
    bid: q?.bid ?? '-',
    bid_size: q?.bid_size ?? '-',
    ask: q?.ask ?? '-',
    ask_size: q?.ask_size ?? '-',
    last: q?.last ?? '-',
    last_size: q?.last_size ?? '-',
    exchange_time: q?.ts === undefined ? '-' : nsToIso(q.ts),
  };
}

/** ISO time with the nanoseconds kept: 2026-11-21T09:47:16.123456789Z. */
export function nsToIso(ns: string): string {
  const big = BigInt(ns);
  const ms = Number(big / 1_000_000n);
  const frac = (big % 1_000_000_000n).toString().padStart(9, '0');
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, `.${frac}Z`);
}
