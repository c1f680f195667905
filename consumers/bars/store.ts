import { quoteIdent, type PgClient } from '../../shared/pg.ts';
import type { Trade } from '../../shared/model.ts';
import { markIndicatorsStale } from '../indicators/store.ts';
import {
  BarBuilder,
  byBarKey,
  formatScaled,
  mergeAll,
  SCALE_DIGITS,
  type Bar,
  type BarEvent,
  type Timeframe,
  type TimeframeName,
} from './aggregate.ts';
import { BarLedger } from './ledger.ts';

/**
 * The bars tables in PostgreSQL (infra/migrations/0003_bars.sql): the only place that writes them.
 *
 * Exactly-once merging under at-least-once delivery: a trade is merged into bars only in the transaction that
 * records its identity in the ledger (`bar_ledger_runs`, consumers/bars/ledger.ts). A redelivered trade finds
 * its identity there and is skipped, and
 * because ledger row, bar rows and clock advance commit together, a crash at any point either merged a trade
 * completely or not at all. Bars are commutative merges with exact sums, so the order in which trades (or
 * their redeliveries, or two consumers) arrive changes nothing but the `late` statistic.
 *
 * Concurrency: every writer first locks the clock rows of the watermark keys it touches, sorted, so writers
 * of the same symbols serialise and never deadlock; bar, ledger and symbol rows of a symbol are only written
 * under its clock's lock. A rebuild takes the clock table exclusively for its whole transaction.
 */

export const INT8_MAX = 9_223_372_036_854_775_807n;
const NO_CLOCK = -1n;

export interface BarStoreSettings {
  schema: string;
  timeframes: readonly Timeframe[];
  allowedLatenessNs: bigint;
  /** Trades older than their clock by more than this are refused (their ledger rows may have been pruned). */
  ledgerHorizonNs: bigint;
  watermarkKey: (symbol: string) => string;
}

/** A bar as stored: volume and notional as exact decimal text, vwap as computed by PostgreSQL. */
export interface BarRow {
  symbol: string;
  tf: TimeframeName;
  start: bigint;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: string;
  notional: string;
  vwap: number | null;
  trades: number;
  late: number;
  closed: boolean;
  rev: bigint;
}

/** The hash fields that name a bar (Redis `bar:` and `ind:` hashes start with them). */
export function barIdentityFields(symbol: string, tf: TimeframeName, start: bigint): string[] {
  return [
    'symbol',
    symbol,
    'tf',
    tf,
    'start',
    start.toString(),
    'time',
    new Date(Number(start / 1_000_000n)).toISOString(),
  ];
}

export interface Refusal {
  /** Index into the trades passed in. */
  index: number;
  reason: string;
  /** `horizon`: older than the ledger horizon (`tickstream bars rebuild` is the way in); `range`: not storable. */
  kind: 'horizon' | 'range';
}

export interface ApplyResult {
  /** Trades merged by this call. */
  applied: number;
  /** Trades already merged before (redelivery, replay) or repeated within the call. */
  duplicates: number;
  /** Of the applied trades, those that amended a bar which had already closed (for at least one timeframe). */
  late: number;
  refused: Refusal[];
  /** Bar rows written (merged or closed) by this call, for the Redis projection. */
  changed: BarRow[];
  closed: number;
}

interface RawBarRow {
  symbol: string;
  tf: string;
  start_ns: string;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: string;
  notional: string;
  vwap: number | null;
  trades: string;
  late: string;
  closed: boolean;
  rev: string;
}

function barColumns(alias = ''): string {
  const p = alias === '' ? '' : `${alias}.`;
  return [
    `${p}symbol`,
    `${p}tf`,
    `${p}start_ns::text AS start_ns`,
    `${p}open`,
    `${p}high`,
    `${p}low`,
    `${p}close`,
    `${p}volume::text AS volume`,
    `${p}notional::text AS notional`,
    `${p}vwap`,
    `${p}trades::text AS trades`,
    `${p}late::text AS late`,
    `${p}closed`,
    `${p}rev::text AS rev`,
  ].join(', ');
}

export function toBarRow(r: RawBarRow): BarRow {
  return {
    symbol: r.symbol,
    tf: r.tf as TimeframeName,
    start: BigInt(r.start_ns),
    open: r.open,
    high: r.high,
    low: r.low,
    close: r.close,
    volume: r.volume,
    notional: r.notional,
    vwap: r.vwap,
    trades: Number(r.trades),
    late: Number(r.late),
    closed: r.closed,
    rev: BigInt(r.rev),
  };
}

export class BarStore {
  readonly settings: BarStoreSettings;
  private readonly s: string;
  private readonly ledger: BarLedger;

  constructor(settings: BarStoreSettings) {
    this.settings = settings;
    this.s = quoteIdent(settings.schema);
    this.ledger = new BarLedger(`${this.s}.bar_ledger_runs`);
  }

  /**
   * Merge trades into bars exactly once, in one transaction on `client` (the caller runs BEGIN/COMMIT so a
   * rebuild can reuse the steps). Trades are taken in the order given: that order decides which are late.
   */
  async applyTrades(client: PgClient, trades: readonly Trade[]): Promise<ApplyResult> {
    const result: ApplyResult = { applied: 0, duplicates: 0, late: 0, refused: [], changed: [], closed: 0 };
    if (trades.length === 0) return result;
    const { watermarkKey, ledgerHorizonNs } = this.settings;
    // These statements are short; JIT-compiling them (their unnest row estimates look large) costs far more.
    await client.query('SET LOCAL jit = off');
    const keys = [...new Set(trades.map((t) => watermarkKey(t.symbol)))].sort();
    const clocks = await this.lockClocks(client, keys);

    const candidates: Trade[] = [];
    trades.forEach((t, index) => {
      if (t.ts > INT8_MAX) {
        result.refused.push({
          index,
          reason: `bars: exchange time ${t.ts} is beyond the year 2262 (int8 nanoseconds)`,
          kind: 'range',
        });
        return;
      }
      const clock = clocks.get(watermarkKey(t.symbol)) ?? NO_CLOCK;
      if (clock !== NO_CLOCK && t.ts < clock - ledgerHorizonNs) {
        result.refused.push({
          index,
          reason:
            `bars: trade is ${(clock - t.ts) / 1_000_000n} ms older than its clock, beyond the ledger horizon ` +
            `of ${ledgerHorizonNs / 1_000_000n} ms; rebuild that range from the archive (tickstream bars rebuild)`,
          kind: 'horizon',
        });
        return;
      }
      candidates.push(t);
    });

    // Repeats within the call and trades merged before are both duplicates (insertLedger keeps one of each).
    const fresh = await this.insertLedger(client, candidates);
    result.duplicates += candidates.length - fresh.length;
    if (fresh.length === 0) return result;

    const builder = new BarBuilder(this.settings);
    for (const [key, maxTs] of clocks) if (maxTs !== NO_CLOCK) builder.seedClock(key, maxTs);
    const events: BarEvent[] = [];
    for (const t of fresh) builder.add(t, events);
    result.applied = fresh.length;
    result.late = builder.stats.lateTrades;
    const partials = mergeAll(events.map((e) => e.bar));
    mergeAll(builder.openBars(), partials);
    result.changed = await this.mergeBars(client, [...partials.values()]);
    await this.markAmended(client, events);

    const clockMax = new Map<string, bigint>();
    for (const key of builder.clockKeys()) {
      const v = builder.clockOf(key);
      if (v !== undefined) clockMax.set(key, v);
    }
    const symbolMax = new Map<string, bigint>();
    for (const t of fresh) {
      const cur = symbolMax.get(t.symbol);
      if (cur === undefined || t.ts > cur) symbolMax.set(t.symbol, t.ts);
    }
    await this.advanceClocks(client, clockMax, symbolMax);
    const closed = await this.closeDue(client, [...clockMax.keys()]);
    result.closed = closed.length;
    result.changed.push(...closed);
    return result;
  }

  /** Lock (creating when missing) the clock rows of these keys, in order; returns their max_ts. */
  async lockClocks(client: PgClient, keys: readonly string[]): Promise<Map<string, bigint>> {
    const sorted = [...new Set(keys)].sort();
    const { rows } = await client.query<{ wkey: string; max_ts: string }>(
      `INSERT INTO ${this.s}.bar_clocks (wkey, max_ts)
       SELECT k, ${NO_CLOCK} FROM unnest($1::text[]) AS k ORDER BY k
       ON CONFLICT (wkey) DO UPDATE SET max_ts = bar_clocks.max_ts
       RETURNING wkey, max_ts::text`,
      [sorted],
    );
    return new Map(rows.map((r) => [r.wkey, BigInt(r.max_ts)]));
  }

  /**
   * Record trade identities in the ledger (consumers/bars/ledger.ts); returns the trades whose identity was
   * new, in their original order (of two equal identities in one call, the first). The caller holds the clock
   * locks of their symbols (lockClocks) or every clock (lockAll).
   */
  async insertLedger(client: PgClient, trades: readonly Trade[]): Promise<readonly Trade[]> {
    const fresh = await this.ledger.insert(client, trades);
    return fresh.length === trades.length ? trades : fresh.map((i) => trades[i]!);
  }

  /**
   * Mark the indicator rows of amended closed bars (late trades) as stale from the earliest such bar of each
   * (symbol, timeframe) on, in the same transaction as the amendment (infra/migrations/0005).
   */
  async markAmended(client: PgClient, events: readonly BarEvent[]): Promise<void> {
    const earliest = new Map<string, { symbol: string; tf: TimeframeName; start: bigint }>();
    for (const e of events) {
      if (e.kind !== 'amended') continue;
      const k = `${e.bar.symbol}\u0000${e.bar.tf.name}`;
      const cur = earliest.get(k);
      if (cur === undefined || e.bar.start < cur.start)
        earliest.set(k, { symbol: e.bar.symbol, tf: e.bar.tf.name, start: e.bar.start });
    }
    if (earliest.size === 0) return;
    const marks = [...earliest.values()].sort((a, b) =>
      a.symbol !== b.symbol ? (a.symbol < b.symbol ? -1 : 1) : a.tf < b.tf ? -1 : a.tf > b.tf ? 1 : 0,
    );
    await this.markDirty(
      client,
      marks.map((m) => m.symbol),
      marks.map((m) => m.tf),
      marks.map((m) => m.start),
    );
  }

  /** Indicator rows of these (symbol, tf) are stale from `from` on (keeps an earlier mark). */
  async markDirty(
    client: PgClient,
    symbols: readonly string[],
    tfs: readonly string[],
    from: readonly bigint[],
  ): Promise<void> {
    await markIndicatorsStale(client, this.s, symbols, tfs, from);
  }

  /** Every (symbol, tf) with bars starting in [from, to) is stale from `from` on (a rebuild). */
  async markRangeDirty(
    client: PgClient,
    range: { from: bigint; to: bigint; symbols?: readonly string[] | undefined },
  ): Promise<void> {
    await client.query(
      `INSERT INTO ${this.s}.indicator_dirty AS d (symbol, tf, from_ns, rev)
       SELECT symbol, tf, $1::int8, nextval('${this.s}.indicator_dirty_rev')
         FROM (SELECT DISTINCT symbol, tf FROM ${this.s}.bars
                WHERE start_ns >= $1::int8 AND start_ns < $2::int8
                  AND ($3::text[] IS NULL OR symbol = ANY($3::text[]))) AS k
       ON CONFLICT (symbol, tf) DO UPDATE SET from_ns = LEAST(d.from_ns, EXCLUDED.from_ns), rev = EXCLUDED.rev`,
      [range.from.toString(), range.to.toString(), range.symbols === undefined ? null : [...range.symbols]],
    );
  }

  /** Merge partial bars (at most one per key) into the stored bars; returns the merged rows. */
  async mergeBars(client: PgClient, bars: readonly Bar[]): Promise<BarRow[]> {
    if (bars.length === 0) return [];
    const sorted = [...bars].sort(byBarKey);
    const col = <T>(f: (b: Bar) => T): T[] => sorted.map(f);
    const { watermarkKey } = this.settings;
    const { rows } = await client.query<RawBarRow>(
      `INSERT INTO ${this.s}.bars AS b (symbol, tf, start_ns, tf_ns, open, high, low, close, open_ts, open_seq,
         open_source, close_ts, close_seq, close_source, volume, notional, trades, late, wkey, rev)
       SELECT u.*, nextval('${this.s}.bars_rev')
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::float8[], $6::float8[], $7::float8[],
                     $8::float8[], $9::int8[], $10::int8[], $11::text[], $12::int8[], $13::int8[], $14::text[],
                     $15::numeric[], $16::numeric[], $17::int8[], $18::int8[], $19::text[])
           AS u(symbol, tf, start_ns, tf_ns, open, high, low, close, open_ts, open_seq, open_source, close_ts,
                close_seq, close_source, volume, notional, trades, late, wkey)
       ON CONFLICT (symbol, tf, start_ns) DO UPDATE SET
         open = CASE WHEN (EXCLUDED.open_ts, EXCLUDED.open_seq, EXCLUDED.open_source)
                          < (b.open_ts, b.open_seq, b.open_source) THEN EXCLUDED.open ELSE b.open END,
         open_seq = CASE WHEN (EXCLUDED.open_ts, EXCLUDED.open_seq, EXCLUDED.open_source)
                          < (b.open_ts, b.open_seq, b.open_source) THEN EXCLUDED.open_seq ELSE b.open_seq END,
         open_source = CASE WHEN (EXCLUDED.open_ts, EXCLUDED.open_seq, EXCLUDED.open_source)
                          < (b.open_ts, b.open_seq, b.open_source) THEN EXCLUDED.open_source ELSE b.open_source END,
         open_ts = CASE WHEN (EXCLUDED.open_ts, EXCLUDED.open_seq, EXCLUDED.open_source)
                          < (b.open_ts, b.open_seq, b.open_source) THEN EXCLUDED.open_ts ELSE b.open_ts END,
         close = CASE WHEN (EXCLUDED.close_ts, EXCLUDED.close_seq, EXCLUDED.close_source)
                          > (b.close_ts, b.close_seq, b.close_source) THEN EXCLUDED.close ELSE b.close END,
         close_seq = CASE WHEN (EXCLUDED.close_ts, EXCLUDED.close_seq, EXCLUDED.close_source)
                          > (b.close_ts, b.close_seq, b.close_source) THEN EXCLUDED.close_seq ELSE b.close_seq END,
         close_source = CASE WHEN (EXCLUDED.close_ts, EXCLUDED.close_seq, EXCLUDED.close_source)
                          > (b.close_ts, b.close_seq, b.close_source) THEN EXCLUDED.close_source ELSE b.close_source END,
         close_ts = CASE WHEN (EXCLUDED.close_ts, EXCLUDED.close_seq, EXCLUDED.close_source)
                          > (b.close_ts, b.close_seq, b.close_source) THEN EXCLUDED.close_ts ELSE b.close_ts END,
         high = GREATEST(b.high, EXCLUDED.high),
         low = LEAST(b.low, EXCLUDED.low),
         volume = b.volume + EXCLUDED.volume,
         notional = b.notional + EXCLUDED.notional,
         trades = b.trades + EXCLUDED.trades,
         late = b.late + EXCLUDED.late,
         rev = EXCLUDED.rev,
         qdb_synced_rev = NULL,
         updated_at = now()
       RETURNING ${barColumns('b')}`,
      [
        col((b) => b.symbol),
        col((b) => b.tf.name),
        col((b) => b.start.toString()),
        col((b) => b.tf.ns.toString()),
        col((b) => b.open),
        col((b) => b.high),
        col((b) => b.low),
        col((b) => b.close),
        col((b) => b.openKey.ts.toString()),
        col((b) => String(b.openKey.seq)),
        col((b) => b.openKey.source),
        col((b) => b.closeKey.ts.toString()),
        col((b) => String(b.closeKey.seq)),
        col((b) => b.closeKey.source),
        col((b) => formatScaled(b.volume, SCALE_DIGITS)),
        col((b) => formatScaled(b.notional, 2 * SCALE_DIGITS)),
        col((b) => String(b.trades)),
        col((b) => String(b.late)),
        col((b) => watermarkKey(b.symbol)),
      ],
    );
    return rows.map(toBarRow);
  }

  /** Move clocks and symbols' newest trade time forward (never back). Callers hold the clocks' locks. */
  async advanceClocks(
    client: PgClient,
    clockMax: ReadonlyMap<string, bigint>,
    symbolMax: ReadonlyMap<string, bigint>,
  ): Promise<void> {
    if (clockMax.size > 0) {
      const keys = [...clockMax.keys()].sort();
      await client.query(
        `INSERT INTO ${this.s}.bar_clocks AS c (wkey, max_ts)
         SELECT * FROM unnest($1::text[], $2::int8[]) ORDER BY 1
         ON CONFLICT (wkey) DO UPDATE SET max_ts = GREATEST(c.max_ts, EXCLUDED.max_ts)`,
        [keys, keys.map((k) => clockMax.get(k)!.toString())],
      );
    }
    if (symbolMax.size > 0) {
      const symbols = [...symbolMax.keys()].sort();
      await client.query(
        `INSERT INTO ${this.s}.bar_symbols AS s (symbol, wkey, max_ts)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) ORDER BY 1
         ON CONFLICT (symbol) DO UPDATE SET max_ts = GREATEST(s.max_ts, EXCLUDED.max_ts), updated_at = now()`,
        [
          symbols,
          symbols.map((s) => this.settings.watermarkKey(s)),
          symbols.map((s) => symbolMax.get(s)!.toString()),
        ],
      );
    }
  }

  /** Close the open bars of these clocks whose end the watermark has reached; returns them. */
  async closeDue(client: PgClient, keys: readonly string[]): Promise<BarRow[]> {
    if (keys.length === 0) return [];
    const { rows } = await client.query<RawBarRow>(
      `UPDATE ${this.s}.bars b SET closed = true, rev = nextval('${this.s}.bars_rev'), qdb_synced_rev = NULL,
              updated_at = now()
         FROM ${this.s}.bar_clocks c
        WHERE c.wkey = ANY($1::text[]) AND b.wkey = c.wkey AND NOT b.closed
          AND b.start_ns + b.tf_ns <= c.max_ts - $2::int8
       RETURNING ${barColumns('b')}`,
      [[...keys], this.settings.allowedLatenessNs.toString()],
    );
    return rows.map(toBarRow);
  }

  /** The newest bar of each (symbol, timeframe), for re-projecting after a redelivery. */
  async currentBars(client: PgClient, symbols: readonly string[]): Promise<BarRow[]> {
    if (symbols.length === 0) return [];
    const { rows } = await client.query<RawBarRow>(
      `SELECT DISTINCT ON (symbol, tf) ${barColumns()} FROM ${this.s}.bars
        WHERE symbol = ANY($1::text[]) ORDER BY symbol, tf, start_ns DESC`,
      [[...symbols]],
    );
    return rows.map(toBarRow);
  }

  /** Bars of one symbol and timeframe, newest first. */
  async recentBars(client: PgClient, symbol: string, tf: TimeframeName, limit: number): Promise<BarRow[]> {
    const { rows } = await client.query<RawBarRow>(
      `SELECT ${barColumns()} FROM ${this.s}.bars WHERE symbol = $1 AND tf = $2
        ORDER BY start_ns DESC LIMIT $3`,
      [symbol, tf, limit],
    );
    return rows.map(toBarRow);
  }

  /** Every bar whose start lies in [from, to), optionally of some symbols, in key order (tests, tools). */
  async barsInRange(
    client: PgClient,
    range: { from: bigint; to: bigint; symbols?: readonly string[] | undefined },
  ): Promise<BarRow[]> {
    const { rows } = await client.query<RawBarRow>(
      `SELECT ${barColumns()} FROM ${this.s}.bars
        WHERE start_ns >= $1::int8 AND start_ns < $2::int8 AND ($3::text[] IS NULL OR symbol = ANY($3::text[]))
        ORDER BY symbol, tf_ns, start_ns`,
      [range.from.toString(), range.to.toString(), range.symbols === undefined ? null : [...range.symbols]],
    );
    return rows.map(toBarRow);
  }

  /**
   * The QuestDB outbox (infra/migrations/0006_bars_hot_updates.sql): closed bars whose current revision QuestDB
   * has not confirmed (every change sets qdb_synced_rev back to NULL), oldest bars first.
   */
  async unsyncedBars(client: PgClient, limit: number): Promise<BarRow[]> {
    const { rows } = await client.query<RawBarRow>(
      `SELECT ${barColumns()} FROM ${this.s}.bars
        WHERE closed AND qdb_synced_rev IS NULL ORDER BY start_ns LIMIT $1`,
      [limit],
    );
    return rows.map(toBarRow);
  }

  /**
   * Mark bars as in QuestDB at the revision that was sent, unless they changed meanwhile (then they stay in
   * the outbox with their new revision). Rows a bars writer holds locked are skipped rather than waited for:
   * waiting could deadlock with its transaction, and a skipped row is only sent once more.
   */
  async markSynced(client: PgClient, sent: readonly BarRow[]): Promise<number> {
    if (sent.length === 0) return 0;
    const r = await client.query(
      `UPDATE ${this.s}.bars b SET qdb_synced_rev = b.rev
        WHERE (b.symbol, b.tf, b.start_ns, b.rev) IN (
          SELECT l.symbol, l.tf, l.start_ns, l.rev FROM ${this.s}.bars l
            JOIN unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u(symbol, tf, start_ns, rev)
              ON l.symbol = u.symbol AND l.tf = u.tf AND l.start_ns = u.start_ns AND l.rev = u.rev
           FOR UPDATE OF l SKIP LOCKED)`,
      [
        sent.map((b) => b.symbol),
        sent.map((b) => b.tf),
        sent.map((b) => b.start.toString()),
        sent.map((b) => b.rev.toString()),
      ],
    );
    return r.rowCount ?? 0;
  }

  /** How many closed bars wait for QuestDB, and since when (the oldest waiting change). */
  async unsyncedBacklog(client: PgClient): Promise<{ rows: number; oldestChange: Date | null }> {
    // Both read the partial index, which holds just the backlog (none once QuestDB has caught up).
    const unsynced = `FROM ${this.s}.bars WHERE closed AND qdb_synced_rev IS NULL`;
    const { rows } = await client.query<{ n: string; oldest: Date | null }>(
      `SELECT (SELECT count(*) ${unsynced})::text AS n, (SELECT min(updated_at) ${unsynced}) AS oldest`,
    );
    return { rows: Number(rows[0]?.n ?? 0), oldestChange: rows[0]?.oldest ?? null };
  }

  /** Drop ledger runs behind the horizon of their symbol's clock: trades that old are refused anyway. */
  async pruneLedger(client: PgClient): Promise<number> {
    return this.ledger.prune(client, this.s, this.settings.ledgerHorizonNs);
  }

  /**
   * Remove the bars starting in [from, to) and the ledger rows of trades in that range, before a rebuild
   * merges them again. The caller holds `lockAll`.
   */
  async deleteRange(
    client: PgClient,
    range: { from: bigint; to: bigint; symbols?: readonly string[] | undefined },
  ): Promise<{ bars: number; ledger: number }> {
    const params = [
      range.from.toString(),
      range.to.toString(),
      range.symbols === undefined ? null : [...range.symbols],
    ];
    const bars = await client.query(
      `DELETE FROM ${this.s}.bars WHERE start_ns >= $1::int8 AND start_ns < $2::int8
          AND ($3::text[] IS NULL OR symbol = ANY($3::text[]))`,
      params,
    );
    const ledger = await this.ledger.forget(client, range);
    return { bars: bars.rowCount ?? 0, ledger };
  }

  /** Keep every live writer out until the transaction ends (they wait on the clock rows). */
  async lockAll(client: PgClient): Promise<void> {
    await client.query(`LOCK TABLE ${this.s}.bar_clocks IN EXCLUSIVE MODE`);
  }
}
