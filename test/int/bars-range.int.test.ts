import { afterAll, describe, expect, it } from 'vitest';
import { createBarsSink } from '../../consumers/sinks/bars.ts';
import { BarStore } from '../../consumers/bars/store.ts';
import { barStoreSettings } from '../../consumers/sinks/bars.ts';
import { isRetriable, SinkError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, withClient } from '../../shared/pg.ts';
import { closeRedis } from '../../shared/redis.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName } from '../helpers/index.ts';

/**
 * A trade the bars cannot hold (the message model refuses it at the edge; a tick built in-process can still
 * reach the sink) fails its batch with a non-retriable error, so the worker isolates it instead of retrying
 * forever, and the good trade of the same batch is stored once it is alone.
 */
const T0 = 1_699_999_980_000_000_000n;
const log = silentLogger();
const schema = uniqueName('barsrange');
const base = testConfig();
const config = testConfig({
  streams: { prefix: base.streams.prefix, shards: 2 },
  postgres: { schema, timescale: 'off', partitionsAhead: 0 },
  bars: { keyPrefix: `${base.streams.prefix}:bar:`, timeframes: ['1s', '1m'] },
});
const redis = testRedis(config);
const pool = createPgPool(config.postgres, { log, max: 2 });

afterAll(async () => {
  await withClient(pool, (cl) => cl.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
  await closePgPool(pool);
  await cleanupPrefix(redis, config.streams.prefix);
  await closeRedis(redis);
});

const trade = (seq: number, price: number, size: number): Trade => ({
  type: 'trade',
  source: 'S',
  symbol: 'RNG',
  ts: T0 + BigInt(seq) * 1_000_000n,
  seq,
  venue: '',
  price,
  size,
  side: '',
});

describe('bars: a value out of range for a bar (real PostgreSQL)', () => {
  it('fails the batch as not retriable; the good trade alone is then stored', async () => {
    const sink = await createBarsSink({ config, redis, log });
    await sink.start();
    try {
      const good = trade(1, 10.5, 100);
      await sink.write([good, trade(2, 1e308, 1)]);
      const err = await sink.flush().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(SinkError);
      expect(isRetriable(err)).toBe(false);
      expect((err as Error).message).toBe('bars: merge failed: value out of range for a bar: 1e+308');

      await sink.write([good]);
      await sink.flush();
      const store = new BarStore(barStoreSettings(config));
      const rows = await withClient(pool, (cl) => store.barsInRange(cl, { from: 0n, to: 1n << 62n }));
      expect(rows.filter((r) => r.symbol === 'RNG').map((r) => [r.tf, r.trades])).toEqual([
        ['1s', 1],
        ['1m', 1],
      ]);
    } finally {
      await sink.close();
    }
  });
});
