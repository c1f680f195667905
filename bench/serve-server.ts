import { quoteBody } from '../server/routes/v1/quotes/index.ts';
import { unknownSymbol } from '../server/errors.ts';
import { getQuote } from '../server/schemas/quotes.ts';
import { startServer } from '../server/server.ts';
import { PostgresTier } from '../server/tiers/postgres.ts';
import { quoteFromFields } from '../server/tiers/redis.ts';
import type { QuoteView, TierName } from '../server/tiers/port.ts';
import { loadConfig, type ConfigInput } from '../shared/config.ts';
import { handleSignals } from '../shared/lifecycle.ts';
import { silentLogger } from '../shared/logger.ts';
import { closePgPool, createPgPool } from '../shared/pg.ts';
import { closeRedis, createRedis } from '../shared/redis.ts';

/**
 * The process under test of `npm run bench -- serve` (a child, so the load generator does not share its event
 * loop): `tickstream serve` with the two baselines added to the same app, so that they pass through the same
 * plugins, hooks, parameter validation and response serialization as GET /v1/quotes/:symbol and the ratios
 * compare data paths only:
 *   GET /bench/naive/:symbol  cache-aside as the design documents draw it: one Redis read per request, no L1
 *   GET /bench/pg/:symbol     straight from PostgreSQL (newest archived quote and trade), no cache
 *   GET /bench/ceiling/:symbol  no data path at all: one quote built at start-up, answered for every symbol,
 *                             so its requests/s is what HTTP and the app's plugins alone allow (the ceiling
 *                             that no cache design can pass on this machine)
 *   GET /bench/cpu            this process's CPU time (process.cpuUsage)
 * Prints one JSON line with the URL, then runs until SIGTERM.
 */
const overrides = JSON.parse(process.argv[2] ?? '{}') as ConfigInput;
const config = loadConfig({ overrides });
const log = silentLogger();

const redis = createRedis(config, { log, connectionName: 'tickstream:bench:naive' });
const pool = createPgPool(config.postgres, { log, applicationName: 'tickstream:bench:pg' });
const pg = new PostgresTier(pool, config.postgres.schema);
const answer = (symbol: string, q: QuoteView | undefined, source: TierName) => {
  if (q === undefined) throw unknownSymbol(symbol, 'quote');
  return quoteBody({ status: 'ok', value: q, stale: false, ageMs: 0, source });
};

const server = await startServer(config, log, {
  routes: (app, ctx) => {
    app.get<{ Params: { symbol: string } }>('/bench/naive/:symbol', { schema: getQuote }, async (req) => {
      const { symbol } = req.params;
      return answer(symbol, quoteFromFields(await redis.hgetall(config.quotes.keyPrefix + symbol)), 'redis');
    });
    const fixed: QuoteView = {
      symbol: 'FIXED',
      bid: 100.25,
      bid_size: 3,
      ask: 100.5,
      ask_size: 4,
      quote_ts: '1796026767000000000',
      quote_venue: 'bench',
      last: 100.375,
      last_size: 1,
      trade_ts: '1796026767000000000',
      trade_venue: 'bench',
      ts: '1796026767000000000',
      time: '2026-11-30T08:59:27.000000000Z',
      updated_at: 1_796_026_767_000,
    };
    app.get<{ Params: { symbol: string } }>('/bench/ceiling/:symbol', { schema: getQuote }, async (req) =>
      answer(req.params.symbol, { ...fixed, symbol: req.params.symbol }, 'memory'),
    );
    app.get<{ Params: { symbol: string } }>('/bench/pg/:symbol', { schema: getQuote }, async (req) => {
      const { symbol } = req.params;
      return answer(symbol, (await pg.quotes([symbol])).get(symbol), 'postgres');
    });
    // CPU time this process spent, so the benchmark can report CPU per request, which a loaded machine skews less.
    app.get('/bench/cpu', async () => process.cpuUsage());
    // The data paths alone, without HTTP: this process's CPU per lookup, L1 hits vs one Redis read each
    // (50 in flight, as under the HTTP load; Redis's own CPU not counted).
    app.get<{ Querystring: { symbols: string } }>('/bench/datapath', async (req) => {
      const symbols = req.query.symbols.split(',');
      const n = 20_000;
      const cpu = () => {
        const c = process.cpuUsage();
        return c.user + c.system;
      };
      // Entries expire after the quote TTL: read them through once so that the loop below only hits.
      await ctx.model.quotes(symbols);
      let t = cpu();
      for (let i = 0; i < n; i++) {
        const o = ctx.model.quote(symbols[i % symbols.length]!);
        if (o instanceof Promise || o.status !== 'ok') throw new Error('datapath: not an L1 hit');
      }
      const l1 = (cpu() - t) / n;
      t = cpu();
      for (let i = 0; i < n; i += 50)
        await Promise.all(
          Array.from({ length: 50 }, (_, k) =>
            redis.hgetall(config.quotes.keyPrefix + symbols[(i + k) % symbols.length]!).then(quoteFromFields),
          ),
        );
      return { l1Us: l1, naiveUs: (cpu() - t) / n };
    });
  },
});
process.stdout.write(`${JSON.stringify({ url: server.url })}\n`);

handleSignals(log, async () => {
  await server.close();
  await closeRedis(redis);
  await closePgPool(pool);
});
