export { freePort } from '../chaos/servers.ts';

/** Reading the processes' own /metrics (prom-client exposition) from a benchmark. */

/** One scrape of a process: every sample by metric name and label string. */
export type Scrape = Map<string, number>;

export function parseExposition(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

export async function scrapePort(port: number): Promise<Scrape> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return parseExposition(await res.text());
}

/** Several processes' scrapes as one: counters and histogram buckets add up. */
export function mergeScrapes(scrapes: readonly Scrape[]): Scrape {
  const out: Scrape = new Map();
  for (const s of scrapes) for (const [k, v] of s) out.set(k, (out.get(k) ?? 0) + v);
  return out;
}

export function delta(a: Scrape, b: Scrape, key: string): number {
  return (b.get(key) ?? 0) - (a.get(key) ?? 0);
}

/** Quantiles of a histogram's delta between two scrapes, interpolated within buckets like histogram_quantile. */
export function histogramDelta(
  a: Scrape,
  b: Scrape,
  name: string,
  labels: string,
): { p50: number; p99: number; maxAtMost: number; count: number } {
  const buckets: { le: number; n: number }[] = [];
  const re = new RegExp(`^${name}_bucket\\{(.*)\\}$`);
  for (const key of b.keys()) {
    const m = re.exec(key);
    if (m === null || !m[1]!.includes(labels)) continue;
    const le = /le="([^"]+)"/.exec(m[1]!)![1]!;
    buckets.push({ le: le === '+Inf' ? Infinity : Number(le), n: delta(a, b, key) });
  }
  buckets.sort((x, y) => x.le - y.le);
  const count = buckets.at(-1)?.n ?? 0;
  const q = (p: number) => {
    if (count === 0) return NaN;
    const rank = p * count;
    let prevLe = 0;
    let prevN = 0;
    for (const bk of buckets) {
      if (bk.n >= rank) {
        if (bk.le === Infinity) return prevLe;
        return prevLe + ((bk.le - prevLe) * (rank - prevN)) / Math.max(1, bk.n - prevN);
      }
      prevLe = bk.le;
      prevN = bk.n;
    }
    return prevLe;
  };
  let maxAtMost = NaN;
  for (let i = 0; i < buckets.length; i++) {
    const below = i === 0 ? 0 : buckets[i - 1]!.n;
    if (buckets[i]!.n > below) maxAtMost = buckets[i]!.le;
  }
  return { p50: q(0.5), p99: q(0.99), maxAtMost, count };
}

/** The sum of every series of a metric between two scrapes. */
export function sumDelta(a: Scrape, b: Scrape, name: string): number {
  let total = 0;
  for (const key of b.keys()) if (key.startsWith(`${name}{`) || key === name) total += delta(a, b, key);
  return total;
}
