import { GroupWorker } from '../../consumers/worker.ts';
import type { Sink } from '../../consumers/sink.ts';
import type { Config } from '../../shared/config.ts';
import { silentLogger, type Logger } from '../../shared/logger.ts';
import { closeRedis, type RedisClient } from '../../shared/redis.ts';
import { cleanupPrefix, testConfig, testRedis, uniqueName } from './index.ts';

/**
 * Group workers for integration tests, with everything they open tracked so that `cleanup()` (in afterEach)
 * closes workers and connections and deletes the test's keys whatever the test's outcome.
 */
export class WorkerHarness {
  private readonly open: RedisClient[] = [];
  private readonly workers: GroupWorker[] = [];
  private readonly prefixes: string[] = [];

  redisFor(config: Config, blocking = false): RedisClient {
    const r = testRedis(config, blocking);
    this.open.push(r);
    return r;
  }

  setup(overrides: Parameters<typeof testConfig>[0] = {}) {
    const config = testConfig(overrides);
    this.prefixes.push(config.streams.prefix);
    return { config, redis: this.redisFor(config), group: uniqueName('g') };
  }

  startWorker(config: Config, group: string, sink: Sink, options: { consumer?: string; log?: Logger } = {}) {
    const blocking = this.redisFor(config, true);
    const commands = this.redisFor(config);
    const consumer = options.consumer ?? uniqueName('c');
    const worker = new GroupWorker({
      redis: commands,
      blocking,
      layout: config.streams,
      group,
      consumer,
      sink,
      settings: config.consumer,
      log: options.log ?? silentLogger(),
    });
    this.workers.push(worker);
    /** What a crash (kill -9) does to the consumer: its connections vanish without a word. */
    const kill = () => {
      blocking.disconnect();
      commands.disconnect();
      this.workers.splice(this.workers.indexOf(worker), 1);
    };
    return { worker, blocking, commands, consumer, kill };
  }

  async cleanup(): Promise<void> {
    for (const w of this.workers.splice(0)) await w.close().catch(() => undefined);
    const cleaner = this.open.find((r) => r.status === 'ready') ?? this.open[0];
    if (cleaner !== undefined) for (const p of this.prefixes.splice(0)) await cleanupPrefix(cleaner, p);
    for (const r of this.open.splice(0)) await closeRedis(r);
  }
}
