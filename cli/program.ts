import { Command, CommanderError } from 'commander';
import { registerBars } from './commands/bars.ts';
import { registerBridge } from './commands/bridge.ts';
import { registerConsume } from './commands/consume.ts';
import { registerDemo } from './commands/demo.ts';
import { registerDlq } from './commands/dlq.ts';
import { registerIndicators } from './commands/indicators.ts';
import { registerMigrate } from './commands/migrate.ts';
import { registerProduce } from './commands/produce.ts';
import { registerProduceFeed } from './commands/produce-feed.ts';
import { registerProduceFile } from './commands/produce-file.ts';
import { registerQuote } from './commands/quote.ts';
import { registerReplay } from './commands/replay.ts';
import { registerServe } from './commands/serve.ts';
import { registerSql } from './commands/sql.ts';
import { registerStatus } from './commands/status.ts';
import { registerTrim } from './commands/trim.ts';
import { PACKAGE_VERSION } from '../shared/paths.ts';
import { EXIT, reportError } from './runtime.ts';

export function buildProgram(): Command {
  const program = new Command('tickstream')
    .description('market-data ingestion on Redis Streams: producers, consumer groups, idempotent sinks')
    .version(PACKAGE_VERSION, '-V, --version', 'print the version and exit')
    // Usage errors (an unknown option, a missing argument) throw instead of exiting, so that they end with
    // the same exit code as a bad option value or environment variable (2). Inherited by every subcommand.
    .exitOverride()
    .showHelpAfterError()
    .configureHelp({ sortSubcommands: true })
    // A subcommand's options are its own (`indicators --tf 1m` vs `indicators backfill --tf 1m,5m`).
    .enablePositionalOptions();

  const produce = registerProduce(program);
  registerProduceFile(produce);
  registerProduceFeed(produce);
  registerConsume(program);
  registerReplay(program);
  registerBridge(program);
  registerQuote(program);
  registerBars(program);
  registerIndicators(program);
  registerStatus(program);
  registerSql(program);
  registerDlq(program);
  registerTrim(program);
  registerDemo(program);
  registerMigrate(program);
  registerServe(program);
  return program;
}

/** Parse and run one command line (without the node and script arguments); the exit code is left in process.exitCode. */
export async function runCli(args: readonly string[]): Promise<void> {
  try {
    await buildProgram().parseAsync([...args], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed its message (or the help, or the version) already.
      const shown = err.code === 'commander.helpDisplayed' || err.code === 'commander.version';
      process.exitCode = shown ? EXIT.ok : EXIT.usage;
      return;
    }
    // A flag parser's ConfigError, thrown while commander reads the command line.
    reportError(err);
  }
}
