import type { Command } from 'commander';
import { requireQuestDbHttp, rowsOf } from '../../shared/questdb.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';
import { printTable } from '../table.ts';

/**
 * `tickstream sql "<query>"`: one statement through QuestDB's HTTP API (/exec), printed as a table or JSON.
 * The endpoint is QDB_HTTP_URL, or the host of QDB_CLIENT_CONF on port 9000.
 */
export function registerSql(program: Command): void {
  program
    .command('sql')
    .description('run a SQL query on QuestDB (the hot tables) and print the result')
    .argument('<query>', 'one SQL statement, e.g. "select * from trades latest on ts partition by symbol"')
    .option('--json', 'print the rows as a JSON array')
    .option('--limit <rows>', 'at most this many rows', positiveInt('--limit'), 1000)
    .action((query: string, opts: { json?: boolean; limit: number }) =>
      runCommand(async () => {
        const { config } = makeRuntime();
        const http = requireQuestDbHttp(config.questdb);
        const started = Date.now();
        const result = await http.exec(query, { limit: opts.limit });
        const ms = Date.now() - started;
        if (result.columns.length === 0) {
          // DDL and DML answer with a status object ({"ddl":"OK"}, {"dml":"OK", ...}).
          process.stdout.write(`${JSON.stringify(result.raw)}\n`);
          return;
        }
        const rows = rowsOf(result);
        if (opts.json === true) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        else printTable(rows);
        const more = result.count > rows.length ? ` (of ${result.count}; raise --limit to see more)` : '';
        process.stderr.write(`${rows.length} row${rows.length === 1 ? '' : 's'}${more} in ${ms} ms\n`);
      }),
    );
}
