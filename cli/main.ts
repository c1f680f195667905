import { Command } from 'commander';
import { registerConsume } from './commands/consume.ts';
import { registerDemo } from './commands/demo.ts';
import { registerDlq } from './commands/dlq.ts';
import { registerProduce } from './commands/produce.ts';
import { registerQuote } from './commands/quote.ts';
import { registerStatus } from './commands/status.ts';
import { registerTrim } from './commands/trim.ts';

const program = new Command('tickstream')
  .description('market-data ingestion on Redis Streams: producers, consumer groups, idempotent sinks')
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: true });

registerProduce(program);
registerConsume(program);
registerQuote(program);
registerStatus(program);
registerDlq(program);
registerTrim(program);
registerDemo(program);

await program.parseAsync(process.argv);
