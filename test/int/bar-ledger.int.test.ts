import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BarLedger, overlappingRunsSql, RUN_MAX_TRADES, RUN_SPAN_NS } from '../../consumers/bars/ledger.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Trade } from '../../shared/model.ts';
import { closePgPool, createPgPool, inTransaction, withClient, type PgClient } from '../../shared/pg.ts';
import { migrate, MIGRATIONS_DIR } from '../../shared/schema/migrate.ts';
import { testConfig, uniqueName } from '../helpers/index.ts';

/**
 * The bars ledger as runs (consumers/bars/ledger.ts, docs/adr/0015) against the real PostgreSQL: which trades
 * it calls new, in every way a trade can come again (redelivery, replay, repeat within a call, out of order, a
 * late trade into an old minute), how runs are cut, forgetting a range for a rebuild, pruning, and the
 * migration that moves the per-trade ledger into runs.
 */
const log = silentLogger();
const T0 = 1_699_999_980_000_000_000n; // a whole minute
const MS = 1_000_000n;
const schema = uniqueName('ledger');
const config = testConfig({ postgres: { schema, timescale: 'off', partitionsAhead: 0 } });
const pool = createPgPool(config.postgres, { log, max: 2 });
const table = `"${schema}".bar_ledger_runs`;
const ledger = new BarLedger(table);

beforeAll(async () => {
  await migrate(pool, { schema, timescale: 'off', compressAfter: 'off', retention: 'off', log });
});

afterAll(async () => {
  await withClient(pool, (c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
  await closePgPool(pool);
});

let symbolCounter = 0;
/** A symbol no other test uses, so each test starts from an empty ledger for it. */
const freshSymbol = () => `L${++symbolCounter}`;

function trade(symbol: string, ts: bigint, seq: number, source = 'S'): Trade {
  return { type: 'trade', source, symbol, ts, seq, venue: '', price: 1, size: 1, side: '' };
}

/** Insert in one transaction; the indexes of the trades called new. */
function insert(trades: readonly Trade[]): Promise<number[]> {
  return withClient(pool, (c) => inTransaction(c, () => ledger.insert(c, trades)));
}

async function runs(symbol: string): Promise<{ first: string; last: string; n: number }[]> {
  const { rows } = await pool.query<{ first: string; last: string; n: number }>(
    `SELECT first_ts::text || ':' || first_seq AS first, last_ts::text || ':' || last_seq AS last,
            cardinality(ts) AS n
       FROM ${table} WHERE symbol = $1 ORDER BY first_ts, first_seq`,
    [symbol],
  );
  return rows;
}

const all = (n: number) => Array.from({ length: n }, (_, i) => i);

describe('bar ledger runs (real PostgreSQL)', () => {
  it('calls in-order trades new once: the same call again, and any part of it, are all duplicates', async () => {
    const sym = freshSymbol();
    const batch = Array.from({ length: 50 }, (_, i) => trade(sym, T0 + BigInt(i) * MS, i));
    expect(await insert(batch)).toEqual(all(50));
    expect(await runs(sym)).toEqual([{ first: `${T0}:0`, last: `${T0 + 49n * MS}:49`, n: 50 }]);
    expect(await insert(batch)).toEqual([]); // redelivery
    expect(await insert(batch.slice(10, 20).reverse())).toEqual([]); // a replay of a part, any order
    // The next trades, with a replayed one in front: only the replayed one is known.
    const next = [batch[49]!, trade(sym, T0 + 50n * MS, 50), trade(sym, T0 + 51n * MS, 51)];
    expect(await insert(next)).toEqual([1, 2]);
    expect((await runs(sym)).map((r) => r.n)).toEqual([50, 2]);
  });

  it('keeps the first of two equal identities within a call, in call order, whatever the order', async () => {
    const sym = freshSymbol();
    const a = trade(sym, T0 + 5n * MS, 1);
    const b = trade(sym, T0 + 2n * MS, 7);
    const c = trade(sym, T0 + 9n * MS, 0);
    expect(await insert([a, b, { ...a }, c, { ...b }])).toEqual([0, 1, 3]);
    // Stored sorted by (ts, seq), as one run.
    expect(await runs(sym)).toEqual([{ first: `${T0 + 2n * MS}:7`, last: `${T0 + 9n * MS}:0`, n: 3 }]);
    expect(await insert([c, b, a])).toEqual([]);
  });

  it('tells identities apart by seq at one ts, and by source', async () => {
    const sym = freshSymbol();
    const ts = T0 + 3n * MS;
    expect(await insert([trade(sym, ts, 1), trade(sym, ts, 2)])).toEqual([0, 1]);
    expect(await insert([trade(sym, ts, 2), trade(sym, ts, 3), trade(sym, ts, 1, 'OTHER')])).toEqual([1, 2]);
    expect(await insert([trade(sym, ts, 0)])).toEqual([0]); // below the run's first: new
  });

  it('takes a late trade into an old minute as new once, and finds it among overlapping runs', async () => {
    const sym = freshSymbol();
    const minute = Array.from({ length: 60 }, (_, i) => trade(sym, T0 + BigInt(i) * 1000n * MS, 2 * i));
    expect(await insert(minute)).toEqual(all(60));
    const later = Array.from({ length: 10 }, (_, i) => trade(sym, T0 + RUN_SPAN_NS * 3n + BigInt(i) * MS, i));
    expect(await insert(later)).toEqual(all(10));
    // Odd seqs fall between the stored identities of the first minute: late and new; an even one is known.
    const late = [trade(sym, T0 + 7000n * MS, 15), trade(sym, T0 + 30_000n * MS, 60), trade(sym, T0, 1)];
    expect(await insert(late)).toEqual([0, 2]);
    expect(await insert(late)).toEqual([]);
    // A call mixing a new trade, a late known one and a late new one.
    const mixed = [trade(sym, T0 + RUN_SPAN_NS * 4n, 0), late[0]!, trade(sym, T0 + 59_000n * MS, 119)];
    expect(await insert(mixed)).toEqual([0, 2]);
  });

  it('cuts runs at minute boundaries and at RUN_MAX_TRADES; every identity stays known', async () => {
    const sym = freshSymbol();
    // 30 s before a minute boundary to 30 s after it, RUN_MAX_TRADES + 100 trades in the first half.
    const start = T0 + RUN_SPAN_NS - 30_000n * MS;
    const n = RUN_MAX_TRADES + 100;
    const firstHalf = Array.from({ length: n }, (_, i) => trade(sym, start + BigInt(i) * 1000n, i));
    const secondHalf = Array.from({ length: 5 }, (_, i) => trade(sym, T0 + RUN_SPAN_NS + BigInt(i) * MS, i));
    expect((await insert([...firstHalf, ...secondHalf])).length).toBe(n + 5);
    expect((await runs(sym)).map((r) => r.n)).toEqual([RUN_MAX_TRADES, 100, 5]);
    const { rows } = await pool.query<{ minutes: number }>(
      `SELECT count(*)::int AS minutes FROM ${table}
        WHERE symbol = $1 AND first_ts / ${RUN_SPAN_NS} <> last_ts / ${RUN_SPAN_NS}`,
      [sym],
    );
    expect(rows[0]!.minutes).toBe(0);
    expect(await insert([firstHalf[0]!, firstHalf[RUN_MAX_TRADES]!, secondHalf[4]!])).toEqual([]);
  });

  it('forgets a range (a rebuild): those identities are new again, the rest stay known', async () => {
    const sym = freshSymbol();
    const other = freshSymbol();
    const trades = Array.from({ length: 30 }, (_, i) => trade(sym, T0 + BigInt(i) * 1000n * MS, i));
    const others = Array.from({ length: 30 }, (_, i) => trade(other, T0 + BigInt(i) * 1000n * MS, i));
    await insert([...trades, ...others]);
    const forgotten = await withClient(pool, (c) =>
      inTransaction(c, () =>
        ledger.forget(c, { from: T0 + 10_000n * MS, to: T0 + 20_000n * MS, symbols: [sym] }),
      ),
    );
    expect(forgotten).toBe(10);
    // The run is written again without the hole: one minute, under RUN_MAX_TRADES, so one run.
    expect((await runs(sym)).map((r) => r.n)).toEqual([20]);
    expect(await insert(trades)).toEqual(all(10).map((i) => i + 10));
    expect(await insert(others)).toEqual([]); // another symbol: untouched
    const everything = await withClient(pool, (c) =>
      inTransaction(c, () => ledger.forget(c, { from: 0n, to: T0 * 2n })),
    );
    expect(everything).toBeGreaterThanOrEqual(60);
    expect(await insert(trades)).toEqual(all(30));
  });

  it('prunes runs behind the horizon of their symbol clock, and only those', async () => {
    const sym = freshSymbol();
    const old = trade(sym, T0, 1);
    const recent = trade(sym, T0 + 10n * RUN_SPAN_NS, 2);
    await insert([old, recent]);
    await pool.query(`INSERT INTO "${schema}".bar_clocks (wkey, max_ts) VALUES ($1, $2)`, [
      sym,
      (T0 + 10n * RUN_SPAN_NS).toString(),
    ]);
    await pool.query(`INSERT INTO "${schema}".bar_symbols (symbol, wkey, max_ts) VALUES ($1, $1, $2)`, [
      sym,
      (T0 + 10n * RUN_SPAN_NS).toString(),
    ]);
    const pruned = await withClient(pool, (c: PgClient) => ledger.prune(c, `"${schema}"`, 5n * RUN_SPAN_NS));
    expect(pruned).toBeGreaterThanOrEqual(1);
    expect((await runs(sym)).map((r) => r.first)).toEqual([`${recent.ts}:2`]);
  });

  it('finds overlapping runs by an index scan per pair, not a scan of the table (200k runs)', async () => {
    const probe = `"${schema}".plan_probe`;
    await pool.query(`CREATE TABLE ${probe} (LIKE ${table} INCLUDING ALL)`);
    try {
      await pool.query(
        `INSERT INTO ${probe} (symbol, source, first_ts, first_seq, last_ts, last_seq, ts, seq)
         SELECT 'P' || (g % 1000), 'S', g * 1000, 0, g * 1000 + 1, 0, ARRAY[g * 1000, g * 1000 + 1], '{0,0}'
           FROM generate_series(1, 200000) AS g`,
      );
      await pool.query(`ANALYZE ${probe}`);
      const pairs = Array.from({ length: 1000 }, (_, i) => `P${i}`);
      const at = (v: number) => pairs.map(() => String(v));
      const { rows } = await pool.query<{ 'QUERY PLAN': string }>(
        `EXPLAIN (COSTS OFF) ${overlappingRunsSql(probe)}`,
        [pairs, pairs.map(() => 'S'), at(150_000_000), at(0), at(150_000_500), at(0), at(150_060_000)],
      );
      const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
      expect(plan).toMatch(/Nested Loop/);
      expect(plan).toMatch(/Index (Only )?Scan|Bitmap Index Scan/);
      expect(plan).not.toMatch(/Seq Scan on plan_probe/);
    } finally {
      await pool.query(`DROP TABLE ${probe}`);
    }
  });

  it('refuses a run that spans two minutes or whose arrays disagree with its bounds (table constraints)', async () => {
    const bad = [
      [T0, 0, T0 + RUN_SPAN_NS, 0, `{${T0},${T0 + RUN_SPAN_NS}}`, '{0,0}'],
      [T0, 0, T0 + 1n, 0, `{${T0},${T0 + 2n}}`, '{0,0}'],
      [T0, 0, T0, 0, `{${T0}}`, '{0,1}'],
    ];
    for (const [ft, fs, lt, ls, ts, seq] of bad) {
      await expect(
        pool.query(
          `INSERT INTO ${table} (symbol, source, first_ts, first_seq, last_ts, last_seq, ts, seq)
           VALUES ('X', 'S', $1, $2, $3, $4, $5, $6)`,
          [String(ft), fs, String(lt), ls, ts, seq],
        ),
      ).rejects.toThrow(/check constraint/);
    }
  });
});

describe('migration 0007 (real PostgreSQL)', () => {
  it('moves the per-trade ledger into runs: trades merged before it are still known after it', async () => {
    const old = uniqueName('ledgermig');
    const dir = mkdtempSync(join(tmpdir(), 'migrations-'));
    try {
      for (const f of readdirSync(MIGRATIONS_DIR).filter((f) => Number(f.slice(0, 4)) <= 6))
        cpSync(join(MIGRATIONS_DIR, f), join(dir, f));
      const options = { schema: old, timescale: 'off' as const, compressAfter: 'off', retention: 'off', log };
      await migrate(pool, { ...options, migrationsDir: dir });
      // Two symbols, 5,000 trades over three minutes each, and two sources at one identity.
      const rows: string[] = [];
      for (const sym of ['A', 'B'])
        for (let i = 0; i < 5000; i++) rows.push(`('${sym}', ${T0 + BigInt(i) * 36n * MS}, ${i}, 'S')`);
      rows.push(`('A', ${T0}, 0, 'T')`);
      await pool.query(`INSERT INTO "${old}".bar_ledger (symbol, ts, seq, source) VALUES ${rows.join(',')}`);
      const result = await migrate(pool, options);
      expect(result.applied.map((a) => a.version)).toEqual([7]);
      const moved = new BarLedger(`"${old}".bar_ledger_runs`);
      const known = [
        ...Array.from({ length: 5000 }, (_, i) => trade('A', T0 + BigInt(i) * 36n * MS, i)),
        trade('B', T0 + 4999n * 36n * MS, 4999),
        trade('A', T0, 0, 'T'),
      ];
      const fresh = await withClient(pool, (c) => inTransaction(c, () => moved.insert(c, known)));
      expect(fresh).toEqual([]);
      const { rows: shape } = await pool.query<{ runs: number; ids: number; table: string | null }>(
        `SELECT count(*)::int AS runs, sum(cardinality(ts))::int AS ids,
                to_regclass('"${old}".bar_ledger')::text AS table
           FROM "${old}".bar_ledger_runs`,
      );
      // Per (symbol, source): 5,000 trades 36 ms apart span minutes 0..2, cut at 4,096 within none of them.
      expect(shape[0]).toEqual({ runs: 3 + 3 + 1, ids: 10_001, table: null });
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await pool.query(`DROP SCHEMA IF EXISTS "${old}" CASCADE`);
    }
  });
});
