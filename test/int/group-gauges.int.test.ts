import { afterEach, describe, expect, it } from 'vitest';
import { groupBacklog } from '../../consumers/status.ts';
import { allStreamKeys } from '../../shared/streams.ts';
import { produceTicks } from '../helpers/streams.ts';
import { WorkerHarness } from '../helpers/workers.ts';

const h = new WorkerHarness();
afterEach(() => h.cleanup());

describe('groupBacklog (the tickstream_group_lag gauge)', () => {
  it('reports the certain backlog, not the stale lag Redis keeps after an AOF reload', async () => {
    const { config, redis, group } = h.setup({ streams: { shards: 2 } });
    const keys = allStreamKeys(config.streams);
    for (const key of keys) await redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM');
    await produceTicks(config, redis, 200, { frameSize: 10 });

    // Nothing delivered yet: the backlog is every entry of each shard.
    const lengths = await Promise.all(keys.map((k) => redis.xlen(k)));
    expect(lengths.every((n) => n > 0)).toBe(true);
    let rows = await groupBacklog(redis, config.streams, group);
    expect(rows.map((r) => [r.stream, r.lag, r.pending])).toEqual(keys.map((k, i) => [k, lengths[i], 0]));

    // What a cut AOF leaves: all delivered, but entries-read behind, so Redis's own lag stays high for good.
    for (const key of keys) await redis.call('XGROUP', 'SETID', key, group, '$', 'ENTRIESREAD', '1');
    const raw = (await redis.call('XINFO', 'GROUPS', keys[0]!)) as unknown[][];
    const rawLag = Number(raw[0]![raw[0]!.indexOf('lag') + 1]);
    expect(rawLag).toBeGreaterThan(0);
    rows = await groupBacklog(redis, config.streams, group);
    expect(rows.map((r) => [r.stream, r.lag, r.pending])).toEqual(keys.map((k) => [k, 0, 0]));
  });
});
