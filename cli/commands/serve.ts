import type { Command } from 'commander';
import { handleSignals } from '../../shared/lifecycle.ts';
import { startServer } from '../../server/server.ts';
import { makeRuntime, positiveInt, runCommand } from '../runtime.ts';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description(
      'the read API (quotes, bars, indicators, trades, status), live push on /v1/stream, dashboard at /',
    )
    .option('--host <address>', 'listen address (TICKSTREAM_API_HOST)')
    .option('--port <port>', 'listen port (TICKSTREAM_API_PORT)', positiveInt('--port'))
    .action((opts: { host?: string; port?: number }) =>
      runCommand(async () => {
        const { config, log } = makeRuntime({
          api: {
            ...(opts.host !== undefined ? { host: opts.host } : {}),
            ...(opts.port !== undefined ? { port: opts.port } : {}),
          },
        });
        const server = await startServer(config, log);
        handleSignals(log, () => server.close(), { timeoutMs: config.consumer.shutdownTimeoutMs });
      }),
    );
}
