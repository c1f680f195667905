import { quoteIdent, type PgClient } from '../../shared/pg.ts';
import { parseScaled, SCALE_DIGITS, type TimeframeName } from '../bars/aggregate.ts';
import type { IndicatorResult, IndicatorValues, WindowBar } from './compute.ts';

/**
 * PostgreSQL side of the indicator jobs: reads closed bars (table `bars`), writes `indicators`
 * (infra/migrations/0003_bars.sql). Rows are keyed (symbol, tf, start_ns); an upsert only touches a row whose
 * values differ, so recomputing a bar with unchanged inputs writes nothing, and two workers computing the
 * same bar converge on the one row with the same deterministic values.
 */

export interface IndicatorRow {
  symbol: string;
  tf: TimeframeName;
  start: bigint;
  values: IndicatorValues;
  status: 'ok' | 'warming_up';
  bars: number;
  filled: number;
  params: string;
  computedAt?: Date;
}

const VALUE_COLUMNS = [
  ['sma', 'sma'],
  ['ema', 'ema'],
  ['rsi', 'rsi'],
  ['macd', 'macd'],
  ['macd_signal', 'macdSignal'],
  ['macd_hist', 'macdHist'],
  ['bb_upper', 'bbUpper'],
  ['bb_middle', 'bbMiddle'],
  ['bb_lower', 'bbLower'],
  ['atr', 'atr'],
  ['vwap', 'vwap'],
] as const satisfies readonly (readonly [string, keyof IndicatorValues])[];

export class IndicatorStore {
  private readonly s: string;

  constructor(readonly schema: string) {
    this.s = quoteIdent(schema);
  }

  /** Symbols with a trade merged within `activeWindowMs` of wall time (0: all symbols that have bars). */
  async activeSymbols(client: PgClient, activeWindowMs: number): Promise<string[]> {
    const { rows } = await client.query<{ symbol: string }>(
      `SELECT symbol FROM ${this.s}.bar_symbols
        WHERE $1::bigint = 0 OR updated_at >= now() - make_interval(secs => $1::bigint / 1000.0)
        ORDER BY symbol`,
      [activeWindowMs],
    );
    return rows.map((r) => r.symbol);
  }

  /**
   * The newest `limit` closed bars of each symbol, oldest first, in one round trip. Volume and notional (only
   * VWAP needs them) come for the newest `withVolume` bars; older bars get 0. Values travel as comma-separated
   * text: PostgreSQL prints float8 in shortest round-trip form, so Number() restores the exact doubles, and
   * splitting text is several times cheaper than pg's array parser. JIT is off for the query: compiling it costs
   * more than the query itself.
   */
  async closedBars(
    client: PgClient,
    tf: TimeframeName,
    symbols: readonly string[],
    limit: number,
    withVolume = limit,
  ): Promise<Map<string, WindowBar[]>> {
    await client.query('BEGIN');
    let rows: {
      symbol: string;
      st: string;
      h: string;
      l: string;
      c: string;
      vs: string | null;
      v: string | null;
      n: string | null;
    }[];
    try {
      await client.query('SET LOCAL jit = off');
      ({ rows } = await client.query(
        `SELECT s.symbol, w.st, w.h, w.l, w.c, vn.vs, vn.v, vn.n
           FROM unnest($2::text[]) AS s(symbol)
           CROSS JOIN LATERAL (
             SELECT string_agg(x.start_ns::text, ',' ORDER BY x.start_ns) AS st,
                    string_agg(x.high::text, ',' ORDER BY x.start_ns) AS h,
                    string_agg(x.low::text, ',' ORDER BY x.start_ns) AS l,
                    string_agg(x.close::text, ',' ORDER BY x.start_ns) AS c
               FROM (SELECT start_ns, high, low, close FROM ${this.s}.bars b
                      WHERE b.symbol = s.symbol AND b.tf = $1 AND b.closed
                      ORDER BY b.start_ns DESC LIMIT $3) x
           ) w
           CROSS JOIN LATERAL (
             SELECT string_agg(y.start_ns::text, ',' ORDER BY y.start_ns) AS vs,
                    string_agg(y.volume::text, ',' ORDER BY y.start_ns) AS v,
                    string_agg(y.notional::text, ',' ORDER BY y.start_ns) AS n
               FROM (SELECT start_ns, volume, notional FROM ${this.s}.bars b
                      WHERE b.symbol = s.symbol AND b.tf = $1 AND b.closed
                      ORDER BY b.start_ns DESC LIMIT $4) y
           ) vn
          WHERE w.st IS NOT NULL`,
        [tf, [...symbols], limit, Math.min(withVolume, limit)],
      ));
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    const out = new Map<string, WindowBar[]>();
    for (const r of rows) {
      const st = r.st.split(',');
      const h = r.h.split(',');
      const l = r.l.split(',');
      const c = r.c.split(',');
      const bars: WindowBar[] = new Array(st.length);
      for (let i = 0; i < st.length; i++) {
        bars[i] = {
          start: BigInt(st[i]!),
          high: Number(h[i]),
          low: Number(l[i]),
          close: Number(c[i]),
          volume: 0n,
          notional: 0n,
        };
      }
      if (r.vs !== null && r.v !== null && r.n !== null) {
        const vs = r.vs.split(',');
        const v = r.v.split(',');
        const n = r.n.split(',');
        // The volume rows are the newest ones: align them from the end.
        const offset = bars.length - vs.length;
        for (let i = 0; i < vs.length; i++) {
          const bar = bars[offset + i]!;
          if (bar.start.toString() !== vs[i])
            throw new Error(`bars of ${r.symbol} changed between two reads`);
          bar.volume = parseScaled(v[i]!, SCALE_DIGITS);
          bar.notional = parseScaled(n[i]!, 2 * SCALE_DIGITS);
        }
      }
      out.set(r.symbol, bars);
    }
    return out;
  }

  /** Insert or update rows whose values changed; returns how many rows were written. */
  async upsert(client: PgClient, tf: TimeframeName, rows: readonly IndicatorRow[]): Promise<number> {
    if (rows.length === 0) return 0;
    const sorted = [...rows].sort((a, b) =>
      a.symbol !== b.symbol
        ? a.symbol < b.symbol
          ? -1
          : 1
        : a.start < b.start
          ? -1
          : a.start > b.start
            ? 1
            : 0,
    );
    const cols = VALUE_COLUMNS.map(([c]) => c);
    const params: unknown[] = [
      sorted.map((r) => r.symbol),
      sorted.map(() => tf),
      sorted.map((r) => r.start.toString()),
      ...VALUE_COLUMNS.map(([, k]) => sorted.map((r) => r.values[k])),
      sorted.map((r) => r.status),
      sorted.map((r) => r.bars),
      sorted.map((r) => r.filled),
      sorted.map((r) => r.params),
    ];
    const valueParams = cols.map((_, i) => `$${i + 4}::float8[]`).join(', ');
    const n = cols.length;
    const result = await client.query(
      `INSERT INTO ${this.s}.indicators AS i (symbol, tf, start_ns, ${cols.join(', ')}, status, bars, filled, params)
       SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], ${valueParams},
                            $${n + 4}::text[], $${n + 5}::int4[], $${n + 6}::int4[], $${n + 7}::text[])
       ON CONFLICT (symbol, tf, start_ns) DO UPDATE SET
         ${cols.map((c) => `${c} = EXCLUDED.${c}`).join(', ')},
         status = EXCLUDED.status, bars = EXCLUDED.bars, filled = EXCLUDED.filled, params = EXCLUDED.params,
         computed_at = now()
       WHERE (${cols.map((c) => `i.${c}`).join(', ')}, i.status, i.bars, i.filled, i.params)
             IS DISTINCT FROM
             (${cols.map((c) => `EXCLUDED.${c}`).join(', ')}, EXCLUDED.status, EXCLUDED.bars, EXCLUDED.filled, EXCLUDED.params)`,
      params,
    );
    return result.rowCount ?? 0;
  }

  /** Stored rows of one symbol and timeframe, newest first. */
  async recent(client: PgClient, symbol: string, tf: TimeframeName, limit: number): Promise<IndicatorRow[]> {
    const { rows } = await client.query<Record<string, unknown>>(
      `SELECT symbol, tf, start_ns::text AS start_ns, ${VALUE_COLUMNS.map(([c]) => c).join(', ')},
              status, bars, filled, params, computed_at
         FROM ${this.s}.indicators WHERE symbol = $1 AND tf = $2 ORDER BY start_ns DESC LIMIT $3`,
      [symbol, tf, limit],
    );
    return rows.map((r) => ({
      symbol: r.symbol as string,
      tf: r.tf as TimeframeName,
      start: BigInt(r.start_ns as string),
      values: Object.fromEntries(
        VALUE_COLUMNS.map(([c, k]) => [k, r[c] as number | null]),
      ) as unknown as IndicatorValues,
      status: r.status as IndicatorRow['status'],
      bars: r.bars as number,
      filled: r.filled as number,
      params: r.params as string,
      computedAt: r.computed_at as Date,
    }));
  }
}

export function rowOf(symbol: string, tf: TimeframeName, r: IndicatorResult, params: string): IndicatorRow {
  return {
    symbol,
    tf,
    start: r.start,
    values: r.values,
    status: r.status,
    bars: r.bars,
    filled: r.filled,
    params,
  };
}
