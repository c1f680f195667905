/**
 * Timestamps as people and files write them → nanoseconds since the epoch, exactly (never through a float):
 * used by the file producer for row timestamps and by replay for its time bounds.
 */
export type TsUnit = 's' | 'ms' | 'us' | 'ns';
export const TS_UNITS: readonly TsUnit[] = ['s', 'ms', 'us', 'ns'];

import { MAX_TS_NS } from './model.ts';

/** The model's upper bound (PostgreSQL's bigint maximum; shared/model.ts). */
export { MAX_TS_NS };
/** Fractional digits a numeric timestamp in this unit may carry before going below a nanosecond. */
const UNIT_DIGITS: Readonly<Record<TsUnit, number>> = { s: 9, ms: 6, us: 3, ns: 0 };
const ZEROS = '000000000';

/**
 * A timestamp → nanoseconds since the epoch, exactly (no float on the way), or a message saying why not.
 * Accepted: decimal digits in `unit` (a fraction allowed down to the nanosecond), or ISO-8601
 * `YYYY-MM-DD[T ]hh:mm:ss[.f…]` with up to 9 fractional digits and `Z`, `±hh:mm`, `±hhmm`, `±hh` or no zone
 * (no zone means UTC).
 */
export function parseTimestamp(text: string, unit: TsUnit = 'ns'): bigint | string {
  const n = text.length;
  if (n === 0) return 'missing';
  if (n >= 10 && text.charCodeAt(4) === 45 /* - */) return parseIsoTimestamp(text);
  if (unit === 'ns' && n <= 19 && allDigits(text, 0, n)) {
    const ns = BigInt(text);
    return ns > MAX_TS_NS ? 'out of range' : ns;
  }
  return parseNumericTimestamp(text, unit);
}

function allDigits(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return to > from;
}

function parseNumericTimestamp(text: string, unit: TsUnit): bigint | string {
  const dot = text.indexOf('.');
  const intPart = dot < 0 ? text : text.slice(0, dot);
  const frac = dot < 0 ? '' : text.slice(dot + 1);
  if (!allDigits(intPart, 0, intPart.length) || (dot >= 0 && !allDigits(frac, 0, frac.length))) {
    return `expected digits in ${unit} or an ISO-8601 time`;
  }
  const scale = UNIT_DIGITS[unit];
  if (frac.length > scale) {
    return scale === 0
      ? 'a fraction of a nanosecond is not allowed'
      : `more than ${scale} fractional digits (finer than a nanosecond) in ${unit}`;
  }
  if (intPart.length > 25) return 'out of range';
  const ns = BigInt(intPart + frac + ZEROS.slice(0, scale - frac.length));
  return ns > MAX_TS_NS ? 'out of range' : ns;
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
// Rows of a file come in time order, so the calendar day nearly always repeats: keep the last one.
let lastDay = '';
let lastDaySeconds = 0;

function digits2(s: string, i: number): number {
  const a = s.charCodeAt(i) - 48;
  const b = s.charCodeAt(i + 1) - 48;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : -1;
}

function parseIsoTimestamp(s: string): bigint | string {
  const bad = 'expected an ISO-8601 time like 2024-03-01T14:30:00.123456789Z';
  const n = s.length;
  let daySeconds: number;
  if (lastDay !== '' && s.startsWith(lastDay)) {
    daySeconds = lastDaySeconds;
  } else {
    const y1 = digits2(s, 0);
    const y2 = digits2(s, 2);
    const month = digits2(s, 5);
    const day = digits2(s, 8);
    if (y1 < 0 || y2 < 0 || month < 0 || day < 0 || s.charCodeAt(7) !== 45) return bad;
    const year = y1 * 100 + y2;
    const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
    if (month < 1 || month > 12) return 'month out of range';
    const dim = month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!;
    if (day < 1 || day > dim) return 'day out of range';
    daySeconds = Date.UTC(year, month - 1, day) / 1000;
    lastDay = s.slice(0, 10);
    lastDaySeconds = daySeconds;
  }
  if (n < 19) return bad;
  const sep = s.charCodeAt(10);
  if (sep !== 84 /* T */ && sep !== 32 /* space */ && sep !== 116 /* t */) return bad;
  const hh = digits2(s, 11);
  const mm = digits2(s, 14);
  const ss = digits2(s, 17);
  if (hh < 0 || mm < 0 || ss < 0 || s.charCodeAt(13) !== 58 || s.charCodeAt(16) !== 58) return bad;
  if (hh > 23 || mm > 59 || ss > 59) return 'time of day out of range';
  let i = 19;
  let fracNs = 0;
  if (i < n && (s.charCodeAt(i) === 46 /* . */ || s.charCodeAt(i) === 44) /* , */) {
    const start = ++i;
    while (i < n && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57)
      fracNs = fracNs * 10 + s.charCodeAt(i++) - 48;
    if (i === start) return bad;
    if (i - start > 9) return 'more than 9 fractional digits (finer than a nanosecond)';
    fracNs *= NS_SCALE[i - start]!;
  }
  let offsetSeconds = 0;
  if (i < n) {
    const z = s.charCodeAt(i);
    if (z === 90 /* Z */ || z === 122 /* z */) {
      i++;
    } else if (z === 43 /* + */ || z === 45 /* - */) {
      const oh = digits2(s, i + 1);
      let om = 0;
      let end = i + 3;
      if (end < n) {
        const colon = s.charCodeAt(end) === 58 ? 1 : 0;
        om = digits2(s, end + colon);
        end += colon + 2;
      }
      if (oh < 0 || om < 0 || oh > 23 || om > 59) return 'bad time zone offset';
      offsetSeconds = (z === 43 ? 1 : -1) * (oh * 3600 + om * 60);
      i = end;
    }
    if (i !== n) return bad;
  }
  const seconds = daySeconds + hh * 3600 + mm * 60 + ss - offsetSeconds;
  if (seconds < 0) return 'before 1970';
  // Integers all the way (seconds < 2^53, fracNs < 1e9): a BigInt built from a concatenated decimal string cost
  // several times more, and the live feeds parse one of these per message.
  const ns = BigInt(seconds) * NS_PER_S + BigInt(fracNs);
  return ns > MAX_TS_NS ? 'out of range' : ns;
}

const NS_PER_S = 1_000_000_000n;
/** What a fraction of d digits is multiplied by to be in nanoseconds. */
const NS_SCALE = [1e9, 1e8, 1e7, 1e6, 1e5, 1e4, 1e3, 1e2, 10, 1];
