import { afterAll, describe, expect, it } from 'vitest';
import { escapeLines, escapeText } from '../../cli/table.ts';
import { QuotesSink, readQuotes } from '../../consumers/sinks/quotes.ts';
import { silentLogger } from '../../shared/logger.ts';
import { nowNs, TickSchema, type Tick } from '../../shared/model.ts';
import { closeRedis } from '../../shared/redis.ts';
import { runCli } from '../helpers/cli.ts';
import { cleanupPrefix, REDIS_URL, testConfig, testRedis } from '../helpers/index.ts';

const config = testConfig();
const redis = testRedis(config);
const prefix = config.streams.prefix;
const env = {
  REDIS_URL,
  TICKSTREAM_STREAM_PREFIX: prefix,
  TICKSTREAM_QUOTE_KEY_PREFIX: config.quotes.keyPrefix,
};

afterAll(async () => {
  await cleanupPrefix(redis, prefix);
  await closeRedis(redis);
});

function quote(symbol: string, ts: bigint, bid: number): Tick {
  return TickSchema.parse({
    type: 'quote',
    source: 'src',
    symbol,
    ts,
    seq: 1,
    bidPrice: bid,
    bidSize: 100,
    askPrice: bid + 1,
    askSize: 100,
  });
}

describe('tickstream quote: repair and safe output (processes, real Redis)', () => {
  it('--reset forgets a future-dated quote so that real quotes project again', async () => {
    const sink = new QuotesSink({ redis, settings: config.quotes, log: silentLogger() });
    await sink.start();
    // A quote stamped in 2100 (before the stream boundary refused such ticks) holds the symbol.
    await sink.write([quote('FRZ', 4_102_444_800_000_000_000n, 99)]);
    await sink.flush();
    await sink.write([quote('FRZ', nowNs(), 10)]);
    await sink.flush();
    expect((await readQuotes(redis, config.quotes, ['FRZ'])).get('FRZ')!.bid).toBe('99');

    const r = await runCli(['quote', '--reset', 'FRZ', 'NONE'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      'reset the quote of FRZ: the next quote or trade sets it again\nno quote to reset for NONE\n',
    );
    expect((await readQuotes(redis, config.quotes, ['FRZ'])).has('FRZ')).toBe(false);

    await sink.write([quote('FRZ', nowNs(), 10)]);
    await sink.flush();
    expect((await readQuotes(redis, config.quotes, ['FRZ'])).get('FRZ')!.bid).toBe('10');
    const shown = await runCli(['quote', 'FRZ'], env);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/^FRZ\s+10\s+100\s+11\s+100/m);
  });

  it('escapes control, ANSI and bidi characters in everything it prints', async () => {
    const nasty = 'A\u001b[2J\u001b[31mB\u202eC\nD';
    await redis.hset(`${config.quotes.keyPrefix}${nasty}`, { symbol: nasty, bid: '1\u001b[0m', ask: '2' });
    const r = await runCli(['quote', nasty, 'X\u001b]0;pwned\u0007'], env);
    const out = r.stdout + r.stderr;
    for (const c of ['\u001b', '\u202e', '\u0007', 'C\nD']) expect(out).not.toContain(c);
    expect(r.stdout).toContain('A\\u001b[2J\\u001b[31mB\\u202eC\\u000aD');
    expect(r.stdout).toContain('1\\u001b[0m');
    expect(r.stderr).toContain('no quote yet for: X\\u001b]0;pwned\\u0007');
    expect(r.code).toBe(1);
  });

  it('escapeText leaves printable text alone', () => {
    expect(escapeText('BRK.A 株式 €')).toBe('BRK.A 株式 €');
    expect(escapeText('a\tb\u200b\u{e0001}')).toBe('a\\u0009b\\u200b\\u{e0001}');
    expect(escapeLines('invalid configuration:\n  X: bad \u001b[31m')).toBe(
      'invalid configuration:\n  X: bad \\u001b[31m',
    );
  });
});
