import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { FileSource, loadFiles, type FileSourceOptions, type Rejection } from '../../producers/file/index.ts';
import { Publisher } from '../../producers/publisher.ts';
import { decodeFrame } from '../../shared/codec.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey, type Tick } from '../../shared/model.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys, type StreamLayout } from '../../shared/streams.ts';
import { finished, runCli, startCli, stopChildren } from '../helpers/cli.ts';
import { cleanupPrefix, REDIS_URL, testConfig, testRedis, waitUntil } from '../helpers/index.ts';

const SAMPLE_CSV = join(import.meta.dirname, '..', '..', 'infra', 'samples', 'ticks-sample.csv');
const SAMPLE_NDJSON = join(import.meta.dirname, '..', '..', 'infra', 'samples', 'ticks-sample.ndjson');
/** Valid rows of the sample (320 data rows, 5 deliberately malformed: see infra/samples/README.md). */
const SAMPLE_TICKS = 315;

const dir = mkdtempSync(join(tmpdir(), 'tickstream-file-'));
const redisClients: RedisClient[] = [];
const prefixes: string[] = [];

// Whatever a test's outcome: its CLI processes killed (before its keys go), its keys deleted, its connections
// closed.
afterEach(async () => {
  await stopChildren();
  const cleaner = redisClients[0];
  if (cleaner !== undefined) for (const p of prefixes.splice(0)) await cleanupPrefix(cleaner, p);
  for (const r of redisClients.splice(0)) await closeRedis(r);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

async function readAll(
  options: FileSourceOptions,
): Promise<{ ticks: Tick[]; rejections: Rejection[]; source: FileSource }> {
  const rejections: Rejection[] = [];
  const source = new FileSource({ ...options, onReject: (r) => rejections.push(r) });
  const ticks: Tick[] = [];
  try {
    for await (const batch of source.batches()) ticks.push(...batch);
  } finally {
    await source.close();
  }
  return { ticks, rejections, source };
}

/** Every tick in the shard streams, decoded. */
async function streamTicks(redis: RedisClient, layout: StreamLayout): Promise<Tick[]> {
  const out: Tick[] = [];
  for (const key of allStreamKeys(layout)) {
    for (const [, fields] of await redis.xrange(key, '-', '+')) out.push(...decodeFrame(fields).ticks);
  }
  return out;
}

describe('FileSource on real files', () => {
  it('reads the sample CSV: 315 ticks, the 5 malformed rows reported with line, column and reason', async () => {
    const { ticks, rejections, source } = await readAll({ paths: [SAMPLE_CSV] });
    expect(ticks).toHaveLength(SAMPLE_TICKS);
    expect(source.stats).toMatchObject({ files: 1, rows: 320, ticks: SAMPLE_TICKS, rejected: 5 });
    expect(rejections.map((r) => [r.line, r.column, r.reason])).toEqual([
      [58, 'price', 'column "price": must be a positive number (got "-179.64")'],
      [121, 'ts', 'column "ts": time of day out of range (got "2024-03-01T14:30:61.000000000Z")'],
      [187, 'symbol', 'column "symbol": missing'],
      [244, undefined, 'expected 11 fields, got 10'],
      [290, 'price', 'column "price": not a number (got "179.7O")'],
    ]);
    expect(rejections.every((r) => r.file === SAMPLE_CSV)).toBe(true);
    expect(new Set(ticks.map((t) => t.symbol))).toEqual(new Set(['AAPL', 'MSFT', 'NVDA']));
    // Source from the file name, seq from the line number, exact nanoseconds from ISO text.
    expect(ticks[0]).toMatchObject({
      source: 'ticks-sample',
      seq: 2,
      ts: 1709303400108435901n,
      venue: 'IEXG',
    });
    // Quoted venue fields lose their quotes.
    expect(ticks[2]).toMatchObject({ venue: 'ARCX', seq: 4 });
  });

  it('the NDJSON sample holds the same ticks (numeric ts read exactly, seq set to the CSV lines)', async () => {
    const csv = await readAll({ paths: [SAMPLE_CSV] });
    const nd = await readAll({ paths: [SAMPLE_NDJSON] });
    expect(nd.rejections).toEqual([]);
    expect(nd.ticks.map(tickKey)).toEqual(csv.ticks.map(tickKey));
    expect(nd.ticks).toEqual(csv.ticks);
    // Line 4 of the NDJSON file writes ts as a bare JSON number, above 2^53.
    expect(readFileSync(SAMPLE_NDJSON, 'utf8').split('\n')[3]).toMatch(/"ts":1709303400893882150,/);
    expect(nd.ticks[3]!.ts).toBe(1709303400893882150n);
  });

  it('gzip: by extension or by magic bytes, same ticks as the plain file', async () => {
    const gz = gzipSync(readFileSync(SAMPLE_CSV));
    const byExt = await readAll({ paths: [file('a.csv.gz', gz)], source: 'ticks-sample' });
    const byMagic = await readAll({ paths: [file('b.csv', gz)], source: 'ticks-sample' });
    const plain = await readAll({ paths: [SAMPLE_CSV] });
    expect(byExt.ticks).toEqual(plain.ticks);
    expect(byMagic.ticks).toEqual(plain.ticks);
    expect(byExt.rejections.map((r) => r.line)).toEqual([58, 121, 187, 244, 290]);
    expect(byExt.source.stats.totalBytes).toBe(gz.length);
    expect(byExt.source.bytesRead).toBe(gz.length);
  });

  it('quoted fields across lines keep the line numbers of later rows right; CRLF and BOM are handled', async () => {
    const path = file(
      'quoted.csv',
      '\uFEFFtype,symbol,ts,venue,price,size\r\n' +
        'trade,AAA,1000,"two\r\nlines",1.5,10\r\n' +
        'trade,"A,B",2000,X,1.5,10\r\n' +
        'trade,AAA,3000,"say ""hi""",-1,10\r\n' +
        'trade,AAA,4000,"never closed,1,1\r\n' +
        'trade,AAA,5000,X,1,1\r\n',
    );
    const { ticks, rejections } = await readAll({ paths: [path] });
    expect(ticks.map((t) => [t.seq, t.symbol, t.venue])).toEqual([[4, 'A,B', 'X']]);
    // The open quote swallows the rest of the file: reported once, at the line where the record starts.
    // A newline is read inside quotes, but no name may hold one (printable characters only).
    expect(rejections.map((r) => [r.line, r.reason])).toEqual([
      [
        2,
        'column "venue": must hold printable characters only (no control, format or bidi characters) (got "two\\nlines")',
      ],
      [5, 'column "price": must be a positive number (got "-1")'],
      [6, 'unterminated quoted field'],
    ]);
  });

  it('maps other column names, numeric ms timestamps and a tab delimiter', async () => {
    const path = file(
      'vendor.tsv',
      'kind\tticker\ttime_ms\tpx\tqty\taggressor\tfeed\n' +
        'T\tESZ4\t1709303400123.456789\t5123.25\t3\tB\tcme\n' +
        'T\tESZ4\t1709303400124\t5123.5\t1\tS\t\n',
    );
    const { ticks, rejections } = await readAll({
      paths: [path],
      columns: {
        type: 'kind',
        symbol: 'ticker',
        ts: 'time_ms',
        price: 'px',
        size: 'qty',
        side: 'aggressor',
        source: 'feed',
      },
      tsUnit: 'ms',
      delimiter: '\t',
      format: 'csv',
    });
    expect(rejections).toEqual([]);
    expect(ticks).toEqual([
      {
        type: 'trade',
        source: 'cme',
        symbol: 'ESZ4',
        ts: 1709303400123456789n,
        seq: 2,
        venue: '',
        price: 5123.25,
        size: 3,
        side: 'buy',
      },
      {
        type: 'trade',
        source: 'vendor',
        symbol: 'ESZ4',
        ts: 1709303400124000000n,
        seq: 3,
        venue: '',
        price: 5123.5,
        size: 1,
        side: 'sell',
      },
    ]);
  });

  it('a mapped column is named in reasons as the file names it; a default one by its name alone', async () => {
    const path = file(
      'mapped.csv',
      'ticker,t,px,qty,bid_price,bid_size,ask_price,ask_size\nAAA,1,abc,1,,,,\nAAA,2,,,0,1,2,1\n',
    );
    const { rejections } = await readAll({
      paths: [path],
      columns: { symbol: 'ticker', ts: 't', price: 'px', size: 'qty' },
    });
    expect(rejections.map((r) => [r.line, r.column, r.reason])).toEqual([
      [2, 'px', 'column "px" (price): not a number (got "abc")'],
      [3, 'bid_price', 'column "bid_price": must be a positive number (got "0")'],
    ]);
  });

  it('writes rejected rows to the rejects file as NDJSON {file, line, reason, raw}', async () => {
    const rejectsPath = join(dir, 'rejects.ndjson');
    await readAll({ paths: [SAMPLE_CSV], rejectsPath });
    const lines = readFileSync(rejectsPath, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(5);
    expect(lines[2]).toEqual({
      file: SAMPLE_CSV,
      line: 187,
      reason: 'column "symbol": missing',
      raw: readFileSync(SAMPLE_CSV, 'utf8').split('\n')[186],
    });
  });

  it('NDJSON rows that are not objects or not JSON are rejected with the line; keys are mapped', async () => {
    const path = file(
      'feed.jsonl',
      '{"type":"quote","sym":"X","ts":"2024-03-01T14:30:00.000000001Z","bid_price":1,"bid_size":1,"ask_price":2,"ask_size":1}\n' +
        '[1,2]\n' +
        '{"type":"quote","sym":"X",\n' +
        '\n' +
        '{"type":"quote","sym":"X","ts":1.7e18,"bid_price":1,"bid_size":1,"ask_price":2,"ask_size":1}\n' +
        '{"type":"trade","sym":true,"ts":"5","price":1,"size":1}\n',
    );
    const { ticks, rejections } = await readAll({ paths: [path], columns: { symbol: 'sym' } });
    expect(ticks).toHaveLength(1);
    expect(ticks[0]).toMatchObject({ symbol: 'X', ts: 1709303400000000001n, seq: 1, source: 'feed' });
    expect(rejections.map((r) => [r.line, r.reason.replace(/: Unexpected.*|: Expected.*/, '')])).toEqual([
      [2, 'not a JSON object'],
      [3, 'not valid JSON'],
      [5, 'key "ts": write a numeric timestamp as plain digits (got "1700000000000000000")'],
      [6, 'key "sym" (symbol): must be text (got "true")'],
    ]);
  });

  it('a file that cannot be read is skipped with the reason; the other files still load', async () => {
    const noTs = file('no-ts.csv', 'type,symbol,price,size\ntrade,A,1,1\n');
    const truncated = file('cut.csv.gz', gzipSync(readFileSync(SAMPLE_CSV)).subarray(0, 4000));
    const { ticks, source } = await readAll({ paths: [noTs, truncated, SAMPLE_CSV] });
    expect(source.stats.fileErrors).toHaveLength(2);
    expect(source.stats.fileErrors[0]!.reason).toMatch(/no-ts\.csv: header lacks column "ts"/);
    expect(source.stats.fileErrors[1]!.reason).toMatch(/cut\.csv\.gz: .*unexpected end of file/);
    // The sample's ticks all arrive, plus whatever the truncated copy held before the cut.
    expect(ticks.length).toBeGreaterThan(SAMPLE_TICKS);
    expect(new Set(ticks.filter((t) => t.source === 'ticks-sample').map(tickKey)).size).toBe(SAMPLE_TICKS);
  });

  it('a missing path fails before anything is read', async () => {
    const source = new FileSource({ paths: [join(dir, 'nope.csv')] });
    await expect(source.open()).rejects.toThrow(/cannot read .*nope\.csv/);
  });
});

describe('loading files into Redis streams', () => {
  it('the sample lands in the shard streams: 315 ticks, each once; loading the NDJSON twin adds no new identity', async () => {
    const config = testConfig({ streams: { shards: 4 } });
    prefixes.push(config.streams.prefix);
    const redis = testRedis(config);
    redisClients.push(redis);
    const publisher = new Publisher({
      redis,
      layout: config.streams,
      settings: config.producer,
      log: silentLogger(),
    });
    const summary = await loadFiles({ source: new FileSource({ paths: [SAMPLE_CSV] }), publisher });
    expect(summary).toMatchObject({
      files: 1,
      rows: 320,
      published: SAMPLE_TICKS,
      rejected: 5,
      stopped: false,
    });
    expect(summary.byReason).toEqual({
      'column "price": must be a positive number': 1,
      'column "ts": time of day out of range': 1,
      'column "symbol": missing': 1,
      'expected 11 fields, got 10': 1,
      'column "price": not a number': 1,
    });
    const first = await streamTicks(redis, config.streams);
    expect(first).toHaveLength(SAMPLE_TICKS);
    const keys = new Set(first.map(tickKey));
    expect(keys.size).toBe(SAMPLE_TICKS);
    // Per symbol, the stream order is the file order.
    for (const symbol of ['AAPL', 'MSFT', 'NVDA']) {
      const seqs = first.filter((t) => t.symbol === symbol).map((t) => t.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    }

    await loadFiles({ source: new FileSource({ paths: [SAMPLE_NDJSON] }), publisher });
    const both = await streamTicks(redis, config.streams);
    expect(both).toHaveLength(2 * SAMPLE_TICKS);
    expect(new Set(both.map(tickKey))).toEqual(keys);
  });

  it('tickstream produce file: summary, rejects file, exit 0', async () => {
    const config = testConfig();
    prefixes.push(config.streams.prefix);
    const redis = testRedis(config);
    redisClients.push(redis);
    const rejects = join(dir, 'cli-rejects.ndjson');
    const r = await runCli(['produce', 'file', SAMPLE_CSV, '--rejects', rejects], {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
      TICKSTREAM_SHARDS: '2',
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/rows\s+320\n\s+published\s+315\n\s+rejected\s+5\n/);
    expect(r.stdout).toMatch(/1\s+column "symbol": missing/);
    expect(r.stderr).toMatch(/"line":58,"reason":"column \\"price\\": must be a positive number/);
    expect(readFileSync(rejects, 'utf8').trim().split('\n')).toHaveLength(5);
    expect(await streamTicks(redis, config.streams)).toHaveLength(SAMPLE_TICKS);
  });

  it('tickstream produce file --speed: SIGINT stops reading, flushes what was read and prints the summary', async () => {
    const config = testConfig();
    prefixes.push(config.streams.prefix);
    const redis = testRedis(config);
    redisClients.push(redis);
    // 2000 ticks 10 ms apart: 20 s at --speed 1, so the signal lands mid-file.
    const lines = ['symbol,ts,price,size'];
    for (let i = 0; i < 2000; i++)
      lines.push(`SLOW,${1_700_000_000_000_000_000n + BigInt(i) * 10_000_000n},1.5,1`);
    const path = file('slow.csv', `${lines.join('\n')}\n`);
    const child = startCli(['produce', 'file', path, '--speed', '1'], {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
      TICKSTREAM_SHARDS: '2',
    });
    await waitUntil(
      async () => (await streamTicks(redis, config.streams)).length >= 20,
      'first paced ticks in Redis',
    );
    child.kill('SIGINT');
    const r = await finished(child, 30_000);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Stopped before the end/);
    const published = Number(/published\s+([\d,]+)/.exec(r.stdout)![1]!.replace(/,/g, ''));
    const stored = await streamTicks(redis, config.streams);
    expect(stored.length).toBe(published);
    expect(published).toBeGreaterThanOrEqual(20);
    expect(published).toBeLessThan(2000);
  });
});
