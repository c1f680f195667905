import { describe, expect, it } from 'vitest';
import { classifyIlpError, tableStatements } from '../../consumers/sinks/questdb.ts';
import { loadConfig } from '../../shared/config.ts';
import { parseClientConf, parseVersion, questdbEndpoint, supportsTimestampNs } from '../../shared/questdb.ts';
import { parseIlp } from '../helpers/questdb-standin.ts';

const settings = (env: Record<string, string>) => loadConfig({ env }).questdb;

describe('QuestDB configuration', () => {
  it('reads the client configuration string like QuestDB clients do (;; is a literal semicolon)', () => {
    const conf = parseClientConf('http::addr=db:9000;username=admin;password=a;;b;retry_timeout=500;');
    expect(conf.protocol).toBe('http');
    expect(Object.fromEntries(conf.params)).toEqual({
      addr: 'db:9000',
      username: 'admin',
      password: 'a;b',
      retry_timeout: '500',
    });
    expect(() => parseClientConf('localhost:9000')).toThrow(/QDB_CLIENT_CONF/);
  });

  it('derives the /exec endpoint from QDB_CLIENT_CONF, or takes QDB_HTTP_URL as given', () => {
    expect(questdbEndpoint(settings({}))).toBeUndefined();
    expect(questdbEndpoint(settings({ QDB_CLIENT_CONF: 'http::addr=db:9100;' }))?.url).toBe('http://db:9100');
    expect(questdbEndpoint(settings({ QDB_CLIENT_CONF: 'http::addr=db;' }))?.url).toBe('http://db:9000');
    expect(questdbEndpoint(settings({ QDB_CLIENT_CONF: 'https::addr=[::1]:9443;' }))?.url).toBe(
      'https://[::1]:9443',
    );
    // ILP over TCP listens on 9009, but HTTP (for DDL and queries) stays on 9000.
    expect(questdbEndpoint(settings({ QDB_CLIENT_CONF: 'tcp::addr=db:9009;' }))?.url).toBe('http://db:9000');
    expect(
      questdbEndpoint(settings({ QDB_CLIENT_CONF: 'tcp::addr=db:9009;', QDB_HTTP_URL: 'http://other:9000/' }))
        ?.url,
    ).toBe('http://other:9000');
  });

  it('passes credentials of the string to /exec: Basic for username/password, Bearer only for an HTTP token', () => {
    const basic = questdbEndpoint(
      settings({ QDB_CLIENT_CONF: 'http::addr=db:9000;username=admin;password=quest;' }),
    );
    expect(basic?.headers.authorization).toBe(`Basic ${Buffer.from('admin:quest').toString('base64')}`);
    const bearer = questdbEndpoint(settings({ QDB_CLIENT_CONF: 'https::addr=db:9000;token=abc;' }));
    expect(bearer?.headers.authorization).toBe('Bearer abc');
    const jwk = questdbEndpoint(
      settings({ QDB_CLIENT_CONF: 'tcp::addr=db:9009;username=u;token=privatekey;' }),
    );
    expect(jwk?.headers.authorization).toBeUndefined();
  });

  it('accepts the table prefix and timestamp variables, and rejects a prefix that is not an identifier', () => {
    const s = settings({ TICKSTREAM_QDB_TABLE_PREFIX: 'test_', TICKSTREAM_QDB_TIMESTAMP: 'us' });
    expect(s.tablePrefix).toBe('test_');
    expect(s.timestamp).toBe('us');
    expect(() => settings({ TICKSTREAM_QDB_TABLE_PREFIX: '1x' })).toThrow(/TICKSTREAM_QDB_TABLE_PREFIX/);
    expect(() => settings({ TICKSTREAM_QDB_TABLE_PREFIX: 'a;drop' })).toThrow(/TICKSTREAM_QDB_TABLE_PREFIX/);
  });
});

describe('QuestDB hot tables DDL (infra/questdb/tables.sql)', () => {
  it('fills in prefix and timestamp type; both tables are WAL, DAY-partitioned and deduplicated', () => {
    const [trades, quotes, ...rest] = tableStatements('p_', 'TIMESTAMP_NS');
    expect(rest).toEqual([]);
    expect(trades).toMatch(/^CREATE TABLE IF NOT EXISTS p_trades \( ts TIMESTAMP_NS, source SYMBOL/);
    expect(quotes).toMatch(/^CREATE TABLE IF NOT EXISTS p_quotes \( ts TIMESTAMP_NS, source SYMBOL/);
    for (const sql of [trades!, quotes!]) {
      expect(sql).toContain('symbol SYMBOL');
      expect(sql).toContain('venue SYMBOL');
      expect(sql).toContain('seq LONG');
      expect(sql).toMatch(
        /\) TIMESTAMP\(ts\) PARTITION BY DAY WAL DEDUP UPSERT KEYS\(ts, source, symbol, seq\)$/,
      );
      expect(sql).not.toContain('{{');
    }
    expect(trades).toContain('side SYMBOL');
    expect(quotes).toContain('bid_price DOUBLE, bid_size DOUBLE, ask_price DOUBLE, ask_size DOUBLE');
    expect(tableStatements('', 'TIMESTAMP')[0]).toMatch(
      /^CREATE TABLE IF NOT EXISTS trades \( ts TIMESTAMP,/,
    );
  });

  it('knows which servers have TIMESTAMP_NS (9.1+)', () => {
    const v = (s: string) => parseVersion(`Build Information: QuestDB ${s}, JDK 17.0.9, Commit Hash abc`)!;
    expect(supportsTimestampNs(v('9.1.0'))).toBe(true);
    expect(supportsTimestampNs(v('10.0.2'))).toBe(true);
    expect(supportsTimestampNs(v('9.0.3'))).toBe(false);
    expect(supportsTimestampNs(v('8.3.1'))).toBe(false);
    expect(parseVersion('something else')).toBeUndefined();
  });
});

describe('ILP error classification', () => {
  const http = (status: number, body: unknown) =>
    new Error(
      `HTTP request failed, statusCode=${status}, error=${typeof body === 'string' ? body : JSON.stringify(body)}`,
    );

  it('a row QuestDB rejects (400) is not retriable, and the reason keeps its line number', () => {
    const c = classifyIlpError(
      http(400, {
        code: 'invalid',
        message:
          'failed to parse line protocol:errors encountered on line(s):\nerror in line 3: table: trades, column: price; cast error',
        line: 3,
        errorId: 'x-1',
      }),
    );
    expect(c).toEqual({
      retriable: false,
      status: 400,
      reason:
        'failed to parse line protocol:errors encountered on line(s): error in line 3: table: trades, column: price; cast error [line 3]',
    });
  });

  it('server errors, timeouts, refused connections, auth and throttling are retriable', () => {
    expect(classifyIlpError(http(500, { code: 'internal error', message: 'disk full' })).retriable).toBe(
      true,
    );
    expect(classifyIlpError(http(502, 'bad gateway')).retriable).toBe(true);
    expect(
      classifyIlpError(new Error('HTTP request timeout, no response from server in time')).retriable,
    ).toBe(true);
    expect(
      classifyIlpError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })).retriable,
    ).toBe(true);
    expect(classifyIlpError(http(401, 'unauthorized')).retriable).toBe(true);
    expect(classifyIlpError(http(429, 'slow down')).retriable).toBe(true);
  });

  it('a missing or non-WAL table is a schema problem, not a bad tick: retriable', () => {
    expect(classifyIlpError(http(400, { message: 'table does not exist [table=trades]' })).retriable).toBe(
      true,
    );
    expect(
      classifyIlpError(
        http(400, { message: 'error in line 1: table: trades; cannot insert in non-WAL table' }),
      ).retriable,
    ).toBe(true);
  });
});

describe('stand-in ILP parser', () => {
  it('reads protocol 1 text lines: escaped symbols, int, float, string, bool, timestamps', () => {
    const body = Buffer.from(
      'my\\ table,sym=a\\,b,venue=X f=1.5,i=-3i,s="say \\"hi\\"",b=t,tc=1700000000000000t 1700000000000000001\n' +
        'trades,source=s seq=2i 1700000000000001\n',
    );
    const [a, b] = parseIlp(body, 'n');
    expect(a!.table).toBe('my table');
    expect(a!.symbols).toEqual({ sym: 'a,b', venue: 'X' });
    expect(a!.fields.f).toEqual({ type: 'float', value: 1.5, text: '1.5' });
    expect(a!.fields.i).toEqual({ type: 'int', value: -3n, text: '-3i' });
    expect(a!.fields.s).toMatchObject({ type: 'string', value: 'say "hi"' });
    expect(a!.fields.b).toMatchObject({ type: 'bool', value: true });
    expect(a!.fields.tc).toMatchObject({ type: 'timestamp', value: 1700000000000000n, unit: 'us' });
    expect(a!.ts).toBe(1700000000000000001n);
    expect(b!.ts).toBe(1700000000000001n);
    expect(parseIlp(Buffer.from('t,a=b x=1i 1700000000000001\n'), 'us')[0]!.ts).toBe(1700000000000001000n);
  });

  it('reads protocol 2 binary doubles even when their bytes contain newlines and spaces', () => {
    const double = Buffer.alloc(8);
    double.writeDoubleLE(187.25);
    const value = double.readDoubleLE(0);
    const head = Buffer.from('t,s=a price==');
    const tail = Buffer.from(',n=1i 1700000000000000123n\n');
    const [row] = parseIlp(Buffer.concat([head, Buffer.from([16]), double, tail]));
    expect(row!.fields.price).toEqual({ type: 'float', value, text: String(value) });
    expect(row!.fields.n).toMatchObject({ type: 'int', value: 1n });
    expect(row!.ts).toBe(1700000000000000123n);

    // A double whose bytes hold a newline and a space must not end the line or the field.
    const tricky = Buffer.alloc(8);
    tricky[0] = 0x0a;
    tricky[1] = 0x20;
    const [t2] = parseIlp(Buffer.concat([head, Buffer.from([16]), tricky, tail]));
    expect(t2!.fields.price).toMatchObject({ type: 'float', value: tricky.readDoubleLE(0) });
  });
});
