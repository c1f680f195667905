import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { loadConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import type { Tick } from '../shared/model.ts';
import { closePgPool, createPgPool, inTransaction, withClient, type PgPool } from '../shared/pg.ts';
import { SyntheticMarket, symbolNames } from '../producers/synthetic.ts';
import {
  ArchiveSink,
  copyChunks,
  QUOTE_COLUMNS,
  RowEncoder,
  TRADE_COLUMNS,
} from '../consumers/sinks/archive.ts';
import { migrate, migrateOptions } from '../shared/schema/migrate.ts';
import { measurement, type BenchReport } from './lib.ts';

/**
 * Archive writer throughput against two baselines, on the same rows, the same tables and the same batches:
 * - raw COPY: the same COPY text streamed straight into the partitioned tables, one transaction per batch,
 *   with no staging and no duplicate handling (the server's bulk-load limit; it would fail on a redelivery);
 * - naive: one autocommitted INSERT … ON CONFLICT DO NOTHING per tick, on a smaller sample, as ticks/s.
 * Tables are truncated before each run, so every run inserts into empty partitions with the same indexes.
 */
const TICKS = 200_000;
const BATCH = 16_384; // the worker's default read: 64 entries × 256-tick frames
const NAIVE_TICKS = 2_000;
const REPS = 3;

export default async function archiveBench(): Promise<BenchReport> {
  const schema = `bench_archive_${randomBytes(4).toString('hex')}`;
  const config = loadConfig({
    overrides: { postgres: { schema, partitionsAhead: 0 }, log: { level: 'silent' } },
  });
  const log = silentLogger();
  const pool = createPgPool(config.postgres, { log, max: 2, applicationName: 'tickstream:bench' });
  try {
    await migrate(pool, migrateOptions(config.postgres, log));
    const ticks = makeTicks(TICKS);
    const sink = new ArchiveSink({ settings: config.postgres, log, pool });
    await sink.start();
    const stagingOnly = new ArchiveSink({ settings: config.postgres, log, pool, directCopy: false });
    await stagingOnly.start();
    const unverified = new ArchiveSink({ settings: config.postgres, log, pool, verify: false });
    await unverified.start();

    const archive: number[] = [];
    const staging: number[] = [];
    const redeliveryUnverified: number[] = [];
    const raw: number[] = [];
    const naive: number[] = [];
    const redelivery: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      await truncate(pool, schema);
      archive.push(await rate(TICKS, () => archiveRun(sink, ticks)));
      // The fallback path with every tick a duplicate: the worst case for the pre-COMMIT verification.
      redelivery.push(await rate(TICKS, () => archiveRun(sink, ticks)));
      redeliveryUnverified.push(await rate(TICKS, () => archiveRun(unverified, ticks)));
      await truncate(pool, schema);
      staging.push(await rate(TICKS, () => archiveRun(stagingOnly, ticks)));
      await truncate(pool, schema);
      raw.push(await rate(TICKS, () => rawCopyRun(pool, schema, ticks)));
      await truncate(pool, schema);
      naive.push(await rate(NAIVE_TICKS, () => naiveRun(pool, schema, ticks.slice(0, NAIVE_TICKS))));
    }
    const a = measurement('archive writer (new ticks)', 'ticks/s', archive);
    const st = measurement('archive writer, staging path forced', 'ticks/s', staging);
    const du = measurement(
      'archive writer, redelivered batches, without the pre-COMMIT verification',
      'ticks/s',
      redeliveryUnverified,
    );
    const r = measurement('baseline: raw COPY into the same tables', 'ticks/s', raw);
    const n = measurement(`baseline: one INSERT per tick (${NAIVE_TICKS} ticks)`, 'ticks/s', naive);
    const d = measurement('archive writer, redelivered batches (all duplicates)', 'ticks/s', redelivery);
    const vsRaw = a.value / r.value;
    const vsNaive = a.value / n.value;
    const stagingVsRaw = st.value / r.value;
    return {
      name: 'archive',
      measurements: [a, st, d, du, r, n],
      summary: {
        'archive / raw COPY': `${(vsRaw * 100).toFixed(0)}% (target >= 60%) ${vsRaw >= 0.6 ? 'ok' : 'MISSED'}`,
        'staging path / raw COPY': `${(stagingVsRaw * 100).toFixed(0)}%`,
        'redelivery, cost of the verification': `${((1 - d.value / du.value) * 100).toFixed(0)}% of its throughput`,
        'archive / naive INSERT': `${vsNaive.toFixed(1)}x (target >= 30x) ${vsNaive >= 30 ? 'ok' : 'MISSED'}`,
      },
      notes: [
        `${TICKS} synthetic ticks (30% trades), ${BATCH}-tick batches, one transaction each; PostgreSQL ${await serverVersion(pool)}`,
        'naive rate is measured on a smaller sample and holds per tick (each INSERT is its own commit)',
      ],
    };
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
    await closePgPool(pool);
  }
}

function makeTicks(n: number): Tick[] {
  // ~18 µs apart from an hour ago, as live data would arrive: current times, so that on TimescaleDB no
  // compression or retention policy can act on the benchmark's chunks while it runs.
  let ts = BigInt(Date.now() - 3_600_000) * 1_000_000n;
  const market = new SyntheticMarket({
    symbols: symbolNames(200),
    seed: 7,
    source: 'bench',
    clock: () => (ts += 18_000n),
  });
  // The market reads its clock once per call: one tick per call spreads them like a live feed.
  return Array.from({ length: n }, () => market.next(1)[0]!);
}

async function rate(count: number, fn: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await fn();
  return count / ((performance.now() - started) / 1000);
}

async function archiveRun(sink: ArchiveSink, ticks: readonly Tick[]): Promise<void> {
  for (let i = 0; i < ticks.length; i += BATCH) {
    await sink.write(ticks.slice(i, i + BATCH));
    await sink.flush();
  }
}

async function rawCopyRun(pool: PgPool, schema: string, ticks: readonly Tick[]): Promise<void> {
  await withClient(pool, async (client) => {
    for (let i = 0; i < ticks.length; i += BATCH) {
      const batch = ticks.slice(i, i + BATCH);
      const encoder = new RowEncoder();
      await inTransaction(client, async () => {
        for (const [type, table, cols] of [
          ['trade', 'trades', TRADE_COLUMNS],
          ['quote', 'quotes', QUOTE_COLUMNS],
        ] as const) {
          await pipeline(
            Readable.from(copyChunks(batch, undefined, type, encoder)),
            client.query(copyFrom(`COPY "${schema}".${table} (${cols.join(', ')}) FROM STDIN`)),
          );
        }
      });
    }
  });
}

async function naiveRun(pool: PgPool, schema: string, ticks: readonly Tick[]): Promise<void> {
  await withClient(pool, async (client) => {
    const encoder = new RowEncoder();
    for (const t of ticks) {
      const ns = t.ts.toString();
      if (t.type === 'trade') {
        await client.query(
          `INSERT INTO "${schema}".trades (${TRADE_COLUMNS.join(', ')}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
          [encoder.timestamp(ns), ns, t.source, t.symbol, t.seq, t.venue, t.price, t.size, t.side],
        );
      } else {
        await client.query(
          `INSERT INTO "${schema}".quotes (${QUOTE_COLUMNS.join(', ')}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
          [
            encoder.timestamp(ns),
            ns,
            t.source,
            t.symbol,
            t.seq,
            t.venue,
            t.bidPrice,
            t.bidSize,
            t.askPrice,
            t.askSize,
          ],
        );
      }
    }
  });
}

async function truncate(pool: PgPool, schema: string): Promise<void> {
  await pool.query(`TRUNCATE "${schema}".trades, "${schema}".quotes`);
}

async function serverVersion(pool: PgPool): Promise<string> {
  const { rows } = await pool.query<{ v: string }>(`SELECT current_setting('server_version') AS v`);
  return rows[0]?.v ?? '?';
}
