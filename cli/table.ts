/** Print rows as an aligned plain-text table on stdout. */
export function printTable(
  rows: readonly Record<string, unknown>[],
  out: NodeJS.WritableStream = process.stdout,
): void {
  if (rows.length === 0) {
    out.write('(no rows)\n');
    return;
  }
  const columns = Array.from(new Set(rows.flatMap((r) => Object.keys(r))));
  const cells = rows.map((r) => columns.map((c) => format(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  out.write(`${line(columns)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
  for (const row of cells) out.write(`${line(row)}\n`);
}

function format(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return escapeText(JSON.stringify(v));
  return escapeText(String(v));
}

/** Control, format (bidi), separator, private-use and unassigned characters, and lone surrogates. */
const UNPRINTABLE = /[\p{C}\p{Zl}\p{Zp}]/gu;

/**
 * Text from the stores made safe for a terminal: every character that could move the cursor, recolour or
 * reorder the output (ESC of an ANSI sequence, newlines, bidi overrides) is shown as a \u escape instead.
 * Names are refused at the edge when they hold such characters (shared/model.ts), but the stores may hold
 * older data, and a terminal must never run what a tick carried.
 */
/** escapeText for messages of several lines: their line breaks are kept, everything else is escaped. */
export function escapeLines(s: string): string {
  return s.split('\n').map(escapeText).join('\n');
}

export function escapeText(s: string): string {
  return s.replace(UNPRINTABLE, (c) => {
    const cp = c.codePointAt(0)!;
    return cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${cp.toString(16).padStart(4, '0')}`;
  });
}
