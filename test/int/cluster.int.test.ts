import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GroupWorker } from '../../consumers/worker.ts';
import { QuotesSink, readQuotes } from '../../consumers/sinks/quotes.ts';
import { listDeadLetters } from '../../consumers/deadletters.ts';
import { loadConfig, type Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { tickKey } from '../../shared/model.ts';
import { closeRedis, createRedis, type RedisClient } from '../../shared/redis.ts';
import { allStreamKeys, streamKey } from '../../shared/streams.ts';
import { trimStreams } from '../../shared/retention.ts';
import { groupBacklogs } from '../../shared/backlog.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { clusterBinariesAvailable, startLocalCluster, type LocalCluster } from '../helpers/cluster.ts';
import { uniqueName, waitUntil } from '../helpers/index.ts';
import { RecordingSink } from '../helpers/sinks.ts';

const canRun = clusterBinariesAvailable();

describe.runIf(canRun)(
  'Redis Cluster (a local 3-master cluster started by the test; skipped when redis-server is not installed)',
  () => {
    let cluster: LocalCluster;
    let config: Config;
    const clients: RedisClient[] = [];
    const client = (blocking = false) => {
      const c = createRedis(config, { blocking, log: silentLogger() });
      clients.push(c);
      return c;
    };

    beforeAll(async () => {
      cluster = await startLocalCluster();
      config = loadConfig({
        env: { REDIS_CLUSTER_NODES: cluster.nodes.join(',') },
        overrides: {
          streams: { prefix: uniqueName('ts'), shards: 6 },
          consumer: {
            blockMs: 50,
            claimIntervalMs: 100,
            claimMinIdleMs: 300,
            retryBaseMs: 10,
            retryMaxMs: 50,
          },
          log: { level: 'silent' },
        },
      });
    }, 60_000);

    afterAll(async () => {
      for (const c of clients) await closeRedis(c);
      await cluster?.stop();
    });

    it('spreads shards over the nodes, and produce → group worker → quotes works across slots', async () => {
      const redis = client();
      // Each shard has its own hash tag, so the six shards get six slots, held by more than one master.
      const slots = new Set<number>();
      const owners = new Set<string>();
      for (const key of allStreamKeys(config.streams)) {
        const slot = Number(await redis.call('CLUSTER', 'KEYSLOT', key));
        slots.add(slot);
        owners.add(String((redis as Cluster).slots[slot]?.[0]));
      }
      expect(slots.size).toBe(6);
      expect(owners.size).toBeGreaterThan(1);
      const sink = new QuotesSink({ redis, settings: config.quotes, log: silentLogger() });
      const worker = new GroupWorker({
        redis,
        blocking: client(true),
        layout: config.streams,
        group: 'quotes',
        consumer: 'c1',
        sink,
        settings: config.consumer,
        log: silentLogger(),
      });
      await worker.start();
      const symbols = Array.from({ length: 30 }, (_, i) => `CL${i}`);
      const ticks = new SyntheticMarket({ symbols, seed: 4, source: 'cluster' }).next(3000);
      const publisher = new Publisher({
        redis,
        layout: config.streams,
        settings: config.producer,
        log: silentLogger(),
      });
      await publisher.publish(ticks);
      await publisher.flush();
      await waitUntil(() => worker.stats.ticks === ticks.length, 'all ticks projected');
      const quotes = await readQuotes(redis, config.quotes, symbols);
      expect(quotes.size).toBe(30);
      const last = ticks.filter((t) => t.symbol === 'CL7' && t.type === 'quote').at(-1)!;
      expect(quotes.get('CL7')!.quote_ts).toBe(last.ts.toString());
      await worker.close();
    });

    it('claims a dead consumer’s entries and dead-letters poison across nodes', async () => {
      const redis = client();
      const group = uniqueName('g');
      const dying = new RecordingSink();
      dying.hang = true;
      const deadBlocking = client(true);
      const deadCommands = client();
      const a = new GroupWorker({
        redis: deadCommands,
        blocking: deadBlocking,
        layout: config.streams,
        group,
        consumer: 'dead',
        sink: dying,
        settings: config.consumer,
        log: silentLogger(),
      });
      await a.start();
      const ticks = new SyntheticMarket({
        symbols: ['X1', 'X2', 'X3', 'X4', 'X5', 'X6'],
        seed: 5,
        source: 'cl2',
      }).next(600);
      const publisher = new Publisher({
        redis,
        layout: config.streams,
        settings: { ...config.producer, frameSize: 20 },
        log: silentLogger(),
      });
      await publisher.publish(ticks);
      await publisher.flush();
      await redis.xadd(streamKey(config.streams, 3), '*', 'not', 'a frame');
      await waitUntil(() => a.stats.batches > 0, 'dying consumer took a batch');
      // A crash: both of its connections vanish.
      deadBlocking.disconnect();
      deadCommands.disconnect();

      const live = new RecordingSink();
      const b = new GroupWorker({
        redis: client(),
        blocking: client(true),
        layout: config.streams,
        group,
        consumer: 'live',
        sink: live,
        settings: config.consumer,
        log: silentLogger(),
      });
      await b.start();
      // The group starts at 0, so it also sees the previous test's ticks: check that ours are all there.
      await waitUntil(
        () => ticks.every((t) => live.stored.has(tickKey(t))),
        'every tick stored by the live consumer',
      );
      expect(b.stats.claimed).toBeGreaterThan(0);
      const letters = await waitUntil(async () => {
        const l = (await listDeadLetters(redis, config.streams)).filter((x) => x.group === group);
        return l.length > 0 ? l : undefined;
      }, 'dead letter');
      expect(letters[0]!.reason).toMatch(/not a tick frame/);
      await b.close();

      // Retention on a Cluster respects the unacknowledged entries of the dead consumer's group too.
      const results = await trimStreams(
        redis,
        config.streams,
        { maxAgeMs: 1, maxLen: 0, intervalMs: 1000 },
        Date.now() + 60_000,
      );
      expect(results).toHaveLength(6);
    });

    it('retention trims around entries still pending on every node, and the backlog sums over the shards', async () => {
      const redis = client();
      const group = uniqueName('pend');
      // Streams of its own: the other tests' groups must not be the ones holding the trim back.
      const layout = { prefix: uniqueName('ret'), shards: config.streams.shards };
      const keys = allStreamKeys(layout);
      for (const key of keys) await redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM');
      const publisher = new Publisher({
        redis,
        layout,
        settings: { ...config.producer, frameSize: 5 },
        log: silentLogger(),
      });
      await publisher.publish(
        new SyntheticMarket({
          symbols: ['P1', 'P2', 'P3', 'P4', 'P5', 'P6', 'P7', 'P8'],
          seed: 8,
          source: 'cl3',
        }).next(480),
      );
      await publisher.flush();
      // Per shard: read three entries, acknowledge the first; the other two stay pending.
      const pending: [string, string][] = [];
      let read = 0;
      for (const key of keys) {
        const reply = (await redis.call(
          'XREADGROUP',
          'GROUP',
          group,
          'c',
          'COUNT',
          '3',
          'STREAMS',
          key,
          '>',
        )) as [string, [string, unknown][]][] | null;
        const ids = reply?.[0]?.[1].map(([id]) => id) ?? [];
        read += ids.length;
        if (ids[0] !== undefined) await redis.xack(key, group, ids[0]);
        for (const id of ids.slice(1)) pending.push([key, id]);
      }
      expect(pending.length).toBeGreaterThan(4);
      const before = await groupBacklogs(redis, keys);
      const mine = before.find((g) => g.group === group)!;
      expect(mine.pending).toBe(pending.length);
      expect(mine.entries).toBe(publisher.stats.frames - (read - pending.length));

      // Everything is older than the age bound: only what the group no longer needs may go.
      const results = await trimStreams(
        redis,
        layout,
        { maxAgeMs: 1, maxLen: 0, intervalMs: 1000 },
        Date.now() + 60_000,
      );
      for (const [key, id] of pending) expect(await redis.xrange(key, id, id)).toHaveLength(1);
      for (const r of results) {
        if (pending.some(([k]) => k === r.stream)) {
          expect(r.heldBackBy).toBe(group);
          expect(r.minId).toBe(pending.find(([k]) => k === r.stream)![1]);
        }
      }
      expect(results.reduce((n, r) => n + r.trimmed, 0)).toBeGreaterThan(0);
    });
  },
);
