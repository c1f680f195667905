import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { hotTables } from '../../shared/questdb.ts';
import { tickKey, type Tick } from '../../shared/model.ts';
import { closeRedis } from '../../shared/redis.ts';
import { finished, startCli, stopChildren } from '../helpers/cli.ts';
import { cleanupPrefix, REDIS_URL, testConfig, testRedis, uniqueName, waitUntil } from '../helpers/index.ts';
import { QuestDbStandin, type IlpRow } from '../helpers/questdb-standin.ts';
import { pendingTotal, produceTicks } from '../helpers/streams.ts';

/**
 * `tickstream consume questdb` as a process, against the QuestDB stand-in (test/helpers/questdb-standin.ts,
 * recording every row it is sent) and real Redis. The sink itself is tested in questdb.int.test.ts.
 */

const config = testConfig();
const redis = testRedis(config);
const prefix = config.streams.prefix;
const GROUP = 'hot';
const standins: QuestDbStandin[] = [];

afterEach(async () => {
  await stopChildren();
  for (const s of standins.splice(0)) await s.stop();
});

afterAll(async () => {
  await cleanupPrefix(redis, prefix);
  await closeRedis(redis);
});

function rowKey(r: IlpRow): string {
  return `${r.symbols.source}|${r.symbols.symbol}|${r.ts}|${r.fields.seq?.text.replace(/i$/, '')}`;
}

describe('tickstream consume questdb (a process, against the QuestDB stand-in)', () => {
  it('stores every tick once, and on SIGTERM during a held flush finishes it, acknowledges it and exits 0', async () => {
    const s = await QuestDbStandin.start();
    standins.push(s);
    const tablePrefix = `${uniqueName('qcli')}_`;
    const tables = hotTables(tablePrefix);
    const env = {
      REDIS_URL,
      TICKSTREAM_STREAM_PREFIX: prefix,
      TICKSTREAM_SHARDS: '2',
      TICKSTREAM_BLOCK_MS: '100',
      QDB_CLIENT_CONF: s.clientConf(),
      TICKSTREAM_QDB_TABLE_PREFIX: tablePrefix,
    };
    /** Every row the stand-in was sent for our tables (resends included), by tick identity. */
    const sent = () =>
      s.rows.filter((r) => r.table === tables.trades || r.table === tables.quotes).map(rowKey);
    const stored = () => [...s.storedRows(tables.trades), ...s.storedRows(tables.quotes)].map(rowKey).sort();
    const keys = (ticks: readonly Tick[]) => ticks.map(tickKey).sort();

    const first = await produceTicks(config, redis, 500, { symbols: ['QA', 'QB', 'QC'], seed: 11 });
    const consumer = startCli(['consume', 'questdb'], env);
    await waitUntil(
      async () => stored().length === first.length && (await pendingTotal(redis, config, GROUP)) === 0,
      'the stand-in to hold every tick, all acknowledged',
      { timeoutMs: 60_000, intervalMs: 100 },
    );
    expect(stored()).toEqual(keys(first));
    // Sent once each: not merely kept once by the stand-in's DEDUP.
    expect(sent().sort()).toEqual(keys(first));

    // Hold the next request in the stand-in, and signal while the sink waits for its answer. 1.5 s: longer
    // than the 1 s retry window the writer once gave the client, whose transport then aborted every request
    // slower than that (the batch was resent for ever); within TICKSTREAM_QDB_FLUSH_TIMEOUT_MS (5 s) it is taken.
    s.writeDelayMs = 1500;
    const writesBefore = s.writes.length;
    const second = await produceTicks(config, redis, 300, { symbols: ['QA', 'QB', 'QC'], seed: 12 });
    await waitUntil(() => s.inFlightWrites > 0, 'a flush held in the stand-in', { timeoutMs: 30_000 });
    expect(await pendingTotal(redis, config, GROUP)).toBeGreaterThan(0);
    consumer.kill('SIGTERM');
    const r = await finished(consumer);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/stopping gracefully/);

    // The held request was answered and its entries acknowledged: nothing left pending.
    expect(s.writes.length).toBeGreaterThan(writesBefore);
    expect(s.writes.slice(writesBefore).every((w) => w.status === 204)).toBe(true);
    expect(await pendingTotal(redis, config, GROUP)).toBe(0);
    const heldRows = sent().length - first.length;
    expect(heldRows).toBeGreaterThan(0);

    // A new process takes the rest: were the held batch left pending or unacknowledged, it would be sent again.
    s.writeDelayMs = 0;
    const next = startCli(['consume', 'questdb'], env);
    // Running before it is signalled: with the read linger the first process may have taken the whole second
    // lot in its held flush, and a process signalled while it starts has no handler yet.
    await waitUntil(() => /"msg":"consuming"/.test(next.out.stderr), 'the second process consuming', {
      timeoutMs: 30_000,
    });
    await waitUntil(
      async () =>
        stored().length === first.length + second.length && (await pendingTotal(redis, config, GROUP)) === 0,
      'the stand-in to hold both lots, all acknowledged',
      { timeoutMs: 60_000, intervalMs: 100 },
    );
    expect(stored()).toEqual(keys([...first, ...second]));
    expect(sent().sort()).toEqual(keys([...first, ...second]));
    next.kill('SIGTERM');
    const r2 = await finished(next);
    expect(r2.code, r2.stderr).toBe(0);
    expect(await pendingTotal(redis, config, GROUP)).toBe(0);
  }, 120_000);
});
