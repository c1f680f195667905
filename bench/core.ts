import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { QuotesSink } from '../consumers/sinks/quotes.ts';
import { encodeFrame } from '../shared/codec.ts';
import { loadConfig, type Config } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import { decodeFrame } from '../shared/codec.ts';
import { nowNs, type Tick } from '../shared/model.ts';
import { closeRedis, createRedis, pairs, type RedisClient, deleteByPrefix } from '../shared/redis.ts';
import { allStreamKeys } from '../shared/streams.ts';
import { Publisher } from '../producers/publisher.ts';
import { SyntheticMarket, symbolNames } from '../producers/synthetic.ts';
import { redisServerVersion, startReplicated } from '../chaos/servers.ts';
import { checkDurability, versionAtLeast, WAITAOF_SINCE, type Durability } from '../producers/durability.ts';
import { measurement, median, percentile, repeat, type BenchReport, type Measurement } from './lib.ts';
import {
  delta,
  freePort,
  histogramDelta,
  mergeScrapes,
  scrapePort,
  sumDelta,
  type Scrape,
} from './scrape.ts';

/**
 * Core pipeline benchmark (issue 2):
 *   1. producer → Redis ticks/s: Publisher (frames, pipelined) vs one awaited XADD per tick, and
 *      redis-benchmark's pipelined XADD as the raw server limit;
 *   2. stream → latest-quote projector ticks/s with two `tickstream consume quotes` processes vs a naive
 *      consumer (XREADGROUP COUNT 1, one XACK per entry);
 *   3. latency from XADD to quote visible (pub/sub) at a steady 20k ticks/s;
 *   4. producer durability (TICKSTREAM_PRODUCER_DURABILITY): ack vs replica (WAIT 1) — and fsync (WAITAOF) where
 *      the redis-server has it — on a private primary + replica started for the purpose: ticks/s, and the
 *      time for one tick to be published and confirmed.
 * BENCH_CORE_PARTS=producer,projector,latency,durability runs some parts (results in core.<parts>.json).
 */
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const SYMBOLS = symbolNames(500);
const PRODUCE_TICKS = Number(process.env.BENCH_PRODUCE_TICKS ?? 1_000_000);
const PROJECT_TICKS = Number(process.env.BENCH_PROJECT_TICKS ?? 1_000_000);
const NAIVE_TICKS = 20_000;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const DURABLE_TICKS = Number(process.env.BENCH_DURABLE_TICKS ?? 300_000);
const PARTS = (process.env.BENCH_CORE_PARTS ?? 'producer,projector,latency,durability').split(',');
const BIN = join(import.meta.dirname, '..', 'bin', 'tickstream.js');

function configFor(prefix: string, lingerMs?: number): Config {
  return loadConfig({
    env: { REDIS_URL },
    overrides: {
      streams: { prefix, shards: 4 },
      quotes: { keyPrefix: `${prefix}:quote:`, channelPrefix: `${prefix}:quotes:` },
      producer: { highWater: 0, ...(lingerMs !== undefined ? { lingerMs } : {}) },
      log: { level: 'silent' },
    },
  });
}

function ticks(n: number, seed = 1): Tick[] {
  return new SyntheticMarket({ symbols: SYMBOLS, seed, source: `bench-${seed}` }).next(n);
}

let runNo = 0;
const prefixOf = (what: string) => `bench:${what}:${process.pid}:${runNo++}`;

/** Publish `count` ticks taken from `next` in chunks of 4096; ticks/s from the first publish to the flush. */
async function publishRate(
  config: Config,
  redis: RedisClient,
  count: number,
  next: (from: number, n: number) => readonly Tick[],
): Promise<number> {
  const publisher = new Publisher({
    redis,
    layout: config.streams,
    settings: config.producer,
    log: silentLogger(),
  });
  const started = performance.now();
  for (let i = 0; i < count; i += 4096) await publisher.publish(next(i, Math.min(4096, count - i)));
  await publisher.flush();
  return (count * 1000) / (performance.now() - started);
}

async function publishAll(config: Config, redis: RedisClient, batch: readonly Tick[]): Promise<number> {
  return publishRate(config, redis, batch.length, (from, n) => batch.slice(from, from + n));
}

async function producer(redis: RedisClient): Promise<Measurement[]> {
  const pregenerated = ticks(PRODUCE_TICKS);
  const ours = await repeat(RUNS, async () => {
    const config = configFor(prefixOf('produce'));
    const rate = await publishAll(config, redis, pregenerated);
    await deleteByPrefix(redis, config.streams.prefix);
    return rate;
  });
  const withGeneration = await repeat(RUNS, async () => {
    const config = configFor(prefixOf('produce-gen'));
    const market = new SyntheticMarket({ symbols: SYMBOLS, seed: 5, source: 'gen' });
    const rate = await publishRate(config, redis, PRODUCE_TICKS, (_from, n) => market.next(n));
    await deleteByPrefix(redis, config.streams.prefix);
    return rate;
  });
  const naive = await repeat(RUNS, async () => {
    const key = `${prefixOf('naive-produce')}:{0}`;
    const sample = pregenerated.slice(0, NAIVE_TICKS);
    const started = performance.now();
    for (const t of sample) await redis.xadd(key, '*', ...encodeFrame([t]));
    const rate = (sample.length * 1000) / (performance.now() - started);
    await redis.unlink(key);
    return rate;
  });
  return [
    measurement('producer: Publisher, 256-tick frames, pipelined', 'ticks/s', ours),
    measurement('producer: same, generating synthetic ticks too', 'ticks/s', withGeneration),
    measurement('naive producer: one awaited XADD per tick', 'ticks/s', naive),
    ...rawServerLimit(pregenerated),
  ];
}

/** redis-benchmark, pipelined 64 deep: one-tick entries, and entries carrying a 256-tick frame. */
function rawServerLimit(sample: readonly Tick[]): Measurement[] {
  const url = new URL(REDIS_URL);
  const run = (key: string, fields: string[], n: number): number => {
    const out = execFileSync(
      'redis-benchmark',
      [
        '-h',
        url.hostname,
        '-p',
        url.port || '6379',
        '-n',
        String(n),
        '-P',
        '64',
        '-q',
        'XADD',
        key,
        '*',
        ...fields,
      ],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    execFileSync('redis-cli', ['-h', url.hostname, '-p', url.port || '6379', 'UNLINK', key]);
    const m = /([\d.]+) requests per second/.exec(out.split('\r').pop() ?? out);
    if (m === null) throw new Error(`cannot read redis-benchmark output: ${out.slice(-200)}`);
    return Number(m[1]);
  };
  try {
    const single = [run(`${prefixOf('raw')}:{0}`, encodeFrame(sample.slice(0, 1)), 200_000)];
    const frames = [run(`${prefixOf('raw')}:{0}`, encodeFrame(sample.slice(0, 256)), 20_000) * 256];
    return [
      measurement('raw limit: redis-benchmark XADD -P 64, 1 tick per entry', 'ticks/s', single),
      measurement('raw limit: redis-benchmark XADD -P 64, 256-tick frame per entry', 'ticks/s', frames),
    ];
  } catch (err) {
    process.stderr.write(`redis-benchmark unavailable: ${String(err)}\n`);
    return [];
  }
}

interface GroupState {
  entriesRead: number;
  lag: number;
  pending: number;
}

async function groupState(redis: RedisClient, config: Config, group: string): Promise<GroupState> {
  const s: GroupState = { entriesRead: 0, lag: 0, pending: 0 };
  for (const key of allStreamKeys(config.streams)) {
    for (const g of (await redis.call('XINFO', 'GROUPS', key).catch(() => [])) as unknown[][]) {
      const info = pairs(g);
      if (info.get('name') !== group) continue;
      s.entriesRead += Number(info.get('entries-read') ?? 0);
      s.lag += Number(info.get('lag') ?? 1);
      s.pending += Number(info.get('pending'));
    }
  }
  return s;
}

function consumers(
  config: Config,
  group: string,
  count: number,
  metricsPorts: number[] = [],
): ChildProcess[] {
  return Array.from({ length: count }, (_, i) =>
    spawn(process.execPath, [BIN, 'consume', 'quotes', '--group', group, '--consumer', `bench-${i}`], {
      env: {
        PATH: process.env.PATH ?? '',
        ...(metricsPorts[i] !== undefined ? { TICKSTREAM_METRICS_PORT: String(metricsPorts[i]) } : {}),
        REDIS_URL,
        TICKSTREAM_STREAM_PREFIX: config.streams.prefix,
        TICKSTREAM_SHARDS: String(config.streams.shards),
        TICKSTREAM_QUOTE_KEY_PREFIX: config.quotes.keyPrefix,
        TICKSTREAM_QUOTE_CHANNEL_PREFIX: config.quotes.channelPrefix,
        LOG_LEVEL: 'warn',
        LOG_FORMAT: 'json',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    }),
  );
}

async function stop(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGTERM');
        }),
    ),
  );
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function projector(redis: RedisClient): Promise<Measurement[]> {
  const sample = ticks(PROJECT_TICKS, 2);
  const ours = await repeat(RUNS, async () => {
    const config = configFor(prefixOf('project'));
    const group = 'quotes';
    for (const key of allStreamKeys(config.streams))
      await redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM');
    await publishAll(config, redis, sample);
    const children = consumers(config, group, 2);
    // Measured from the first delivery to the last acknowledgement, so process start-up is not counted.
    await waitFor(
      async () => (await groupState(redis, config, group)).entriesRead > 0,
      30_000,
      'first delivery',
    );
    const started = performance.now();
    await waitFor(
      async () => {
        const s = await groupState(redis, config, group);
        return s.lag === 0 && s.pending === 0;
      },
      300_000,
      'projector to catch up',
    );
    const rate = (sample.length * 1000) / (performance.now() - started);
    await stop(children);
    await deleteByPrefix(redis, config.streams.prefix);
    return rate;
  });

  const naive = await repeat(RUNS, async () => {
    const config = configFor(prefixOf('naive-project'));
    const key = allStreamKeys(config.streams)[0]!;
    const group = 'quotes';
    await redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM');
    const pipeline = redis.pipeline();
    for (const t of sample.slice(0, NAIVE_TICKS)) pipeline.xadd(key, '*', ...encodeFrame([t]));
    await pipeline.exec();
    const sink = new QuotesSink({ redis, settings: config.quotes, log: silentLogger() });
    await sink.start();
    const started = performance.now();
    for (;;) {
      const reply = (await redis.call(
        'XREADGROUP',
        'GROUP',
        group,
        'c',
        'COUNT',
        '1',
        'STREAMS',
        key,
        '>',
      )) as [string, [string, string[]][]][] | null;
      const entry = reply?.[0]?.[1][0];
      if (entry === undefined) break;
      await sink.write(decodeFrame(entry[1]).ticks);
      await sink.flush();
      await redis.xack(key, group, entry[0]);
    }
    const rate = (NAIVE_TICKS * 1000) / (performance.now() - started);
    await deleteByPrefix(redis, config.streams.prefix);
    return rate;
  });
  return [
    measurement('projector: 2 consumer processes, batched, one script call per 100 symbols', 'ticks/s', ours),
    measurement('naive projector: XREADGROUP COUNT 1, XACK per entry', 'ticks/s', naive),
  ];
}

export async function latency(redis: RedisClient, lingerMs?: number, processes = 2): Promise<LatencyRun> {
  const config = configFor(prefixOf('latency'), lingerMs);
  const group = 'quotes';
  for (const key of allStreamKeys(config.streams))
    await redis.call('XGROUP', 'CREATE', key, group, '$', 'MKSTREAM');
  const ports = await Promise.all(Array.from({ length: processes }, () => freePort()));
  const children = consumers(config, group, processes, ports);
  const scrapeAll = async () => mergeScrapes(await Promise.all(ports.map(scrapePort)));
  await waitFor(
    () =>
      scrapeAll().then(
        () => true,
        () => false,
      ),
    30_000,
    'consumers to serve /metrics',
  );
  await waitFor(
    async () => {
      let n = 0;
      for (const key of allStreamKeys(config.streams))
        n += ((await redis.call('XINFO', 'CONSUMERS', key, group)) as unknown[]).length;
      return n >= processes * config.streams.shards;
    },
    30_000,
    'consumers to join',
  );
  const sub = createRedis(config);
  const latencies: number[] = [];
  let measuring = false;
  sub.on('pmessage', (_p: string, _c: string, message: string) => {
    if (!measuring) return;
    const ts = /"ts":"(\d+)"/.exec(message)?.[1];
    if (ts !== undefined) latencies.push(Number(nowNs() - BigInt(ts)) / 1e6);
  });
  await sub.psubscribe(`${config.quotes.channelPrefix}*`);
  const market = new SyntheticMarket({ symbols: SYMBOLS.slice(0, 100), seed: 3, source: 'latency' });
  const publisher = new Publisher({
    redis,
    layout: config.streams,
    settings: config.producer,
    log: silentLogger(),
  });
  const rate = 20_000;
  const warmupMs = 2_000;
  const durationMs = 10_000;
  // This process publishes and receives: its own stalls are part of what it measures, so they are reported.
  const ownLoop = monitorEventLoopDelay({ resolution: 1 });
  let before: Scrape | undefined;
  const started = performance.now();
  let sent = 0;
  for (;;) {
    const elapsed = performance.now() - started;
    if (elapsed > warmupMs + durationMs) break;
    if (!measuring && elapsed > warmupMs) {
      before = await scrapeAll();
      ownLoop.enable();
    }
    measuring = elapsed > warmupMs;
    const due = Math.floor((elapsed / 1000) * rate) - sent;
    if (due > 0) {
      await publisher.publish(market.next(due));
      sent += due;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await publisher.flush();
  measuring = false;
  ownLoop.disable();
  // prom-client resets its event-loop histogram at each scrape: this one covers the measured window.
  const afterEach = await Promise.all(ports.map(scrapePort));
  const after = mergeScrapes(afterEach);
  const measuredS = durationMs / 1000;
  await stop(children);
  await closeRedis(sub);
  await deleteByPrefix(redis, config.streams.prefix);
  const lbl = `group="${group}",sink="quotes"`;
  const streamAge = histogramDelta(before!, after, 'tickstream_sink_ack_age_seconds', `${lbl},from="stream"`);
  const flush = histogramDelta(before!, after, 'tickstream_sink_flush_seconds', lbl);
  const batch = histogramDelta(before!, after, 'tickstream_sink_batch_ticks', lbl);
  return {
    p50: percentile(latencies, 50),
    p90: percentile(latencies, 90),
    p99: percentile(latencies, 99),
    max: percentile(latencies, 100),
    samples: latencies.length,
    stages: {
      streamToAckP50: streamAge.p50 * 1000,
      streamToAckP99: streamAge.p99 * 1000,
      flushP99: flush.p99 * 1000,
      batchP50: batch.p50,
      // The consumers' event-loop lag p99 (prom-client's gauge, per process; the larger of the two).
      consumerLoopP99: Math.max(
        ...afterEach.map((a) => (a.get('nodejs_eventloop_lag_p99_seconds') ?? NaN) * 1000),
      ),
      consumerGcShare: sumDelta(before!, after, 'nodejs_gc_duration_seconds_sum') / measuredS / processes,
      consumerCpuShare: delta(before!, after, 'process_cpu_seconds_total') / measuredS / processes,
      benchLoopP99: ownLoop.percentile(99) / 1e6,
    },
  };
}

interface LatencyRun {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  samples: number;
  /** Where the time goes, from the consumers' own histograms over the measured window (ms unless noted). */
  stages: {
    /** XADD (stream id time, 1 ms resolution) → XACK, per entry. */
    streamToAckP50: number;
    streamToAckP99: number;
    /** The projection's flush (Lua + PUBLISH) per batch. */
    flushP99: number;
    /** Ticks per batch. */
    batchP50: number;
    consumerLoopP99: number;
    /** Share of one core spent in GC / in all, per consumer process. */
    consumerGcShare: number;
    consumerCpuShare: number;
    /** This process's own event-loop delay p99: it publishes and receives the updates it times. */
    benchLoopP99: number;
  };
}

/** ticks/s publishing DURABLE_TICKS, and ms for one tick published + flushed, in one durability mode. */
async function durableRuns(
  url: string,
  durability: Durability,
): Promise<{ rate: number[]; oneTick: number[] }> {
  const redis = createRedis({ redis: { url, clusterNodes: [] } });
  try {
    const base = configFor(prefixOf(`durable-${durability}`));
    const settings = { ...base.producer, durability, durabilityReplicas: 1 };
    await checkDurability(redis, settings);
    const sample = ticks(DURABLE_TICKS, 7);
    const rate = await repeat(RUNS, async () => {
      const config = configFor(prefixOf(`durable-${durability}`));
      const publisher = new Publisher({ redis, layout: config.streams, settings, log: silentLogger() });
      const started = performance.now();
      for (let i = 0; i < sample.length; i += 4096) await publisher.publish(sample.slice(i, i + 4096));
      await publisher.flush();
      const r = (sample.length * 1000) / (performance.now() - started);
      await deleteByPrefix(redis, config.streams.prefix);
      return r;
    });
    const oneTick = await repeat(RUNS, async () => {
      const config = configFor(prefixOf(`durable-one-${durability}`));
      const publisher = new Publisher({ redis, layout: config.streams, settings, log: silentLogger() });
      const times: number[] = [];
      for (let i = 0; i < 200; i++) {
        const started = performance.now();
        await publisher.publish(sample.slice(i, i + 1));
        await publisher.flush();
        times.push(performance.now() - started);
      }
      await deleteByPrefix(redis, config.streams.prefix);
      return median(times);
    });
    return { rate, oneTick };
  } finally {
    await closeRedis(redis);
  }
}

async function durabilityCost(): Promise<Measurement[]> {
  // A private primary (AOF everysec, as a durable deployment runs) with one replica, so WAIT has something to
  // wait for; ack runs against the same primary for a like-for-like baseline.
  const set = await startReplicated(1, ['--appendonly', 'yes', '--appendfsync', 'everysec']);
  const out: Measurement[] = [];
  try {
    for (const mode of ['ack', 'replica'] as const) {
      const r = await durableRuns(set.primary.url, mode);
      out.push(
        measurement(
          `durability ${mode}: publish ${DURABLE_TICKS} ticks (primary+replica)`,
          'ticks/s',
          r.rate,
        ),
        measurement(`durability ${mode}: one tick published + flushed, median`, 'ms', r.oneTick),
      );
    }
    const version = redisServerVersion();
    if (version !== undefined && versionAtLeast(version, WAITAOF_SINCE)) {
      const r = await durableRuns(set.primary.url, 'fsync');
      out.push(
        measurement(`durability fsync: publish ${DURABLE_TICKS} ticks (primary+replica)`, 'ticks/s', r.rate),
        measurement('durability fsync: one tick published + flushed, median', 'ms', r.oneTick),
      );
    } else {
      process.stderr.write(
        `durability fsync not measured: WAITAOF needs redis-server >= ${WAITAOF_SINCE.join('.')}, this one is ${version?.join('.') ?? 'missing'}\n`,
      );
    }
  } finally {
    await set.remove();
  }
  return out;
}

export default async function core(): Promise<BenchReport> {
  const redis = createRedis({ redis: { url: REDIS_URL, clusterNodes: [] } });
  try {
    const produced = PARTS.includes('producer') ? await producer(redis) : [];
    const projected = PARTS.includes('projector') ? await projector(redis) : [];
    const lats: Awaited<ReturnType<typeof latency>>[] = [];
    if (PARTS.includes('latency')) for (let i = 0; i < RUNS; i++) lats.push(await latency(redis));
    const durable = PARTS.includes('durability') ? await durabilityCost() : [];
    const lat = {
      p50: median(lats.map((l) => l.p50)),
      p99: median(lats.map((l) => l.p99)),
      samples: lats.reduce((n, l) => n + l.samples, 0),
    };
    const all = [...produced, ...projected, ...durable];
    const get = (label: string) => all.find((m) => m.label.startsWith(label))?.value ?? NaN;
    const prod = get('producer: Publisher');
    const proj = get('projector:');
    const summary: Record<string, string | number> = {};
    if (produced.length > 0) {
      summary['producer vs naive (target >= 20x)'] = `${(prod / get('naive producer')).toFixed(1)}x`;
      summary['producer vs raw 1-tick XADD limit'] =
        `${(prod / get('raw limit: redis-benchmark XADD -P 64, 1 tick')).toFixed(2)}x`;
      summary['producer vs raw 256-tick-frame XADD limit'] =
        `${(prod / get('raw limit: redis-benchmark XADD -P 64, 256')).toFixed(2)}x`;
      summary['producer target >= 500k ticks/s'] = prod >= 500_000 ? 'met' : 'missed';
    }
    if (projected.length > 0) {
      summary['projector vs naive (target >= 20x)'] = `${(proj / get('naive projector')).toFixed(1)}x`;
      summary['projector target >= 200k ticks/s'] = proj >= 200_000 ? 'met' : 'missed';
    }
    if (lats.length > 0) {
      summary['latency p99 target <= 10 ms'] = lat.p99 <= 10 ? 'met' : 'missed';
      summary['latency samples (pub/sub updates)'] = lat.samples;
      const st = (f: (l: LatencyRun['stages']) => number, digits = 1) =>
        `${median(lats.map((l) => f(l.stages))).toFixed(digits)} (runs: ${lats.map((l) => f(l.stages).toFixed(digits)).join(', ')})`;
      summary["stage: XADD → XACK p50 / p99 ms (consumers' histograms)"] =
        `${st((l) => l.streamToAckP50)} / ${st((l) => l.streamToAckP99)}`;
      summary['stage: projection flush p99 ms'] = st((l) => l.flushP99, 2);
      summary['stage: ticks per batch p50'] = st((l) => l.batchP50, 0);
      summary['stage: consumer event-loop p99 ms / GC share / CPU share'] =
        `${st((l) => l.consumerLoopP99)} / ${st((l) => l.consumerGcShare, 3)} / ${st((l) => l.consumerCpuShare, 2)}`;
      summary['stage: bench process event-loop p99 ms (publisher + subscriber)'] = st((l) => l.benchLoopP99);
    }
    if (durable.length > 0) {
      summary['durability replica vs ack, throughput'] =
        `${(get('durability replica: publish') / get('durability ack: publish')).toFixed(2)}x`;
      summary['durability replica vs ack, one tick'] =
        `${(get('durability replica: one tick') / get('durability ack: one tick')).toFixed(2)}x the time`;
    }
    const latencyLabels = ['p50', 'p90', 'p99', 'max'] as const;
    return {
      name: PARTS.length === 4 ? 'core' : `core.${PARTS.join('+')}`,
      measurements: [
        ...produced,
        ...projected,
        ...(lats.length === 0
          ? []
          : latencyLabels.map((p) =>
              measurement(
                `latency XADD → quote visible, ${p} @ 20k ticks/s`,
                'ms',
                lats.map((l) => l[p]),
              ),
            )),
        ...durable,
      ],
      summary,
      notes: [
        `${SYMBOLS.length} symbols, 4 shards, ${RUNS} runs each, medians; producer ${PRODUCE_TICKS} ticks, projector ${PROJECT_TICKS} ticks, naive ${NAIVE_TICKS} ticks, durability ${DURABLE_TICKS} ticks`,
        'latency is measured from tick creation (just before XADD, including the producer linger (1 ms)) to the pub/sub message of the projected quote, per published update',
        'durability: a private redis-server primary (appendonly yes, everysec) with one replica on the same machine; replica = WAIT 1 after each burst of XADDs',
      ],
    };
  } finally {
    await closeRedis(redis);
  }
}
