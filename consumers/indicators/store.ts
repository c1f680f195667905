import { quoteIdent, type PgClient } from '../../shared/pg.ts';
import { parseScaled, SCALE_DIGITS, type TimeframeName } from '../bars/aggregate.ts';
import {
  parseState,
  type IndicatorResult,
  type IndicatorValues,
  type SeriesState,
  type WindowBar,
} from './compute.ts';

/**
 * PostgreSQL side of the indicator jobs: reads closed bars (table `bars`), writes `indicators`
 * (infra/migrations/0003_bars.sql). Rows are keyed (symbol, tf, start_ns); an upsert only touches a row whose
 * values differ, so recomputing a bar with unchanged inputs writes nothing, and two workers computing the
 * same bar converge on the one row with the same deterministic values.
 */

/** The largest bar start (int8): "no upper bound". */
export const INT8_MAX = 9_223_372_036_854_775_807n;

export interface IndicatorRow {
  symbol: string;
  tf: TimeframeName;
  start: bigint;
  values: IndicatorValues;
  status: 'ok' | 'warming_up';
  bars: number;
  filled: number;
  params: string;
  /** What continues the series at the next bar (null: none stored, rows written before state was carried). */
  state?: SeriesState | null;
  computedAt?: Date;
}

/** Where a series stands: its newest row, and the earliest bar whose row is stale (indicator_dirty). */
export interface SeriesHead {
  symbol: string;
  newest?: { start: bigint; state: SeriesState | undefined; params: string } | undefined;
  dirty?: { from: bigint; rev: bigint } | undefined;
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
    return (await this.write(client, tf, rows)).length;
  }

  /** Insert or update rows whose values (or state) changed; returns the rows written. */
  async write(
    client: PgClient,
    tf: TimeframeName,
    rows: readonly IndicatorRow[],
  ): Promise<{ symbol: string; start: bigint }[]> {
    if (rows.length === 0) return [];
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
      sorted.map((r) => (r.state === undefined || r.state === null ? null : JSON.stringify(r.state))),
    ];
    const valueParams = cols.map((_, i) => `$${i + 4}::float8[]`).join(', ');
    const n = cols.length;
    const result = await client.query<{ symbol: string; start_ns: string }>(
      `INSERT INTO ${this.s}.indicators AS i (symbol, tf, start_ns, ${cols.join(', ')}, status, bars, filled, params, state)
       SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], ${valueParams},
                            $${n + 4}::text[], $${n + 5}::int4[], $${n + 6}::int4[], $${n + 7}::text[], $${n + 8}::text[])
       ON CONFLICT (symbol, tf, start_ns) DO UPDATE SET
         ${cols.map((c) => `${c} = EXCLUDED.${c}`).join(', ')},
         status = EXCLUDED.status, bars = EXCLUDED.bars, filled = EXCLUDED.filled, params = EXCLUDED.params,
         state = EXCLUDED.state, computed_at = now()
       WHERE (${cols.map((c) => `i.${c}`).join(', ')}, i.status, i.bars, i.filled, i.params, i.state)
             IS DISTINCT FROM
             (${cols.map((c) => `EXCLUDED.${c}`).join(', ')}, EXCLUDED.status, EXCLUDED.bars, EXCLUDED.filled, EXCLUDED.params, EXCLUDED.state)
       RETURNING i.symbol, i.start_ns::text AS start_ns`,
      params,
    );
    return result.rows.map((r) => ({ symbol: r.symbol, start: BigInt(r.start_ns) }));
  }

  /**
   * Serialise the computation of these series with every other writer of them (jobs, backfill, rebuild), until
   * the transaction ends; ordered by lock key, so two writers never deadlock.
   */
  async lockSeries(client: PgClient, tf: TimeframeName, symbols: readonly string[]): Promise<void> {
    await client.query(
      `SELECT count(pg_advisory_xact_lock(hashtext($1), k))
         FROM (SELECT DISTINCT hashtext(s || ':' || $2) AS k FROM unnest($3::text[]) AS s ORDER BY 1) AS l`,
      [this.schema, tf, [...symbols]],
    );
  }

  /** Newest row and stale mark of each series. */
  async seriesHeads(client: PgClient, tf: TimeframeName, symbols: readonly string[]): Promise<SeriesHead[]> {
    const { rows } = await client.query<{
      symbol: string;
      from_ns: string | null;
      rev: string | null;
      start_ns: string | null;
      state: string | null;
      params: string | null;
    }>(
      `SELECT s.symbol, d.from_ns::text AS from_ns, d.rev::text AS rev, r.start_ns::text AS start_ns, r.state, r.params
         FROM unnest($2::text[]) AS s(symbol)
         LEFT JOIN ${this.s}.indicator_dirty d ON d.symbol = s.symbol AND d.tf = $1
         LEFT JOIN LATERAL (SELECT start_ns, state, params FROM ${this.s}.indicators i
                             WHERE i.symbol = s.symbol AND i.tf = $1 ORDER BY start_ns DESC LIMIT 1) r ON true`,
      [tf, [...symbols]],
    );
    return rows.map((r) => ({
      symbol: r.symbol,
      newest:
        r.start_ns === null
          ? undefined
          : { start: BigInt(r.start_ns), state: parseState(r.state), params: r.params ?? '' },
      dirty: r.from_ns === null ? undefined : { from: BigInt(r.from_ns), rev: BigInt(r.rev!) },
    }));
  }

  /** The newest row of a series starting before `before`. */
  async rowBefore(
    client: PgClient,
    tf: TimeframeName,
    symbol: string,
    before: bigint,
  ): Promise<{ start: bigint; state: SeriesState | undefined; params: string } | undefined> {
    const { rows } = await client.query<{ start_ns: string; state: string | null; params: string }>(
      `SELECT start_ns::text AS start_ns, state, params FROM ${this.s}.indicators
        WHERE symbol = $1 AND tf = $2 AND start_ns < $3::int8 ORDER BY start_ns DESC LIMIT 1`,
      [symbol, tf, before.toString()],
    );
    const r = rows[0];
    return r === undefined
      ? undefined
      : { start: BigInt(r.start_ns), state: parseState(r.state), params: r.params };
  }

  /**
   * Closed bars of each series: up to `history` of them at or before `after` (what the continued series needs
   * of its past), and up to `limit` after it and before `to`; oldest first per symbol.
   */
  async seriesBars(
    client: PgClient,
    tf: TimeframeName,
    series: readonly { symbol: string; after: bigint; history: number }[],
    limit: number,
    to: bigint,
  ): Promise<Map<string, WindowBar[]>> {
    const { rows } = await client.query<{
      symbol: string;
      start_ns: string;
      high: number;
      low: number;
      close: number;
      volume: string;
      notional: string;
    }>(
      `SELECT u.symbol, x.start_ns::text AS start_ns, x.high, x.low, x.close, x.volume::text AS volume,
              x.notional::text AS notional
         FROM unnest($2::text[], $3::int8[], $4::int4[]) AS u(symbol, after, hist)
         CROSS JOIN LATERAL (
           (SELECT start_ns, high, low, close, volume, notional FROM ${this.s}.bars b
             WHERE b.symbol = u.symbol AND b.tf = $1 AND b.closed AND b.start_ns <= u.after
             ORDER BY b.start_ns DESC LIMIT u.hist)
           UNION ALL
           (SELECT start_ns, high, low, close, volume, notional FROM ${this.s}.bars b
             WHERE b.symbol = u.symbol AND b.tf = $1 AND b.closed AND b.start_ns > u.after AND b.start_ns < $6::int8
             ORDER BY b.start_ns LIMIT $5)
         ) AS x
        ORDER BY u.symbol, x.start_ns`,
      [
        tf,
        series.map((x) => x.symbol),
        series.map((x) => x.after.toString()),
        series.map((x) => x.history),
        limit,
        to.toString(),
      ],
    );
    const out = new Map<string, WindowBar[]>();
    for (const r of rows) {
      let list = out.get(r.symbol);
      if (list === undefined) out.set(r.symbol, (list = []));
      list.push({
        start: BigInt(r.start_ns),
        high: r.high,
        low: r.low,
        close: r.close,
        volume: parseScaled(r.volume, SCALE_DIGITS),
        notional: parseScaled(r.notional, 2 * SCALE_DIGITS),
      });
    }
    return out;
  }

  /** Rows after `after` whose bar is gone or no longer closed (a rebuild removed it). */
  async deleteOrphans(client: PgClient, tf: TimeframeName, symbol: string, after: bigint): Promise<number> {
    const r = await client.query(
      `DELETE FROM ${this.s}.indicators i WHERE i.symbol = $1 AND i.tf = $2 AND i.start_ns > $3::int8
          AND NOT EXISTS (SELECT 1 FROM ${this.s}.bars b
                           WHERE b.symbol = i.symbol AND b.tf = i.tf AND b.start_ns = i.start_ns AND b.closed)`,
      [symbol, tf, after.toString()],
    );
    return r.rowCount ?? 0;
  }

  /**
   * The stale mark of a series after a pass: removed when the pass reached the newest bar, else moved to where
   * the next pass starts; either only if no writer marked the series again meanwhile (same rev).
   */
  async settleDirty(
    client: PgClient,
    tf: TimeframeName,
    symbol: string,
    rev: bigint,
    next: bigint | undefined,
  ): Promise<void> {
    if (next === undefined)
      await client.query(
        `DELETE FROM ${this.s}.indicator_dirty WHERE symbol = $1 AND tf = $2 AND rev = $3::int8`,
        [symbol, tf, rev.toString()],
      );
    else
      await client.query(
        `UPDATE ${this.s}.indicator_dirty SET from_ns = $4::int8 WHERE symbol = $1 AND tf = $2 AND rev = $3::int8`,
        [symbol, tf, rev.toString(), next.toString()],
      );
  }

  /** Every symbol that has bars. */
  async symbolsWithBars(client: PgClient): Promise<string[]> {
    const { rows } = await client.query<{ symbol: string }>(
      `SELECT symbol FROM ${this.s}.bar_symbols ORDER BY symbol`,
    );
    return rows.map((r) => r.symbol);
  }

  /** Closed bars of these symbols in [from, to) (a backfill's total). */
  async closedBarCount(
    client: PgClient,
    tf: TimeframeName,
    symbols: readonly string[],
    from: bigint | undefined,
    to: bigint | undefined,
  ): Promise<number> {
    const { rows } = await client.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM ${this.s}.bars
        WHERE tf = $1 AND closed AND symbol = ANY($2::text[]) AND start_ns >= $3::int8 AND start_ns < $4::int8`,
      [tf, [...symbols], (from ?? -1n).toString(), (to ?? INT8_MAX).toString()],
    );
    return Number(rows[0]?.n ?? 0);
  }

  /** The rows of these series from `from` on are stale (keeps an earlier mark). */
  async markStale(
    client: PgClient,
    tf: TimeframeName,
    symbols: readonly string[],
    from: bigint,
  ): Promise<void> {
    await markIndicatorsStale(
      client,
      this.s,
      symbols,
      symbols.map(() => tf),
      symbols.map(() => from),
    );
  }

  /** Symbols with a stale mark for this timeframe. */
  async dirtySymbols(client: PgClient, tf: TimeframeName): Promise<string[]> {
    const { rows } = await client.query<{ symbol: string }>(
      `SELECT symbol FROM ${this.s}.indicator_dirty WHERE tf = $1 ORDER BY symbol`,
      [tf],
    );
    return rows.map((r) => r.symbol);
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

/**
 * Mark series stale from a bar on, keeping an earlier mark (infra/migrations/0005). `s` is the quoted schema.
 * Every writer of bars calls it in the transaction that changes a closed bar.
 */
export async function markIndicatorsStale(
  client: PgClient,
  s: string,
  symbols: readonly string[],
  tfs: readonly string[],
  from: readonly bigint[],
): Promise<void> {
  if (symbols.length === 0) return;
  await client.query(
    `INSERT INTO ${s}.indicator_dirty AS d (symbol, tf, from_ns, rev)
     SELECT u.symbol, u.tf, u.from_ns, nextval('${s}.indicator_dirty_rev')
       FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(symbol, tf, from_ns)
      ORDER BY 1, 2
     ON CONFLICT (symbol, tf) DO UPDATE SET from_ns = LEAST(d.from_ns, EXCLUDED.from_ns), rev = EXCLUDED.rev`,
    [[...symbols], [...tfs], from.map(String)],
  );
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
