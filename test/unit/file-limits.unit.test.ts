import { describe, expect, it } from 'vitest';
import { gzipLimit, LineSplitter, type Overlong } from '../../producers/file/index.ts';

function split(chunks: string[], max: number): (string | Overlong)[] {
  const s = new LineSplitter(max);
  const out: (string | Overlong)[] = [];
  for (const c of chunks) s.push(c, out);
  s.end(out);
  return out;
}

describe('LineSplitter', () => {
  it('yields the lines of a text however it is chunked', () => {
    const text = 'a,b\n\nccc\nd\n';
    const whole = split([text], 100);
    expect(whole).toEqual(['a,b', '', 'ccc', 'd']);
    for (let cut = 0; cut <= text.length; cut++) {
      expect(split([text.slice(0, cut), text.slice(cut)], 100)).toEqual(whole);
    }
    expect(split([...text], 100)).toEqual(whole);
  });

  it('keeps a last line without a newline', () => {
    expect(split(['x\ny'], 10)).toEqual(['x', 'y']);
    expect(split(['x\n'], 10)).toEqual(['x']);
  });

  it('cuts a line over the limit, keeping only an excerpt and its length, and goes on after it', () => {
    const out = split(['ok\n', 'a'.repeat(30), 'b'.repeat(30), 'c'.repeat(2000), '\nnext\n'], 50);
    expect(out).toHaveLength(3);
    expect(out[0]).toBe('ok');
    const cut = out[1] as Overlong;
    expect(cut.length).toBe(2060);
    expect(cut.excerpt).toBe('a'.repeat(30) + 'b'.repeat(30) + 'c'.repeat(964));
    expect(out[2]).toBe('next');
  });

  it('a line exactly at the limit is kept whole', () => {
    expect(split(['z'.repeat(50), '\n'], 50)).toEqual(['z'.repeat(50)]);
  });
});

describe('gzip limit', () => {
  it('is the ratio times the compressed size, with a 64 MiB floor', () => {
    expect(gzipLimit(1000, 100)).toBe(64 * 1024 * 1024);
    expect(gzipLimit(10_000_000, 100)).toBe(1_000_000_000);
  });
});
