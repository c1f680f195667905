import { streamsStatus, type StreamsStatus } from '../consumers/status.ts';
import type { RedisClient } from '../shared/redis.ts';
import type { StreamLayout } from '../shared/streams.ts';
import { printTable } from './table.ts';

/**
 * `tickstream status --watch`: the streams and groups redrawn in place every interval, like `top`, with rates
 * per second computed between two refreshes (entries added per shard, entries read per group, dead letters).
 * Rates count stream entries (frames of up to TICKSTREAM_FRAME_SIZE ticks), as Redis does.
 */
export interface WatchOptions {
  redis: RedisClient;
  layout: StreamLayout;
  intervalMs: number;
  signal: AbortSignal;
  out?: NodeJS.WriteStream;
}

interface Previous {
  at: number;
  status: StreamsStatus;
}

export async function watchStatus(o: WatchOptions): Promise<void> {
  const out = o.out ?? process.stdout;
  const tty = out.isTTY === true;
  let previous: Previous | undefined;
  if (tty) out.write('\x1b[?25l'); // hide the cursor while redrawing
  try {
    while (!o.signal.aborted) {
      const at = Date.now();
      const status = await streamsStatus(o.redis, o.layout);
      const text = renderWatch(status, previous, at, o.intervalMs, o.layout);
      // Home, draw, clear what the previous frame left below: no flicker from clearing first.
      out.write(tty ? `\x1b[H${text.replace(/\n/g, '\x1b[K\n')}\x1b[J` : `${text}\n`);
      previous = { at, status };
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(0, o.intervalMs - (Date.now() - at)));
        o.signal.addEventListener(
          'abort',
          () => {
            clearTimeout(t);
            resolve();
          },
          { once: true },
        );
      });
    }
  } finally {
    if (tty) out.write('\x1b[?25h');
  }
}

/** One frame of the watch view as text (pure, for tests). */
export function renderWatch(
  status: StreamsStatus,
  previous: Previous | undefined,
  at: number,
  intervalMs: number,
  layout: StreamLayout,
): string {
  const seconds = previous === undefined ? 0 : (at - previous.at) / 1000;
  const rate = (now: number | null, before: number | null | undefined): string => {
    if (seconds <= 0 || now === null || before === null || before === undefined) return '-';
    return String(Math.round(Math.max(0, now - before) / seconds));
  };
  const prevShard = (stream: string) => previous?.status.shards.find((s) => s.stream === stream);
  const lines: string[] = [];
  const sink = {
    write(chunk: string) {
      lines.push(chunk);
      return true;
    },
  } as unknown as NodeJS.WritableStream;

  lines.push(
    `tickstream status  ${new Date(at).toISOString().replace('T', ' ').slice(0, 19)} UTC  ` +
      `every ${intervalMs / 1000} s  prefix "${layout.prefix}", ${layout.shards} shards  (Ctrl-C to quit)\n\n`,
  );
  printTable(
    status.shards.map((s) => ({
      stream: s.stream,
      length: s.length,
      'added/s': rate(s.entriesAdded, prevShard(s.stream)?.entriesAdded),
      last_id: s.lastId ?? '-',
    })),
    sink,
  );

  const groups = new Map<
    string,
    { lag: number | null; pending: number; readPerS: number | null; consumers: Set<string>; idle: number }
  >();
  const rows: Record<string, unknown>[] = [];
  for (const s of status.shards) {
    for (const g of s.groups) {
      const before = prevShard(s.stream)?.groups.find((x) => x.group === g.group)?.entriesRead;
      const perS = rate(g.entriesRead, before);
      const idle = Math.max(0, ...g.consumers.map((c) => c.idleMs));
      rows.push({
        group: g.group,
        stream: s.stream,
        lag: g.lag ?? '?',
        pending: g.pending,
        'read/s': perS,
        consumers: g.consumers.length,
        max_idle_ms: idle,
      });
      const total = groups.get(g.group) ?? { lag: 0, pending: 0, readPerS: 0, consumers: new Set(), idle: 0 };
      total.lag = total.lag === null || g.lag === null ? null : total.lag + g.lag;
      total.pending += g.pending;
      total.readPerS = total.readPerS === null || perS === '-' ? null : total.readPerS + Number(perS);
      for (const c of g.consumers) total.consumers.add(c.name);
      total.idle = Math.max(total.idle, idle);
      groups.set(g.group, total);
    }
  }
  lines.push('\nConsumer groups (all shards)\n');
  printTable(
    [...groups].map(([group, t]) => ({
      group,
      lag: t.lag ?? '?',
      pending: t.pending,
      'read/s': t.readPerS ?? '-',
      consumers: t.consumers.size,
      max_idle_ms: t.idle,
    })),
    sink,
  );
  lines.push('\nPer shard\n');
  printTable(
    rows.sort((a, b) => String(a.group).localeCompare(String(b.group))),
    sink,
  );
  const dlqRate = rate(status.deadLetters.total, previous?.status.deadLetters.total);
  lines.push(`\nDead letters: ${status.deadLetters.total}${dlqRate === '-' ? '' : ` (+${dlqRate}/s)`}\n`);
  return lines.join('');
}
