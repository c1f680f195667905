import { describe, expect, it } from 'vitest';
import { renderWatch } from '../../cli/status-watch.ts';
import type { StreamsStatus } from '../../consumers/status.ts';

const layout = { prefix: 'ticks', shards: 2 };

function status(added: [number, number], read: [number, number], dead: number): StreamsStatus {
  return {
    shards: [0, 1].map((i) => ({
      stream: `ticks:{${i}}`,
      length: added[i as 0 | 1],
      firstId: null,
      lastId: `${1000 + i}-0`,
      entriesAdded: added[i as 0 | 1],
      groups: [
        {
          group: 'quotes',
          lag: added[i as 0 | 1] - read[i as 0 | 1],
          redisLag: added[i as 0 | 1] - read[i as 0 | 1],
          pending: i,
          lastDeliveredId: '0-0',
          entriesRead: read[i as 0 | 1],
          consumers: [{ name: `c${i}`, pending: i, idleMs: 10 * (i + 1), idle: false }],
        },
      ],
    })),
    deadLetters: { total: dead, byGroup: {} },
  };
}

/** The cells of the table row that starts with `first` (columns split on runs of spaces). */
function row(text: string, first: string, after = ''): string[] {
  const from = after === '' ? 0 : text.indexOf(after);
  const line = text
    .slice(from)
    .split('\n')
    .find((l) => l.startsWith(`${first} `));
  if (line === undefined) throw new Error(`no row ${first} in:\n${text}`);
  return line.trim().split(/\s{2,}/);
}

describe('status --watch frame', () => {
  it('shows "-" for rates on the first frame, then per-second rates between frames', () => {
    const first = renderWatch(status([100, 50], [80, 50], 3), undefined, 0, 2000, layout);
    expect(first).toMatch(
      /^tickstream status {2}1970-01-01 00:00:00 UTC {2}every 2 s {2}prefix "ticks", 2 shards/,
    );
    expect(row(first, 'ticks:{0}')).toEqual(['ticks:{0}', '100', '-', '1000-0']);
    expect(row(first, 'quotes', 'all shards')).toEqual(['quotes', '20', '1', '-', '2', '20']);
    expect(first).toMatch(/Dead letters: 3\n$/);

    // Two seconds later: shard 0 got 400 more entries, shard 1 200; the group read 300 + 100; 4 dead letters more.
    const second = renderWatch(
      status([500, 250], [380, 150], 7),
      { at: 0, status: status([100, 50], [80, 50], 3) },
      2000,
      2000,
      layout,
    );
    expect(row(second, 'ticks:{0}')).toEqual(['ticks:{0}', '500', '200', '1000-0']);
    expect(row(second, 'ticks:{1}')).toEqual(['ticks:{1}', '250', '100', '1001-0']);
    // group, lag (120 + 100), pending (0 + 1), read/s (150 + 50), consumers, max idle
    expect(row(second, 'quotes', 'all shards')).toEqual(['quotes', '220', '1', '200', '2', '20']);
    expect(row(second, 'quotes', 'Per shard')).toEqual(['quotes', 'ticks:{0}', '120', '0', '150', '1', '10']);
    expect(second).toMatch(/Dead letters: 7 \(\+2\/s\)\n$/);
  });
});
