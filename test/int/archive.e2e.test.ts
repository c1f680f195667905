import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logger.ts';
import { closePgPool, createPgPool } from '../../shared/pg.ts';
import { closeRedis } from '../../shared/redis.ts';
import { runCli } from '../helpers/cli.ts';
import {
  DATABASE_URL,
  REDIS_URL,
  cleanupPrefix,
  testConfig,
  testRedis,
  uniqueName,
} from '../helpers/index.ts';

describe('tickstream demo with the archive (real Redis and PostgreSQL)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
  });

  it('archives exactly the ticks it produced', async () => {
    const schema = uniqueName('archdemo');
    const config = testConfig({ postgres: { schema } });
    const redis = testRedis(config);
    const pool = createPgPool(config.postgres, { log: silentLogger(), max: 1 });
    cleanups.push(async () => {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await closePgPool(pool);
      await cleanupPrefix(redis, config.streams.prefix);
      await closeRedis(redis);
    });
    const result = await runCli(['demo', '--duration', '1s', '--rate', '5000', '--sinks', 'quotes,archive'], {
      DATABASE_URL,
      REDIS_URL,
      TICKSTREAM_PG_SCHEMA: schema,
      TICKSTREAM_PG_TIMESCALE: 'off',
      TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
      TICKSTREAM_QUOTE_KEY_PREFIX: `${config.streams.prefix}:quote:`,
      TICKSTREAM_QUOTE_CHANNEL_PREFIX: `${config.streams.prefix}:quotes:`,
      LOG_LEVEL: 'warn',
    });
    expect(result.code, result.stderr).toBe(0);
    const produced = Number(/Produced (\d+) ticks/.exec(result.stdout)?.[1]);
    const archived = Number(/ = (\d+) rows/.exec(result.stdout)?.[1]);
    expect(produced).toBeGreaterThan(0);
    expect(archived).toBe(produced);
    const { rows } = await pool.query<{ n: string }>(
      `SELECT (SELECT count(*) FROM "${schema}".trades) + (SELECT count(*) FROM "${schema}".quotes) AS n`,
    );
    expect(Number(rows[0]!.n)).toBe(produced);
  });
});
