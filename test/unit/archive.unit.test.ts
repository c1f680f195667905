import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.ts';
import type { Quote, Trade } from '../../shared/model.ts';
import { copyText, isConnectionError, isRetriablePgError } from '../../shared/pg.ts';
import { compareTicks, copyChunks, rejectReason, RowEncoder } from '../../consumers/sinks/archive.ts';
import { daysAhead, loadMigrations, MigrationError, renderSql } from '../../shared/schema/migrate.ts';

const trade = (over: Partial<Trade> = {}): Trade => ({
  type: 'trade',
  source: 'src',
  symbol: 'AAPL',
  ts: 1_700_000_000_123_456_789n,
  seq: 7,
  venue: 'X',
  price: 187.25,
  size: 100,
  side: 'buy',
  ...over,
});

const quote = (over: Partial<Quote> = {}): Quote => ({
  type: 'quote',
  source: 'src',
  symbol: 'AAPL',
  ts: 1_700_000_000_123_456_789n,
  seq: 8,
  venue: '',
  bidPrice: 187.2,
  bidSize: 300,
  askPrice: 187.3,
  askSize: 0,
  ...over,
});

describe('archive COPY encoding', () => {
  it('formats the exchange time truncated to the microsecond, and keeps the exact nanoseconds', () => {
    const e = new RowEncoder();
    expect(e.timestamp('1700000000123456789')).toBe('2023-11-14T22:13:20.123456Z');
    expect(e.timestamp('1700000001000000999')).toBe('2023-11-14T22:13:21.000000Z');
    expect(e.timestamp('999')).toBe('1970-01-01T00:00:00.000000Z');
    expect(e.timestamp('1500')).toBe('1970-01-01T00:00:00.000001Z');
    expect(e.timestamp('0')).toBe('1970-01-01T00:00:00.000000Z');
  });

  it('encodes a trade and a quote as tab-separated rows in column order', () => {
    const e = new RowEncoder();
    expect(e.trade(trade())).toBe(
      '2023-11-14T22:13:20.123456Z\t1700000000123456789\tsrc\tAAPL\t7\tX\t187.25\t100\tbuy\n',
    );
    expect(e.quote(quote())).toBe(
      '2023-11-14T22:13:20.123456Z\t1700000000123456789\tsrc\tAAPL\t8\t\t187.2\t300\t187.3\t0\n',
    );
  });

  it('escapes backslash, tab, newline and carriage return in text fields', () => {
    expect(copyText('plain')).toBe('plain');
    expect(copyText('a\tb\nc\rd\\e')).toBe('a\\tb\\nc\\rd\\\\e');
    expect(new RowEncoder().trade(trade({ symbol: 'BRK\tB', venue: 'a\\b' }))).toContain(
      '\tBRK\\tB\t7\ta\\\\b\t',
    );
  });

  it('chunks only the ticks of one type that were not rejected', () => {
    const ticks = [trade({ seq: 1 }), quote({ seq: 2 }), trade({ seq: 3 }), trade({ seq: 4 })];
    const ok = Uint8Array.from([1, 1, 0, 1]);
    const text = [...copyChunks(ticks, ok, 'trade')].join('');
    expect(
      text
        .split('\n')
        .filter(Boolean)
        .map((r) => r.split('\t')[4]),
    ).toEqual(['1', '4']);
    expect([...copyChunks([], undefined, 'quote')]).toEqual([]);
  });

  it('splits large batches into chunks', () => {
    const ticks = Array.from({ length: 1300 }, (_, i) => trade({ seq: i }));
    const chunks = [...copyChunks(ticks, undefined, 'trade')];
    expect(chunks.length).toBe(3);
    expect(chunks.join('').split('\n').length - 1).toBe(1300);
  });
});

describe('archive validation before COPY', () => {
  it('accepts ticks the model accepts', () => {
    expect(rejectReason(trade())).toBeUndefined();
    expect(rejectReason(quote())).toBeUndefined();
  });

  it('rejects what PostgreSQL would refuse', () => {
    expect(rejectReason(trade({ venue: 'a\u0000b' }))).toMatch(/venue contains a NUL/);
    expect(rejectReason(trade({ ts: 9_300_000_000_000_000_000n }))).toMatch(/bigint range/);
    expect(rejectReason(trade({ price: 0 }))).toMatch(/price/);
    expect(rejectReason(trade({ size: Number.NaN }))).toMatch(/size/);
    expect(rejectReason(quote({ askPrice: -1 }))).toMatch(/bid\/ask prices/);
    expect(rejectReason(quote({ bidSize: Infinity }))).toMatch(/bid\/ask sizes/);
    expect(rejectReason(trade({ seq: 1.5 }))).toMatch(/seq/);
  });
});

describe('PostgreSQL error classification', () => {
  const pgError = (code: string, message = 'x') => Object.assign(new Error(message), { code });

  it('retries what the server state causes', () => {
    for (const code of [
      'ECONNREFUSED',
      'ECONNRESET',
      '57P01',
      '57P03',
      '08006',
      '08001',
      '53300',
      '40P01',
      '57014',
    ]) {
      expect(isRetriablePgError(pgError(code)), code).toBe(true);
    }
    expect(isRetriablePgError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isRetriablePgError(pgError('42P01'))).toBe(true); // a missing table is the operator's to fix
  });

  it('does not retry what the data causes', () => {
    for (const code of ['22003', '22021', '22001', '22P02', '23505', '23514', '23502']) {
      expect(isRetriablePgError(pgError(code)), code).toBe(false);
    }
  });

  it('tells connection failures apart from statement failures', () => {
    expect(isConnectionError(pgError('ECONNREFUSED'))).toBe(true);
    expect(isConnectionError(pgError('57P01'))).toBe(true);
    expect(isConnectionError(pgError('08006'))).toBe(true);
    expect(isConnectionError(pgError('22021'))).toBe(false);
    expect(isConnectionError(pgError('40P01'))).toBe(false);
  });
});

describe('archive ordering', () => {
  it('orders by exchange time, then seq, source, symbol', () => {
    const a = trade({ ts: 1n, seq: 5 });
    expect(compareTicks(a, trade({ ts: 2n, seq: 0 }))).toBeLessThan(0);
    expect(compareTicks(a, trade({ ts: 1n, seq: 6 }))).toBeLessThan(0);
    expect(compareTicks(a, trade({ ts: 1n, seq: 5, source: 'zz' }))).toBeLessThan(0);
    expect(compareTicks(a, quote({ ts: 1n, seq: 5 }))).toBe(0);
  });
});

describe('archive migrations on disk', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('are numbered 1..N and usable in both modes', () => {
    const steps = loadMigrations();
    expect(steps.map((s) => s.version)).toEqual(steps.map((_, i) => i + 1));
    expect(steps[0]!.files).toEqual({
      plain: '0001_archive.plain.sql',
      timescale: '0001_archive.timescale.sql',
    });
    expect(steps[0]!.sql.plain).toContain('PARTITION BY RANGE (ts)');
    expect(steps[0]!.sql.timescale).toContain('create_hypertable');
    expect(steps[1]!.sql.timescale).toContain('timescaledb.continuous');
  });

  it('render the schema as a quoted identifier and as a literal', () => {
    expect(renderSql('CREATE TABLE {{schema}}.t; SELECT {{schema_name}};', 'arch_1')).toBe(
      `CREATE TABLE "arch_1".t; SELECT 'arch_1';`,
    );
  });

  it('refuse gaps, half-pairs and stray names', () => {
    dir = mkdtempSync(join(tmpdir(), 'mig-'));
    writeFileSync(join(dir, '0001_a.sql'), 'SELECT 1;');
    writeFileSync(join(dir, '0003_c.sql'), 'SELECT 1;');
    expect(() => loadMigrations(dir)).toThrow(/without gaps/);
    rmSync(join(dir, '0003_c.sql'));
    writeFileSync(join(dir, '0002_b.plain.sql'), 'SELECT 1;');
    expect(() => loadMigrations(dir)).toThrow(MigrationError);
    writeFileSync(join(dir, '0002_b.timescale.sql'), 'SELECT 1;');
    expect(loadMigrations(dir).map((s) => s.name)).toEqual(['a', 'b']);
    writeFileSync(join(dir, 'notes.sql'), '');
    expect(() => loadMigrations(dir)).toThrow(/NNNN_name/);
  });

  it('computes the partition days ahead in UTC', () => {
    expect(daysAhead(2, Date.UTC(2024, 0, 31, 23, 59))).toEqual([19753, 19754, 19755]);
    expect(new Date(19753 * 86_400_000).toISOString().slice(0, 10)).toBe('2024-01-31');
  });
});

describe('archive configuration', () => {
  it('parses the PostgreSQL archive settings with their defaults', () => {
    const c = loadConfig({ env: {} });
    expect(c.postgres).toMatchObject({
      timescale: 'auto',
      partitionsAhead: 3,
      compressAfter: '7 days',
      retention: 'off',
      migrateOnStart: true,
    });
    const d = loadConfig({
      env: {
        TICKSTREAM_PG_RETENTION: '90 Days',
        TICKSTREAM_PG_TIMESCALE: 'off',
        TICKSTREAM_PG_COMPRESS_AFTER: 'off',
      },
    });
    expect(d.postgres).toMatchObject({ retention: '90 days', timescale: 'off', compressAfter: 'off' });
  });

  it('names the variable of a bad interval', () => {
    expect(() => loadConfig({ env: { TICKSTREAM_PG_RETENTION: 'forever' } })).toThrow(
      /TICKSTREAM_PG_RETENTION/,
    );
    expect(() => loadConfig({ env: { TICKSTREAM_PG_TIMESCALE: 'maybe' } })).toThrow(
      /TICKSTREAM_PG_TIMESCALE/,
    );
  });
});
