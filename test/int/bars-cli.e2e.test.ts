import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logger.ts';
import { closePgPool, createPgPool, type PgPool } from '../../shared/pg.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { finished, runCli, startCli, stopChildren } from '../helpers/cli.ts';
import {
  cleanupPrefix,
  DATABASE_URL,
  REDIS_URL,
  testConfig,
  testRedis,
  uniqueName,
  waitUntil,
} from '../helpers/index.ts';

/**
 * The bars and indicators commands as a user runs them, each a process: `produce file` of a three-hour
 * history, `consume bars` and `consume archive`, `indicators backfill` (twice: the second writes nothing),
 * `bars <SYM>`, `indicators <SYM>`, `replay --sink bars` past the ledger horizon (exits 1 and says what to
 * rebuild), and `bars rebuild` (recomputes the indicators of what it rebuilt).
 */

const log = silentLogger();
const SYMBOLS = ['EA', 'EB', 'EC'];
const START = Date.parse('2024-03-01T12:00:00Z');
const HOURS = 3;
const STEP_S = 30;
const TFS = ['1m', '5m', '1h'];

describe('bars and indicators commands (processes)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bars-cli-'));
  const schema = uniqueName('barscli');
  const config = testConfig();
  const prefix = config.streams.prefix;
  const env: Record<string, string> = {
    REDIS_URL,
    DATABASE_URL,
    TICKSTREAM_STREAM_PREFIX: prefix,
    TICKSTREAM_SHARDS: '2',
    TICKSTREAM_PG_SCHEMA: schema,
    TICKSTREAM_PG_TIMESCALE: 'off',
    TICKSTREAM_BARS_TIMEFRAMES: TFS.join(','),
    TICKSTREAM_BARS_LATENESS_MS: '0',
    TICKSTREAM_BARS_KEY_PREFIX: `${prefix}:bar:`,
    TICKSTREAM_BARS_CHANNEL_PREFIX: `${prefix}:bars:`,
    TICKSTREAM_IND_TIMEFRAMES: TFS.join(','),
    TICKSTREAM_IND_KEY_PREFIX: `${prefix}:ind:`,
    TICKSTREAM_INDICATORS_CHANNEL_PREFIX: `${prefix}:indicators:`,
    TICKSTREAM_IND_BULL_PREFIX: `${prefix}:bull`,
    TICKSTREAM_QUOTE_KEY_PREFIX: `${prefix}:quote:`,
    TICKSTREAM_QUOTE_CHANNEL_PREFIX: `${prefix}:quotes:`,
  };
  const file = join(dir, 'history.csv');
  let pool: PgPool;
  let redis: RedisClient;
  let trades = 0;

  beforeAll(() => {
    pool = createPgPool({ ...config.postgres, schema }, { log, max: 2 });
    redis = testRedis(config);
    const lines = ['type,symbol,ts,venue,price,size,side,bid_price,bid_size,ask_price,ask_size'];
    const price: Record<string, number> = { EA: 100, EB: 50, EC: 10 };
    let k = 0;
    for (let s = 0; s < HOURS * 3600; s += STEP_S) {
      for (const symbol of SYMBOLS) {
        k++;
        price[symbol] = Math.round(price[symbol]! * (1 + Math.sin(k * 0.7) * 0.002) * 100) / 100;
        const ts = new Date(START + s * 1000 + (k % 7) * 100).toISOString();
        lines.push(`trade,${symbol},${ts},X,${price[symbol]},${1 + (k % 9)},buy,,,,`);
        trades++;
      }
    }
    writeFileSync(file, `${lines.join('\n')}\n`);
  });
  afterEach(stopChildren);
  afterAll(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await closePgPool(pool);
    await cleanupPrefix(redis, prefix);
    await closeRedis(redis);
    rmSync(dir, { recursive: true, force: true });
  });

  const count = async (sql: string): Promise<number> =>
    Number((await pool.query<{ n: string }>(sql)).rows[0]!.n);

  it('produce file, consume bars + archive, backfill (twice), show, replay past the horizon, rebuild', async () => {
    const produced = await runCli(['produce', 'file', file], env);
    expect(produced.code, produced.stderr).toBe(0);

    const bars = startCli(['consume', 'bars'], env);
    const archive = startCli(['consume', 'archive'], env);
    await waitUntil(
      async () => {
        const n = await count(
          `SELECT coalesce(sum(trades), 0)::text AS n FROM "${schema}".bars WHERE tf = '1h'`,
        ).catch(() => 0);
        const a = await count(`SELECT count(*)::text AS n FROM "${schema}".trades`).catch(() => 0);
        return n === trades && a === trades;
      },
      'every trade in the bars and the archive',
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    bars.kill('SIGTERM');
    archive.kill('SIGTERM');
    // Both listeners attached before either process can exit.
    const [barsExit, archiveExit] = await Promise.all([finished(bars), finished(archive)]);
    expect(barsExit.code, barsExit.stderr).toBe(0);
    expect(archiveExit.code, archiveExit.stderr).toBe(0);
    // The bars group reads TICKSTREAM_BARS_BATCH_SIZE entries at once, the others TICKSTREAM_BATCH_SIZE.
    expect(barsExit.stderr).toMatch(/"batch":1024,"msg":"consuming"/);
    expect(archiveExit.stderr).toMatch(/"batch":64,"msg":"consuming"/);

    const closed = await count(`SELECT count(*)::text AS n FROM "${schema}".bars WHERE closed`);
    expect(closed).toBeGreaterThan(SYMBOLS.length * HOURS * 60 - 10);
    const backfill = await runCli(['indicators', 'backfill'], env, 120_000);
    expect(backfill.code, backfill.stderr).toBe(0);
    expect(backfill.stdout).toMatch(new RegExp(`backfilled ${closed} bars, ${closed} rows written`));
    // Every closed bar has its row, in every timeframe; no row without a closed bar.
    expect(
      await count(
        `SELECT count(*)::text AS n FROM "${schema}".bars b
          WHERE b.closed AND NOT EXISTS (SELECT 1 FROM "${schema}".indicators i
                                          WHERE i.symbol = b.symbol AND i.tf = b.tf AND i.start_ns = b.start_ns)`,
      ),
    ).toBe(0);
    expect(await count(`SELECT count(*)::text AS n FROM "${schema}".indicators`)).toBe(closed);
    const snapshot = (await pool.query(`SELECT * FROM "${schema}".indicators ORDER BY symbol, tf, start_ns`))
      .rows;

    const twice = await runCli(
      ['indicators', 'backfill', '--symbols', 'EA,EB,EC', '--tf', '1m,5m,1h'],
      env,
      120_000,
    );
    expect(twice.code, twice.stderr).toBe(0);
    expect(twice.stdout).toMatch(/ 0 rows written/);
    expect(
      (await pool.query(`SELECT * FROM "${schema}".indicators ORDER BY symbol, tf, start_ns`)).rows,
    ).toEqual(snapshot);

    const shown = await runCli(['bars', 'EA', '--tf', '5m', '--last', '3', '--json'], env);
    expect(shown.code, shown.stderr).toBe(0);
    const shownJson = JSON.parse(shown.stdout) as { current: Record<string, string>; bars: unknown[] };
    expect(shownJson.bars).toHaveLength(3);
    expect(shownJson.current).toMatchObject({ symbol: 'EA', tf: '5m' });

    const ind = await runCli(['indicators', 'EA', '--tf', '1m', '--json'], env);
    expect(ind.code, ind.stderr).toBe(0);
    const newest = snapshot.filter((r) => r.symbol === 'EA' && r.tf === '1m').at(-1)!;
    expect(JSON.parse(ind.stdout)).toMatchObject({
      symbol: 'EA',
      status: 'ok',
      start: String(newest.start_ns),
      values: { rsi: newest.rsi, macd: newest.macd, atr: newest.atr },
    });

    // The streams replayed into bars: what is within the horizon is known (duplicates, nothing changes); the
    // first hour is beyond the 2 h ledger horizon of each symbol's clock: refused, and the command says so.
    const horizonNs = 7_200_000_000_000n;
    let beyond = 0;
    const maxTs = BigInt(START + (HOURS * 3600 - STEP_S) * 1000) * 1_000_000n;
    for (let s = 0; s < HOURS * 3600; s += STEP_S)
      if (BigInt(START + s * 1000) * 1_000_000n + 700_000_000n < maxTs - horizonNs) beyond += SYMBOLS.length;
    const replay = await runCli(['replay', '--sink', 'bars', '--name', 'past'], env, 120_000);
    expect(replay.code).toBe(1);
    const refused = /(\d[\d,]*) trades \((\S+) \.\. (\S+)\) were older than the bars ledger horizon/.exec(
      replay.stderr,
    );
    expect(refused, replay.stderr).not.toBeNull();
    expect(Math.abs(Number(refused![1]!.replace(/,/g, '')) - beyond)).toBeLessThanOrEqual(SYMBOLS.length);
    expect(refused![2]).toBe('2024-03-01T12:00:00.100Z'); // the first trade
    expect(replay.stderr).toMatch(/tickstream bars rebuild --from 2024-03-01T12:00:00.100Z --to \d+ns/);
    expect(await count(`SELECT sum(trades)::text AS n FROM "${schema}".bars WHERE tf = '1h'`)).toBe(trades);

    // Rebuild the whole range from the archive: same bars, so the recomputed indicators write nothing.
    const rebuild = await runCli(
      ['bars', 'rebuild', '--from', '2024-03-01T12:00:00Z', '--to', '2024-03-01T15:00:00Z'],
      env,
      120_000,
    );
    expect(rebuild.code, rebuild.stderr).toBe(0);
    expect(rebuild.stdout).toMatch(new RegExp(`rebuilt .*: ${trades} trades`));
    expect(rebuild.stdout).toMatch(/indicators recomputed: 1m \d+ bars \(0 rows written, 0 removed\)/);
    expect(await count(`SELECT count(*)::text AS n FROM "${schema}".indicator_dirty`)).toBe(0);
    expect(
      (await pool.query(`SELECT * FROM "${schema}".indicators ORDER BY symbol, tf, start_ns`)).rows,
    ).toEqual(snapshot);
  }, 300_000);
});
