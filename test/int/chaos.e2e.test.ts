import { describe, expect, it } from 'vitest';
import { formatRows, runChaos } from '../../chaos/suite.ts';
import { postgresAvailable, redisServerVersion } from '../../chaos/servers.ts';

/**
 * The short fault suite (the full one is `npm run chaos`, docs/chaos.md): its own redis-server and PostgreSQL
 * cluster, real consumer and producer processes (the checked-out CLI, bundled once per run), a few faults, and
 * every store compared with the ground truth of the data set after each.
 */
const missing = [
  redisServerVersion() === undefined ? 'redis-server' : undefined,
  postgresAvailable() ? undefined : 'PostgreSQL binaries (initdb, pg_ctl under PG_BIN)',
].filter((m) => m !== undefined);

describe.skipIf(missing.length > 0)(
  `chaos, short version${missing.length > 0 ? ` (skipped: no ${missing.join(', ')})` : ''}`,
  () => {
    it('consumer kills mid-batch, a redis-server kill/restart and poison entries: every store exact, no duplicates', async () => {
      const lines: string[] = [];
      const rows = await runChaos({
        ticks: 24_000,
        symbols: 20,
        seed: 11,
        faults: ['consumer-kills', 'redis-restart', 'poison'],
        consumerKills: 4,
        postgresDownMs: 3000,
        perSink: 1,
        drainTimeoutMs: 120_000,
        say: (line) => lines.push(line),
      });
      const report = `${formatRows(rows)}\n${rows.flatMap((r) => r.problems).join('\n')}\n${lines.join('\n')}`;
      expect(
        rows.map((r) => r.problems),
        report,
      ).toEqual([[], [], []]);
      // Every kill landed mid-batch: the consumer died with entries delivered to it and not acknowledged.
      expect(rows[0]!.heldAtKill, report).toHaveLength(4);
      for (const held of rows[0]!.heldAtKill) expect(held, report).toBeGreaterThan(0);
      expect(rows.map((r) => [r.expected, r.stored, r.duplicates])).toEqual([
        [8000, 8000, 0],
        [16_000, 16_000, 0],
        [24_000, 24_000, 0],
      ]);
      // Two poison entries per shard (4 shards), dead-lettered once by each of the three groups.
      expect(rows[2]!.expectedDeadLetters).toBe(24);
    }, 400_000);
  },
);
