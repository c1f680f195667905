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
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}
