import type { Config } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import type { Tick } from '../../shared/model.ts';
import type { RedisClient } from '../../shared/redis.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { Publisher } from '../../producers/publisher.ts';
import { SyntheticMarket } from '../../producers/synthetic.ts';
import { uniqueName } from './index.ts';

/** Publish `count` synthetic ticks (a unique source, so identities never collide across tests). */
export async function produceTicks(
  config: Config,
  redis: RedisClient,
  count: number,
  options: { symbols?: string[]; seed?: number; frameSize?: number } = {},
): Promise<Tick[]> {
  const ticks = new SyntheticMarket({
    symbols: options.symbols ?? ['AAA', 'BBB', 'CCC', 'DDD', 'EEE'],
    seed: options.seed ?? 1,
    source: uniqueName('src'),
  }).next(count);
  const publisher = new Publisher({
    redis,
    layout: config.streams,
    settings: { ...config.producer, frameSize: options.frameSize ?? 50 },
    log: silentLogger(),
  });
  await publisher.publish(ticks);
  await publisher.flush();
  return ticks;
}

/** Entries delivered to the group and not yet acknowledged, over every shard. */
export async function pendingTotal(redis: RedisClient, config: Config, group: string): Promise<number> {
  let total = 0;
  for (const s of allStreamKeys(config.streams)) {
    const summary = (await redis.call('XPENDING', s, group)) as [number, ...unknown[]];
    total += Number(summary[0]);
  }
  return total;
}
