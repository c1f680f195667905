import { afterEach, describe, expect, it } from 'vitest';
import { streamsStatus } from '../../consumers/status.ts';
import { silentLogger } from '../../shared/logger.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { uniqueName, waitUntil } from '../helpers/index.ts';
import { redisServerAvailable, startPrivateRedis, type PrivateRedis } from '../helpers/redis-server.ts';
import { RecordingSink } from '../helpers/sinks.ts';
import { pendingTotal, produceTicks } from '../helpers/streams.ts';
import { WorkerHarness } from '../helpers/workers.ts';

const h = new WorkerHarness();
let server: PrivateRedis | undefined;
const stopping = new Set<AbortController>();

afterEach(async () => {
  for (const c of stopping) c.abort();
  stopping.clear();
  await h.cleanup();
  await server?.stop();
  server = undefined;
});

describe.skipIf(!redisServerAvailable())(
  'backlog from what is certain (private redis-server with AOF)',
  () => {
    it('after a restart and stale lag counters, status shows 0 when caught up and the producer is not held', async () => {
      server = await startPrivateRedis({ appendonly: true });
      const { config, redis, group } = h.setup({
        redis: { url: server.url },
        producer: { highWater: 20, lowWater: 5, backpressureIntervalMs: 20 },
      });
      const sink = new RecordingSink();
      const { worker } = h.startWorker(config, group, sink);
      await worker.start();
      const first = await produceTicks(config, redis, 500, { frameSize: 10 });
      await waitUntil(() => sink.stored.size === first.length, 'first ticks stored');

      // A plain restart: the AOF is reloaded; the worker reconnects and goes on.
      await server.restart();
      const second = await produceTicks(config, redis, 200, { frameSize: 10, seed: 2 });
      await waitUntil(() => sink.stored.size === first.length + second.length, 'ticks after the restart');
      await waitUntil(async () => (await pendingTotal(redis, config, group)) === 0, 'nothing pending');
      let status = await streamsStatus(redis, config.streams);
      for (const s of status.shards)
        for (const g of s.groups) expect(g.lag, `${s.stream} ${g.group}`).toBe(0);

      // What a cut AOF leaves: the group's entries-read counter behind its last-delivered id (Redis replays
      // XGROUP SETID … ENTRIESREAD from the file). Redis's lag then stays high although all was delivered.
      for (const stream of allStreamKeys(config.streams)) {
        await redis.call('XGROUP', 'SETID', stream, group, '$', 'ENTRIESREAD', '1');
      }
      status = await streamsStatus(redis, config.streams);
      const groups = status.shards.flatMap((s) => s.groups);
      expect(
        groups.some((g) => (g.redisLag ?? 0) > config.producer.highWater),
        JSON.stringify(groups),
      ).toBe(true);
      for (const g of groups) {
        expect(g.lag).toBe(0);
        expect(g.pending).toBe(0);
      }

      // A producer with the high-water mark below that stale lag must not pause for good.
      const abort = new AbortController();
      stopping.add(abort);
      const publisher = new Publisher({
        redis,
        layout: config.streams,
        settings: { ...config.producer, frameSize: 10 },
        log: silentLogger(),
        signal: abort.signal,
      });
      const third = new SyntheticMarket({ symbols: ['AAA', 'BBB'], seed: 3, source: uniqueName('src') }).next(
        300,
      );
      const published = (async () => {
        for (let i = 0; i < third.length; i += 10) await publisher.publish(third.slice(i, i + 10));
        await publisher.flush();
        return true;
      })();
      await waitUntil(() => Promise.race([published, Promise.resolve(false)]), 'the producer to finish', {
        timeoutMs: 15_000,
      });
      await waitUntil(
        () => sink.stored.size === first.length + second.length + third.length,
        'the new ticks stored',
      );
      await waitUntil(async () => {
        const now = await streamsStatus(redis, config.streams);
        return now.shards.every((s) => s.groups.every((g) => g.lag === 0 && g.pending === 0));
      }, 'status back to 0 once caught up');
    });
  },
);
