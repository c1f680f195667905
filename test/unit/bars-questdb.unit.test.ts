import { describe, expect, it } from 'vitest';
import { BarsQuestDbOutbox, barsTableStatements } from '../../consumers/bars/questdb.ts';
import { BarStore } from '../../consumers/bars/store.ts';
import { barStoreSettings } from '../../consumers/sinks/bars.ts';
import { loadConfig } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { PgPool } from '../../shared/pg.ts';
import { barsTable, ddlStatements } from '../../shared/questdb.ts';

describe('bars QuestDB outbox: DDL and configuration', () => {
  it('creates <prefix>bars with the bar start as designated timestamp, day partitions, WAL and dedup on (ts, symbol, tf)', () => {
    expect(barsTable('p_')).toBe('p_bars');
    expect(barsTableStatements('p_')).toEqual([
      'CREATE TABLE IF NOT EXISTS p_bars ( ts TIMESTAMP, symbol SYMBOL CAPACITY 16384 CACHE, tf SYMBOL CAPACITY 8 CACHE, ' +
        'open DOUBLE, high DOUBLE, low DOUBLE, close DOUBLE, volume DOUBLE, vwap DOUBLE, trades LONG, late LONG, ' +
        'rev LONG ) TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, symbol, tf)',
    ]);
  });

  it('fills DDL placeholders and refuses one without a value', () => {
    const sql = '-- a comment; with a semicolon\nCREATE TABLE {{prefix}}x (ts {{ts}});\n\nSELECT 1;';
    expect(ddlStatements(sql, { prefix: 'a_', ts: 'TIMESTAMP_NS' })).toEqual([
      'CREATE TABLE a_x (ts TIMESTAMP_NS)',
      'SELECT 1',
    ]);
    expect(() => ddlStatements(sql, { prefix: 'a_' })).toThrow('DDL placeholder {{ts}} has no value');
  });

  it('reads TICKSTREAM_BARS_QDB_BATCH and TICKSTREAM_BARS_QDB_INTERVAL_MS, naming them when out of range', () => {
    expect(loadConfig({ env: {} }).bars).toMatchObject({ questdbBatch: 2000, questdbIntervalMs: 5000 });
    const c = loadConfig({
      env: { TICKSTREAM_BARS_QDB_BATCH: '50', TICKSTREAM_BARS_QDB_INTERVAL_MS: '250' },
    });
    expect(c.bars).toMatchObject({ questdbBatch: 50, questdbIntervalMs: 250 });
    expect(() => loadConfig({ env: { TICKSTREAM_BARS_QDB_BATCH: '0' } })).toThrow(
      /TICKSTREAM_BARS_QDB_BATCH/,
    );
    expect(() => loadConfig({ env: { TICKSTREAM_BARS_QDB_INTERVAL_MS: '10' } })).toThrow(
      /TICKSTREAM_BARS_QDB_INTERVAL_MS/,
    );
  });

  it('needs ILP over HTTP: tcp:: cannot confirm a write, so a bar could be marked as stored and lost', () => {
    const outbox = (clientConf: string | undefined) => {
      const config = loadConfig({ env: clientConf === undefined ? {} : { QDB_CLIENT_CONF: clientConf } });
      return new BarsQuestDbOutbox({
        pool: {} as PgPool, // never used: nothing runs before start()
        store: new BarStore(barStoreSettings(config)),
        settings: config.questdb,
        batch: 10,
        intervalMs: 1000,
        log: silentLogger(),
      });
    };
    expect(() => outbox('tcp::addr=localhost:9009;')).toThrow(ConfigError);
    expect(() => outbox('tcp::addr=localhost:9009;')).toThrow(/ILP over HTTP/);
    expect(() => outbox(undefined)).toThrow(/needs QDB_CLIENT_CONF/);
    expect(outbox('http::addr=localhost:9000;').table).toBe('bars');
  });
});
