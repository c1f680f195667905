import Fastify from 'fastify';
import { startServer } from '../server/server.ts';
import { loadConfig, type ConfigInput } from '../shared/config.ts';
import { handleSignals } from '../shared/lifecycle.ts';
import { silentLogger } from '../shared/logger.ts';
import { closePgPool, createPgPool } from '../shared/pg.ts';
import { closeRedis, createRedis } from '../shared/redis.ts';
import { PostgresTier } from '../server/tiers/postgres.ts';
import { quoteFromFields } from '../server/tiers/redis.ts';

/**
 * The process under test of `npm run bench -- serve` (a child, so the load generator does not share its event
 * loop): `tickstream serve` and, on a second port, the two baselines with the same Fastify stack:
 *   GET /naive/:symbol  cache-aside as the design documents draw it: one Redis read per request, no L1
 *   GET /pg/:symbol     straight from PostgreSQL (newest archived quote and trade), no cache
 *   GET /cpu            this process's CPU time (process.cpuUsage)
 * Prints one JSON line with both URLs, then runs until SIGTERM.
 */
const overrides = JSON.parse(process.argv[2] ?? '{}') as ConfigInput;
const config = loadConfig({ overrides });
const log = silentLogger();
const server = await startServer(config, log);

const redis = createRedis(config, { log, connectionName: 'tickstream:bench:naive' });
const pool = createPgPool(config.postgres, { log, applicationName: 'tickstream:bench:pg' });
const pg = new PostgresTier(pool, config.postgres.schema);
const baseline = Fastify({ logger: false });
baseline.get<{ Params: { symbol: string } }>('/naive/:symbol', async (req, reply) => {
  const q = quoteFromFields(await redis.hgetall(config.quotes.keyPrefix + req.params.symbol));
  return q === undefined ? reply.code(404).send({ error: 'unknown symbol' }) : q;
});
baseline.get<{ Params: { symbol: string } }>('/pg/:symbol', async (req, reply) => {
  const q = (await pg.quotes([req.params.symbol])).get(req.params.symbol);
  return q === undefined ? reply.code(404).send({ error: 'unknown symbol' }) : q;
});
// CPU time this process spent, so the benchmark can report CPU per request, which a loaded machine skews less.
baseline.get('/cpu', async () => process.cpuUsage());
await baseline.listen({ host: '127.0.0.1', port: 0 });
const addr = baseline.server.address();
const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
process.stdout.write(`${JSON.stringify({ url: server.url, baseline: `http://127.0.0.1:${port}` })}\n`);

handleSignals(log, async () => {
  await baseline.close();
  await server.close();
  await closeRedis(redis);
  await closePgPool(pool);
});
