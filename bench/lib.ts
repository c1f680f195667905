import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Benchmark plumbing. A benchmark measures our path and, in the same run, a baseline (the naive way or the
 * raw server limit), repeats each a few times and reports medians and the ratio, because this machine is noisy.
 * Results print as a table and go to bench/results/<name>.json.
 */
export interface Measurement {
  /** What was measured, e.g. "producer (frames, pipelined)". */
  label: string;
  /** Median over the repetitions. */
  value: number;
  unit: string;
  /** Every repetition's value, for the record. */
  runs: number[];
}

export interface BenchReport {
  name: string;
  measurements: Measurement[];
  /** Ratios and targets worth stating, e.g. { 'vs naive': 31.2, target: '>= 20x' }. */
  summary: Record<string, string | number>;
  notes?: string[];
  /** Anything else worth keeping in the JSON (not printed). */
  details?: unknown;
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function percentile(values: readonly number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export async function repeat(times: number, fn: () => Promise<number>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < times; i++) out.push(await fn());
  return out;
}

export function measurement(label: string, unit: string, runs: number[]): Measurement {
  return { label, unit, runs, value: median(runs) };
}

export function report(r: BenchReport): void {
  const dir = join(import.meta.dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, `${r.name}.json`),
    `${JSON.stringify({ ...r, at: new Date().toISOString() }, null, 2)}\n`,
  );
  const lines = [`\n== ${r.name}`];
  for (const m of r.measurements) {
    lines.push(
      `  ${m.label.padEnd(56)} ${fmt(m.value).padStart(12)} ${m.unit}   (runs: ${m.runs.map(fmt).join(', ')})`,
    );
  }
  for (const [k, v] of Object.entries(r.summary))
    lines.push(`  ${k.padEnd(56)} ${typeof v === 'number' ? fmt(v) : v}`);
  for (const n of r.notes ?? []) lines.push(`  note: ${n}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  return v.toFixed(2);
}
