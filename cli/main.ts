import { Command } from 'commander';
import { registerBars } from './commands/bars.ts';
import { registerBridge } from './commands/bridge.ts';
import { registerConsume } from './commands/consume.ts';
import { registerDemo } from './commands/demo.ts';
import { registerDlq } from './commands/dlq.ts';
import { registerIndicators } from './commands/indicators.ts';
import { registerMigrate } from './commands/migrate.ts';
import { registerProduce } from './commands/produce.ts';
import { registerProduceFile } from './commands/produce-file.ts';
import { registerQuote } from './commands/quote.ts';
import { registerReplay } from './commands/replay.ts';
import { registerSql } from './commands/sql.ts';
import { registerStatus } from './commands/status.ts';
import { registerTrim } from './commands/trim.ts';

const program = new Command('tickstream')
  .description('market-data ingestion on Redis Streams: producers, consumer groups, idempotent sinks')
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: true })
  // A subcommand's options are its own (`indicators --tf 1m` vs `indicators backfill --tf 1m,5m`).
  .enablePositionalOptions();

registerProduceFile(registerProduce(program));
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

await program.parseAsync(process.argv);
