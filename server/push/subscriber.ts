import type { Logger } from '../../shared/logger.ts';
import type { RedisClient } from '../../shared/redis.ts';
import type { ReadModel } from '../tiers/index.ts';
import { barFromFields, indicatorsFromFields, quoteFromFields } from '../tiers/redis.ts';
import { counter } from '../metrics.ts';
import { topicKey, type Hub } from './hub.ts';

/**
 * The pub/sub side of push: PSUBSCRIBE to the write side's channels on a dedicated connection, update L1 in
 * place and hand each update to the hub.
 *   quotes      `<quotes.channelPrefix><SYMBOL>`           the projector's quote hash as JSON
 *   bars        `<bars.channelPrefix><SYMBOL>:<tf>`        the bar's hash fields + symbol, tf, closed
 *   indicators  `<indicators.channelPrefix><SYMBOL>:<tf>`  the row's values + symbol, tf, start
 * Messages are decoded leniently (unknown fields pass) but must name what they update: the kind's parser
 * (quoteFromFields, barFromFields, indicatorsFromFields) checks the fields it uses; a message without them is
 * counted and skipped. While the connection is down updates are missed, so when it is back (ioredis
 * re-subscribes by itself) L1 drops every pushed kind and reads them afresh.
 */
export interface SubscriberSettings {
  quotesPrefix: string;
  barsPrefix: string;
  indicatorsPrefix: string;
}

type Kind = 'quotes' | 'bars' | 'indicators';
/**
 * Messages of every Subscriber in the process, by kind and outcome: plain numbers per message (at 20,000
 * messages/s a labelled prom-client inc is a visible share of the server's CPU), read when scraped.
 */
const receivedCounts = {
  quotes: { ok: 0, bad: 0 },
  bars: { ok: 0, bad: 0 },
  indicators: { ok: 0, bad: 0 },
};
counter(
  'tickstream_api_pubsub_messages_total',
  'pub/sub messages received, by kind and outcome',
  ['kind', 'outcome'],
  function collect() {
    this.reset();
    for (const [kind, c] of Object.entries(receivedCounts)) {
      this.inc({ kind, outcome: 'ok' }, c.ok);
      this.inc({ kind, outcome: 'bad' }, c.bad);
    }
  },
);
const resubscribes = counter(
  'tickstream_api_pubsub_resubscribes_total',
  'pub/sub reconnections (L1 pushed kinds invalidated)',
  [],
);

export class Subscriber {
  readonly stats = { quotes: 0, bars: 0, indicators: 0, bad: 0, resubscribes: 0 };
  private lost = false;
  private started = false;
  private readonly patterns: Record<string, Kind>;

  constructor(
    private readonly redis: RedisClient,
    private readonly s: SubscriberSettings,
    private readonly model: ReadModel,
    private readonly hub: Hub | undefined,
    private readonly log: Logger,
  ) {
    this.patterns = {
      [`${s.quotesPrefix}*`]: 'quotes',
      [`${s.barsPrefix}*`]: 'bars',
      [`${s.indicatorsPrefix}*`]: 'indicators',
    };
  }

  /** Connected and subscribed (readiness). */
  get connected(): boolean {
    return this.started && !this.lost;
  }

  async start(): Promise<void> {
    this.redis.on('pmessage', (pattern: string, channel: string, message: string) =>
      this.onMessage(pattern, channel, message),
    );
    this.redis.on('close', () => {
      if (this.started) this.lost = true;
    });
    this.redis.on('ready', () => {
      if (!this.lost) return;
      this.lost = false;
      this.stats.resubscribes++;
      resubscribes.inc();
      const dropped = this.model.invalidatePushed();
      this.log.info({ dropped }, 'pub/sub reconnected: pushed L1 entries invalidated');
    });
    await this.redis.psubscribe(...Object.keys(this.patterns));
    this.started = true;
  }

  async stop(): Promise<void> {
    this.started = false;
    try {
      await this.redis.punsubscribe();
    } catch {
      // the connection is gone already
    }
  }

  onMessage(pattern: string, channel: string, message: string): void {
    const kind = this.patterns[pattern];
    if (kind === undefined) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(message);
    } catch {
      return this.bad(kind, channel);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed))
      return this.bad(kind, channel);
    const fields = parsed as Record<string, unknown>;
    if (kind === 'quotes') {
      const q = quoteFromFields(fields);
      if (q === undefined) return this.bad(kind, channel);
      this.stats.quotes++;
      receivedCounts[kind].ok++;
      this.model.pushQuote(q);
      this.hub?.publish(topicKey('quotes', q.symbol), JSON.stringify({ type: 'quote', data: q }));
    } else if (kind === 'bars') {
      const b = barFromFields(fields);
      if (b === undefined) return this.bad(kind, channel);
      this.stats.bars++;
      receivedCounts[kind].ok++;
      this.model.pushBar(b);
      this.hub?.publish(topicKey('bars', b.symbol, b.tf), JSON.stringify({ type: 'bar', data: b }));
    } else {
      const v = indicatorsFromFields(fields);
      if (v === undefined) return this.bad(kind, channel);
      this.stats.indicators++;
      receivedCounts[kind].ok++;
      this.model.pushIndicators(v);
      this.hub?.publish(
        topicKey('indicators', v.symbol, v.tf),
        JSON.stringify({ type: 'indicators', data: v }),
      );
    }
  }

  private bad(kind: Kind, channel: string): void {
    this.stats.bad++;
    receivedCounts[kind].bad++;
    if (this.stats.bad <= 10 || this.stats.bad % 1000 === 0)
      this.log.warn(
        { channel, bad: this.stats.bad },
        'pub/sub message without the fields of its kind: skipped',
      );
  }
}
