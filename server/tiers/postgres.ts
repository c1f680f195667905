import { pgErrorCode, quoteIdent, withClient, type PgPool } from '../../shared/pg.ts';
import { IndicatorStore } from '../../consumers/indicators/store.ts';
import type { TimeframeName } from '../../consumers/bars/aggregate.ts';
import {
  nsToIso,
  type BarView,
  type IndicatorView,
  type QuoteView,
  type TradePage,
  type TradeView,
} from './port.ts';

/**
 * L3: PostgreSQL, read only: the archive (`trades`, `quotes`), `bars` and `indicators` tables the consumers
 * write (infra/migrations). One statement per call. A table that does not exist (no archive or bars consumer
 * ever ran against this schema) holds nothing; any other error is the tier failing.
 */
export class PostgresTier {
  private readonly s: string;
  private readonly indicatorsStore: IndicatorStore;

  constructor(
    private readonly pool: PgPool,
    schema: string,
  ) {
    this.s = quoteIdent(schema);
    this.indicatorsStore = new IndicatorStore(schema);
  }

  /** The newest archived quote and trade of each symbol. */
  async quotes(symbols: readonly string[]): Promise<Map<string, QuoteView>> {
    const rows = await this.query<{
      symbol: string;
      q_ts: string | null;
      bid: string | null;
      bid_size: string | null;
      ask: string | null;
      ask_size: string | null;
      q_venue: string | null;
      t_ts: string | null;
      price: string | null;
      size: string | null;
      t_venue: string | null;
    }>(
      `SELECT s.symbol, q.ts_ns::text AS q_ts, q.bid_price::text AS bid, q.bid_size::text AS bid_size,
              q.ask_price::text AS ask, q.ask_size::text AS ask_size, q.venue AS q_venue,
              t.ts_ns::text AS t_ts, t.price::text AS price, t.size::text AS size, t.venue AS t_venue
         FROM unnest($1::text[]) AS s(symbol)
         LEFT JOIN LATERAL (SELECT * FROM ${this.s}.quotes x WHERE x.symbol = s.symbol
                             ORDER BY x.ts DESC, x.ts_ns DESC, x.seq DESC LIMIT 1) q ON true
         LEFT JOIN LATERAL (SELECT * FROM ${this.s}.trades y WHERE y.symbol = s.symbol
                             ORDER BY y.ts DESC, y.ts_ns DESC, y.seq DESC LIMIT 1) t ON true
        WHERE q.ts_ns IS NOT NULL OR t.ts_ns IS NOT NULL`,
      [[...symbols]],
    );
    const out = new Map<string, QuoteView>();
    for (const r of rows) {
      const ts = BigInt(r.q_ts ?? '0') >= BigInt(r.t_ts ?? '0') ? r.q_ts! : r.t_ts!;
      out.set(r.symbol, {
        symbol: r.symbol,
        bid: num(r.bid),
        bid_size: num(r.bid_size),
        ask: num(r.ask),
        ask_size: num(r.ask_size),
        quote_ts: r.q_ts,
        quote_venue: r.q_venue,
        last: num(r.price),
        last_size: num(r.size),
        trade_ts: r.t_ts,
        trade_venue: r.t_venue,
        ts,
        time: nsToIso(ts),
        updated_at: Number(BigInt(ts) / 1_000_000n),
      });
    }
    return out;
  }

  /** The newest `limit` bars (open or closed), oldest first. */
  async recentBars(symbol: string, tf: string, limit: number): Promise<BarView[]> {
    const rows = await this.query<RawBar>(
      `SELECT * FROM (SELECT ${BAR_COLUMNS} FROM ${this.s}.bars WHERE symbol = $1 AND tf = $2
                       ORDER BY start_ns DESC LIMIT $3) b ORDER BY start_ns`,
      [symbol, tf, limit],
    );
    return rows.map(barOf);
  }

  /** Bars starting in [fromNs, toNs), oldest first. */
  async barsBetween(symbol: string, tf: string, fromNs: bigint, toNs: bigint): Promise<BarView[]> {
    const rows = await this.query<RawBar>(
      `SELECT ${BAR_COLUMNS} FROM ${this.s}.bars
        WHERE symbol = $1 AND tf = $2 AND start_ns >= $3::int8 AND start_ns < $4::int8 ORDER BY start_ns`,
      [symbol, tf, fromNs.toString(), toNs.toString()],
    );
    return rows.map(barOf);
  }

  /** Latest stored indicator row of symbol:tf keys. */
  async indicators(keys: readonly string[]): Promise<Map<string, IndicatorView>> {
    const out = new Map<string, IndicatorView>();
    await this.tolerateMissing(() =>
      withClient(this.pool, async (client) => {
        for (const key of keys) {
          const [symbol, tf] = splitKey(key);
          const [row] = await this.indicatorsStore.recent(client, symbol, tf as TimeframeName, 1);
          if (row === undefined) continue;
          out.set(key, {
            symbol,
            tf,
            start: row.start.toString(),
            time: nsToIso(row.start),
            status: row.status,
            values: { ...row.values },
          });
        }
      }),
    );
    return out;
  }

  /**
   * A page of archived trades in [fromNs, toNs), in identity order (ts, seq, source), after `after` (the
   * cursor: the last trade of the previous page).
   */
  async trades(q: {
    symbol: string;
    fromNs: bigint;
    toNs: bigint;
    limit: number;
    after?: { ts: string; seq: string; source: string } | undefined;
  }): Promise<TradePage> {
    const fromMs = q.fromNs / 1_000_000n;
    const toMs = q.toNs / 1_000_000n + 1n;
    const rows = await this.query<{
      ts_ns: string;
      seq: string;
      source: string;
      venue: string;
      price: string;
      size: string;
      side: string;
    }>(
      `SELECT ts_ns::text AS ts_ns, seq::text AS seq, source, venue, price::text AS price, size::text AS size, side
         FROM ${this.s}.trades
        WHERE symbol = $1 AND ts >= to_timestamp($2::int8 / 1000.0) AND ts < to_timestamp($3::int8 / 1000.0)
          AND ts_ns >= $4::int8 AND ts_ns < $5::int8
          AND ($6::int8 IS NULL OR (ts_ns, seq, source) > ($6::int8, $7::int8, $8::text))
        ORDER BY ts_ns, seq, source LIMIT $9`,
      [
        q.symbol,
        fromMs.toString(),
        toMs.toString(),
        q.fromNs.toString(),
        q.toNs.toString(),
        q.after?.ts ?? null,
        q.after?.seq ?? null,
        q.after?.source ?? null,
        q.limit + 1,
      ],
    );
    const more = rows.length > q.limit;
    const page = rows.slice(0, q.limit);
    const trades: TradeView[] = page.map((r) => ({
      symbol: q.symbol,
      ts: r.ts_ns,
      time: nsToIso(r.ts_ns),
      seq: Number(r.seq),
      source: r.source,
      venue: r.venue,
      price: Number(r.price),
      size: Number(r.size),
      side: r.side,
    }));
    const last = page[page.length - 1];
    return {
      trades,
      next_cursor: more && last !== undefined ? encodeCursor(last.ts_ns, last.seq, last.source) : null,
    };
  }

  /** Symbols by newest trade merged into bars, most recent first (warm-up). */
  async activeSymbols(limit: number): Promise<string[]> {
    const rows = await this.query<{ symbol: string }>(
      `SELECT symbol FROM ${this.s}.bar_symbols ORDER BY updated_at DESC, symbol LIMIT $1`,
      [limit],
    );
    return rows.map((r) => r.symbol);
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  private async query<R extends object>(sql: string, params: unknown[]): Promise<R[]> {
    const rows = await this.tolerateMissing(async () => (await this.pool.query<R>(sql, params)).rows);
    return rows ?? [];
  }

  private async tolerateMissing<T>(fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err) {
      // undefined_table / invalid_schema_name: nothing was ever written here, so nothing is held.
      if (pgErrorCode(err) === '42P01' || pgErrorCode(err) === '3F000') return undefined;
      throw err;
    }
  }
}

const BAR_COLUMNS = `symbol, tf, start_ns::text AS start_ns, open, high, low, close, volume::text AS volume, vwap,
  trades::text AS trades, closed`;

interface RawBar {
  symbol: string;
  tf: string;
  start_ns: string;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: string;
  vwap: number | null;
  trades: string;
  closed: boolean;
}

function barOf(r: RawBar): BarView {
  return {
    symbol: r.symbol,
    tf: r.tf,
    start: r.start_ns,
    time: nsToIso(r.start_ns),
    open: r.open,
    high: r.high,
    low: r.low,
    close: r.close,
    volume: Number(r.volume),
    vwap: r.vwap,
    trades: Number(r.trades),
    closed: r.closed,
  };
}

function num(v: string | null): number | null {
  return v === null ? null : Number(v);
}

/** "SYMBOL:tf" → [symbol, tf]; a symbol may itself contain ':'. */
export function splitKey(key: string): [string, string] {
  const i = key.lastIndexOf(':');
  return [key.slice(0, i), key.slice(i + 1)];
}

export function encodeCursor(ts: string, seq: string, source: string): string {
  return Buffer.from(JSON.stringify([ts, seq, source])).toString('base64url');
}

/** The cursor's position, or undefined when it is not one of ours. */
export function decodeCursor(cursor: string): { ts: string; seq: string; source: string } | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (
      Array.isArray(v) &&
      v.length === 3 &&
      typeof v[0] === 'string' &&
      /^\d{1,19}$/.test(v[0]) &&
      typeof v[1] === 'string' &&
      /^\d{1,19}$/.test(v[1]) &&
      typeof v[2] === 'string'
    )
      return { ts: v[0], seq: v[1], source: v[2] };
  } catch {
    // not base64url JSON
  }
  return undefined;
}
