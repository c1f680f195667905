import { badRequest } from './errors.ts';

/**
 * A time parameter → nanoseconds since the epoch: ISO 8601 with up to nine fractional digits (kept exact, a
 * zone required), or an integer number of milliseconds. Anything else is a 400 naming the parameter.
 */
export function parseTime(name: string, text: string): bigint {
  if (/^\d{1,15}$/.test(text)) return BigInt(text) * 1_000_000n;
  const m = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/.exec(text);
  const ms = m === null ? NaN : Date.parse(`${m[1]}${m[3]}`);
  if (m === null || Number.isNaN(ms)) {
    throw badRequest(
      `${name}: expected an ISO 8601 time with a zone (2026-11-30T12:00:00Z) or epoch milliseconds, got "${text}"`,
    );
  }
  return BigInt(ms) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

/** Comma-separated symbols of a batch, each checked, duplicates dropped. */
export function parseSymbols(name: string, text: string, pattern: RegExp, max: number): string[] {
  const symbols = [
    ...new Set(
      text
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== ''),
    ),
  ];
  if (symbols.length === 0) throw badRequest(`${name}: at least one symbol`);
  if (symbols.length > max)
    throw badRequest(`${name}: at most ${max} symbols per request (got ${symbols.length})`);
  const bad = symbols.find((s) => !pattern.test(s));
  if (bad !== undefined)
    throw badRequest(`${name}: "${bad.slice(0, 70)}" is not a symbol (letters, digits, ._:/^=-)`);
  return symbols;
}
