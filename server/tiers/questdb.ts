import { barsTable, rowsOf, type QuestDbHttp } from '../../shared/questdb.ts';
import { nsToIso, type BarView } from './port.ts';

/**
 * L3 for bar history when QuestDB is configured: the closed bars the bars sink's outbox copies into QuestDB's
 * `bars` table (infra/questdb/bars.sql), over its HTTP /exec endpoint. Open bars are never in QuestDB; recent
 * bars and everything else still come from PostgreSQL.
 */
export class QuestDbTier {
  private readonly table: string;

  constructor(
    private readonly http: QuestDbHttp,
    tablePrefix: string,
  ) {
    this.table = barsTable(tablePrefix);
  }

  async barsBetween(symbol: string, tf: string, fromNs: bigint, toNs: bigint): Promise<BarView[]> {
    const sql =
      `SELECT ts, symbol, tf, open, high, low, close, volume, vwap, trades FROM ${this.table}` +
      ` WHERE symbol = ${literal(symbol)} AND tf = ${literal(tf)}` +
      ` AND ts >= ${literal(usIso(fromNs))} AND ts < ${literal(usIso(toNs))} ORDER BY ts`;
    const rows = rowsOf(await this.http.exec(sql));
    return rows.map((r) => {
      const start = isoToNs(String(r.ts));
      return {
        symbol,
        tf,
        start,
        time: nsToIso(start),
        open: Number(r.open),
        high: Number(r.high),
        low: Number(r.low),
        close: Number(r.close),
        volume: Number(r.volume),
        vwap: r.vwap === null ? null : Number(r.vwap),
        trades: Number(r.trades),
        closed: true,
      };
    });
  }
}

function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** Nanoseconds → ISO with microseconds, how QuestDB compares TIMESTAMP literals. */
function usIso(ns: bigint): string {
  const ms = Number(ns / 1_000_000n);
  const micros = ((ns / 1000n) % 1_000_000n).toString().padStart(6, '0');
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, `.${micros}Z`);
}

/** "2026-11-30T12:00:00.000000Z" → nanoseconds as a string. */
export function isoToNs(iso: string): string {
  const m = /^(.*?)(?:\.(\d+))?Z$/.exec(iso);
  const whole = Date.parse(`${m?.[1] ?? iso}Z`);
  const frac = (m?.[2] ?? '').padEnd(9, '0').slice(0, 9);
  return (BigInt(Math.floor(whole / 1000)) * 1_000_000_000n + BigInt(frac)).toString();
}
