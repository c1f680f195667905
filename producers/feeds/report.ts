import type { Logger } from '../../shared/logger.ts';
import type { RedisClient } from '../../shared/redis.ts';
import type { StreamLayout } from '../../shared/streams.ts';
import type { FeedEvent } from './mapper.ts';
import type { FeedStats } from './source.ts';

/**
 * What a running feed tells operators, in Redis beside the streams:
 * - `<prefix>:feed-events`, a capped stream of gaps, malformed messages (raw, truncated) and venue errors,
 *   one entry each: `XREVRANGE ticks:feed-events + - COUNT 20`;
 * - `<prefix>:feeds`, a hash of feed name → its counters as JSON, refreshed every second, for `status`.
 */
export function feedEventsKey(layout: StreamLayout): string {
  return `${layout.prefix}:feed-events`;
}

export function feedsKey(layout: StreamLayout): string {
  return `${layout.prefix}:feeds`;
}

export interface FeedReport extends FeedStats {
  venue: string;
  symbols: string[];
  channels: string[];
  pid: number;
  startedAt: number;
  updatedAt: number;
  /** Set by the last report of a process that stopped (gracefully or on a fatal refusal). */
  stoppedAt?: number;
}

/** A feed is shown as running while its report is fresher than this. */
export const STALE_REPORT_MS = 5000;

export class FeedReporter {
  private pending = Promise.resolve();

  constructor(
    private readonly o: {
      redis: RedisClient;
      layout: StreamLayout;
      name: string;
      eventsMaxLen: number;
      log: Logger;
    },
  ) {}

  /** Record one event; failures are logged, never thrown (reporting must not stop the feed). */
  event(venue: string, e: FeedEvent): void {
    const fields = [
      'kind',
      e.kind,
      'venue',
      venue,
      'feed',
      this.o.name,
      'detail',
      e.detail,
      'at',
      String(Date.now()),
    ];
    if (e.symbol !== undefined) fields.push('symbol', e.symbol);
    if (e.raw !== undefined) fields.push('raw', e.raw);
    this.pending = this.pending
      .then(() =>
        this.o.redis.xadd(feedEventsKey(this.o.layout), 'MAXLEN', '~', this.o.eventsMaxLen, '*', ...fields),
      )
      .then(
        () => undefined,
        (err: unknown) => this.o.log.warn({ err }, 'could not record a feed event'),
      );
  }

  async report(r: FeedReport): Promise<void> {
    try {
      await this.o.redis.hset(feedsKey(this.o.layout), this.o.name, JSON.stringify(r));
    } catch (err) {
      this.o.log.warn({ err }, 'could not record the feed status');
    }
  }

  async flush(): Promise<void> {
    await this.pending;
  }
}

/** `tickstream status` rows: every feed that reported, running or stopped. */
export async function feedsStatus(
  redis: RedisClient,
  layout: StreamLayout,
): Promise<Record<string, unknown>[] | undefined> {
  const all = await redis.hgetall(feedsKey(layout));
  const names = Object.keys(all).sort();
  if (names.length === 0) return undefined;
  const now = Date.now();
  return names.map((name) => {
    const r = JSON.parse(all[name]!) as FeedReport;
    // A process that died without its last report (kill -9) stops refreshing: it is shown as not reporting.
    const state =
      r.stoppedAt !== undefined
        ? 'stopped'
        : now - r.updatedAt >= STALE_REPORT_MS
          ? 'not reporting'
          : r.connected
            ? 'connected'
            : 'reconnecting';
    return {
      feed: name,
      venue: r.venue,
      state,
      symbols: r.symbols.length,
      messages: r.messages,
      ticks: r.ticks,
      reconnects: r.reconnects,
      gaps: r.gaps,
      malformed: r.malformed,
      last_message_age_ms: r.lastMessageAt === 0 ? '-' : now - r.lastMessageAt,
    };
  });
}
