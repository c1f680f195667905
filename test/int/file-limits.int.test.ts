import { linkSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import {
  EXCERPT_CHARS,
  FileSource,
  MAX_RECORD_CHARS,
  type FileSourceOptions,
  type Rejection,
} from '../../producers/file/index.ts';
import { ConfigError } from '../../shared/errors.ts';
import type { Tick } from '../../shared/model.ts';
import { runCli } from '../helpers/cli.ts';
import { REDIS_URL, uniqueName } from '../helpers/index.ts';

/** Hostile files: bounded memory and time on any input, and a rejects file that never destroys one. */

const dir = mkdtempSync(join(tmpdir(), 'tickstream-file-limits-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

async function readAll(options: FileSourceOptions) {
  const rejections: Rejection[] = [];
  const source = new FileSource({ ...options, onReject: (r) => rejections.push(r) });
  const ticks: Tick[] = [];
  for await (const batch of source.batches()) ticks.push(...batch);
  await source.close();
  return { ticks, rejections, source };
}

const HEADER = 'type,symbol,ts,venue,price,size\n';
const row = (ts: number) => `trade,AAA,${ts},X,1.5,10\n`;

describe('file producer limits (real files)', () => {
  it('stops a 20 MB line without a newline at 1 MiB as it is read; the rows around it load', async () => {
    const huge = 'x'.repeat(20_000_000);
    const path = file('long-line.csv', HEADER + row(1000) + huge + '\n' + row(3000));
    const rejects = join(dir, `${uniqueName('rej')}.ndjson`);
    const { ticks, rejections, source } = await readAll({ paths: [path], rejectsPath: rejects });
    expect(ticks.map((t) => t.ts)).toEqual([1000n, 3000n]);
    expect(rejections).toHaveLength(1);
    expect(rejections[0]!.line).toBe(3);
    expect(rejections[0]!.reason).toBe(
      `record longer than ${MAX_RECORD_CHARS} characters (20000000); nothing of it was decoded`,
    );
    expect(rejections[0]!.raw).toBe('x'.repeat(EXCERPT_CHARS));
    expect(source.stats.rows).toBe(3);
    // The reject keeps an excerpt, not the record: the rejects file stays small.
    expect(statSync(rejects).size).toBeLessThan(4 * EXCERPT_CHARS);
    const written = JSON.parse(readFileSync(rejects, 'utf8').trim()) as Record<string, unknown>;
    expect(written).toMatchObject({ line: 3, raw: 'x'.repeat(EXCERPT_CHARS) });
  });

  it('the same for NDJSON, and for a last line without a newline', async () => {
    const good = (ts: number) => `{"type":"trade","symbol":"AAA","ts":"${ts}","price":1.5,"size":10}\n`;
    const path = file('long-last.ndjson', good(1000) + `{"symbol":"${'y'.repeat(3_000_000)}`);
    const { ticks, rejections } = await readAll({ paths: [path] });
    expect(ticks.map((t) => t.ts)).toEqual([1000n]);
    expect(rejections.map((r) => [r.line, r.reason, r.raw.length])).toEqual([
      [
        2,
        `record longer than ${MAX_RECORD_CHARS} characters (3000011); nothing of it was decoded`,
        EXCERPT_CHARS,
      ],
    ]);
  });

  it('an open quoted field of many short lines is cut at 1 MiB, reported once where it starts', async () => {
    // Each line holds an escaped quote (""): the field stays open, and a re-split per line would be quadratic.
    const lines = '""x\n'.repeat(300_000);
    const path = file('open-quote.csv', HEADER + row(1000) + 'trade,AAA,2000,"' + lines);
    const { ticks, rejections } = await readAll({ paths: [path] });
    expect(ticks.map((t) => t.ts)).toEqual([1000n]);
    const first = rejections[0]!;
    expect(first.line).toBe(3);
    expect(first.reason).toBe(
      `unterminated quoted field (record longer than ${MAX_RECORD_CHARS} characters)`,
    );
    expect(first.raw.length).toBe(EXCERPT_CHARS);
    expect(first.raw.startsWith('trade,AAA,2000,"""x\n""x\n')).toBe(true);
  });

  it('a reject longer than the excerpt keeps its beginning and says how long it was', async () => {
    const symbol = 'S'.repeat(5000);
    const path = file('long-row.csv', HEADER + `trade,${symbol},1000,X,1.5,10\n`);
    const { rejections } = await readAll({ paths: [path] });
    expect(rejections).toHaveLength(1);
    expect(rejections[0]!.raw.length).toBe(EXCERPT_CHARS);
    expect(rejections[0]!.rawLength).toBe(5000 + 20);
    expect(rejections[0]!.reason).toMatch(/column "symbol": must be 1 to 64 characters/);
  });

  it('refuses a gzip bomb once it inflates past the ratio limit, as a file error', async () => {
    // 80 MB of zeros compress to about 80 KB: far beyond 100 times the file's size and the 64 MiB floor.
    const bomb = file('bomb.csv.gz', gzipSync(Buffer.alloc(80 * 1024 * 1024, '0')));
    const size = statSync(bomb).size;
    const { ticks, source } = await readAll({ paths: [bomb] });
    expect(ticks).toEqual([]);
    expect(source.stats.fileErrors).toEqual([
      {
        file: bomb,
        reason: `${bomb}: decompresses to more than ${64 * 1024 * 1024} characters, 100 times its ${size} bytes: refused as a likely gzip bomb`,
      },
    ]);
  });

  it('a gzip file within the ratio loads whole', async () => {
    let text = HEADER;
    for (let i = 1; i <= 2000; i++) text += row(i);
    const path = file('fine.csv.gz', gzipSync(text));
    const { ticks, source } = await readAll({ paths: [path], maxGzipRatio: 2 });
    expect(ticks).toHaveLength(2000);
    expect(source.stats.fileErrors).toEqual([]);
  });
});

describe('the rejects file never destroys an input', () => {
  it('refuses --rejects naming an input file, by any path to it, and leaves the input intact', async () => {
    const content = HEADER + row(1000);
    const input = file('input.csv', content);
    const hard = join(dir, 'hard-link.csv');
    linkSync(input, hard);
    const soft = join(dir, 'soft-link.csv');
    symlinkSync(input, soft);
    for (const rejectsPath of [input, hard, soft, join(dir, '.', 'input.csv')]) {
      const source = new FileSource({ paths: [input], rejectsPath, overwriteRejects: true });
      const err = await source.open().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, rejectsPath).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toBe(
        `--rejects ${rejectsPath} is the input file ${input}: choose another path`,
      );
      await source.close();
    }
    expect(readFileSync(input, 'utf8')).toBe(content);
  });

  it('refuses to overwrite an existing rejects file unless asked', async () => {
    const input = file('in2.csv', HEADER + row(1000) + 'trade,AAA,2000,X,-1,10\n');
    const rejects = file('old-rejects.ndjson', 'keep me\n');
    const refused = new FileSource({ paths: [input], rejectsPath: rejects });
    await expect(refused.open()).rejects.toThrow(
      `--rejects ${rejects} exists: pass --force to overwrite it, or choose another path`,
    );
    await refused.close();
    expect(readFileSync(rejects, 'utf8')).toBe('keep me\n');

    const { rejections } = await readAll({ paths: [input], rejectsPath: rejects, overwriteRejects: true });
    expect(rejections).toHaveLength(1);
    expect(readFileSync(rejects, 'utf8')).toMatch(/^\{"file":.*"line":3,/);
  });

  it('the CLI says so and exits 2 without touching the input', async () => {
    const content = HEADER + row(1000);
    const input = file('cli-input.csv', content);
    const r = await runCli(['produce', 'file', input, '--rejects', input], {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: uniqueName('ts'),
    });
    expect(r.stderr).toContain(`--rejects ${input} is the input file ${input}: choose another path`);
    expect(r.code).toBe(2);
    expect(readFileSync(input, 'utf8')).toBe(content);
  });
});
