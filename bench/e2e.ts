import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg, setPriority } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import { closePgPool, createPgPool, quoteIdent } from '../shared/pg.ts';
import { closeRedis, createRedis, deleteByPrefix, pairs, type RedisClient } from '../shared/redis.ts';
import { allStreamKeys } from '../shared/streams.ts';
import { QuestDbStandin } from '../test/helpers/questdb-standin.ts';
import { hostCpu, hostCpuDelta } from './hostcpu.ts';
import { measurement, median, type BenchReport, type Measurement } from './lib.ts';
import { delta, freePort, histogramDelta, scrapePort, sumDelta, type Scrape } from './scrape.ts';

/**
 * The whole pipeline at once (issue 13): the synthetic producer and one process per sink as deployed
 * (`consume quotes`, `consume archive`, `consume bars`, `indicators worker`, and `consume questdb` against a
 * real QuestDB when QDB_CLIENT_CONF is set, else against the in-process stand-in, labelled as such), all
 * `node bin/tickstream.js` processes with their /metrics served on loopback.
 *
 * For each symbol count it searches the highest target rate at which every group's backlog stays bounded:
 * doubling steps from E2E_START_RATE until a step fails, then E2E_REFINE bisections. A step runs the producer
 * at the target rate for E2E_STEP_S seconds (backpressure off, so the backlog shows instead of a paused
 * producer); it is sustained when the producer reached 95% of the target and every group's backlog (lag +
 * pending, in stream entries) stayed bounded: its floor (the lowest sample) over the last quarter no more than a
 * quarter of a second of input above its floor over the third (a group keeping up drains back down after each
 * read, however large; one falling behind never does), and never more than BEHIND_S seconds of input in the last
 * quarter (a group that flushes large batches, like bars, is behind by up to a flush period while keeping up).
 * A step that fails is run once more and the rate fails only when both do; an untimed warm-up step runs first.
 * Between steps every group drains to zero.
 *
 * Figures per step come from the processes' own metrics (the histograms and counters of shared/metrics.ts),
 * as deltas over the step: ticks/s through each sink, each process's CPU share of one core, tick age at
 * acknowledgement (now − exchange time) p50/p99 interpolated within histogram buckets and max as the upper
 * bound of the highest non-empty bucket, event-loop lag p99 and GC share. A separate step at E2E_LATENCY_RATE
 * (20k ticks/s) gives tick-to-quote latency while every other sink runs.
 *
 * The machine is shared and has 2 cores: figures are noisy and the processes compete with each other, which is
 * the point of this benchmark. It is not a test and asserts nothing about timing.
 */
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://127.0.0.1:5432/test';
const QDB = process.env.QDB_CLIENT_CONF === '' ? undefined : process.env.QDB_CLIENT_CONF;
const SYMBOL_COUNTS = (process.env.E2E_SYMBOLS ?? '100,1000').split(',').map(Number);
const STEP_S = Number(process.env.E2E_STEP_S ?? 20);
const START_RATE = Number(process.env.E2E_START_RATE ?? 10_000);
const MAX_RATE = Number(process.env.E2E_MAX_RATE ?? 320_000);
const REFINE = Number(process.env.E2E_REFINE ?? 2);
const LATENCY_RATE = Number(process.env.E2E_LATENCY_RATE ?? 20_000);
const DRAIN_TIMEOUT_S = Number(process.env.E2E_DRAIN_TIMEOUT_S ?? 120);
const SHARDS = 4;
/** Most a group may be behind, in seconds of input, and still count as keeping up. */
const BEHIND_S = Number(process.env.E2E_BEHIND_S ?? 3);
/** Niceness given to the batch sinks (archive, bars, questdb, indicators) for the second set of latency steps. */
const BATCH_NICE = Number(process.env.E2E_BATCH_NICE ?? 10);
/** 0 skips the search for the highest sustained rate (only the latency steps run). */
const SEARCH = process.env.E2E_SEARCH !== '0';
const BIN = join(import.meta.dirname, '..', 'bin', 'tickstream.js');

interface Proc {
  /** Label in the report, e.g. "consume archive" or "consume questdb (stand-in)". */
  label: string;
  /** Its log lines (JSON), kept for the producer's closing summary. */
  log: string[];
  /** Consumer group, for sink processes. */
  group?: string;
  port: number;
  child: ChildProcess;
}

interface StepResult {
  symbols: number;
  targetRate: number;
  producedPerS: number;
  sustained: boolean;
  /** Largest lag + pending (entries) per group over the step's last quarter. */
  backlogEnd: Record<string, number>;
  /** Mean lag + pending over the last quarter minus the mean over the third, per group: growth. */
  backlogGrowth: Record<string, number>;
  /** Input entries per second, the unit of "one second behind". */
  entriesPerS: number;
  drainS: number;
  sinks: Record<
    string,
    {
      ticksPerS: number;
      p50Ms: number;
      p99Ms: number;
      maxMsAtMost: number;
      /** Since the stream entry was added: the pipeline's share, without the producer's. */
      streamP50Ms: number;
      streamP99Ms: number;
    }
  >;
  processes: Record<string, { cpuShare: number; gcShare: number; eventLoopP99Ms: number }>;
  /** Over the step: the share of all cores busy, and Redis's and PostgreSQL's share of one core (/proc). */
  host?: { busy: number; byName: Record<string, number> } | undefined;
}

/** The servers whose CPU the e2e benchmark reports beside its own processes. */
const SERVERS = ['redis-server', 'postgres'];

async function groupBacklogs(redis: RedisClient, config: Config): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const key of allStreamKeys(config.streams)) {
    for (const g of (await redis.call('XINFO', 'GROUPS', key).catch(() => [])) as unknown[][]) {
      const info = pairs(g);
      const name = String(info.get('name'));
      const lag = info.get('lag');
      const backlog = Number(info.get('pending')) + (lag === null || lag === undefined ? 0 : Number(lag));
      out.set(name, (out.get(name) ?? 0) + backlog);
    }
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function start(label: string, args: string[], env: Record<string, string>, group?: string): Proc {
  const port = Number(env.TICKSTREAM_METRICS_PORT);
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const log: string[] = [];
  let partial = '';
  child.stderr!.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      log.push(line);
      // Warnings and errors still reach the terminal; the producer's info lines are only kept.
      if (!line.includes('"level":30')) process.stderr.write(`[${label}] ${line}\n`);
    }
  });
  return { label, port, child, log, ...(group !== undefined ? { group } : {}) };
}

async function stopAll(procs: Proc[]): Promise<void> {
  await Promise.all(
    procs.map(
      ({ child }) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const force = setTimeout(() => child.kill('SIGKILL'), 40_000);
          child.once('exit', () => {
            clearTimeout(force);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    ),
  );
}

async function waitReady(p: Proc, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (p.child.exitCode !== null) throw new Error(`bench: ${p.label} exited with ${p.child.exitCode}`);
    const ok = await fetch(`http://127.0.0.1:${p.port}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`bench: ${p.label} not ready after ${timeoutMs} ms`);
    await sleep(250);
  }
}

export default async function e2e(): Promise<BenchReport> {
  const id = randomBytes(4).toString('hex');
  const prefix = `bench_e2e_${id}`;
  const schema = `bench_e2e_${id}`;
  const standin = QDB === undefined ? await QuestDbStandin.start({ cheap: true }) : undefined;
  const qdbConf = QDB ?? standin!.clientConf();
  const questdbLabel = QDB === undefined ? 'questdb (stand-in)' : 'questdb';
  const base: Record<string, string> = {
    REDIS_URL,
    DATABASE_URL,
    QDB_CLIENT_CONF: qdbConf,
    TICKSTREAM_STREAM_PREFIX: prefix,
    TICKSTREAM_SHARDS: String(SHARDS),
    TICKSTREAM_QUOTE_KEY_PREFIX: `${prefix}:quote:`,
    TICKSTREAM_QUOTE_CHANNEL_PREFIX: `${prefix}:quotes:`,
    TICKSTREAM_BARS_KEY_PREFIX: `${prefix}:bar:`,
    TICKSTREAM_IND_QUEUE: `${prefix}_ind`,
    TICKSTREAM_IND_BULL_PREFIX: `${prefix}:bull`,
    TICKSTREAM_IND_KEY_PREFIX: `${prefix}:ind:`,
    TICKSTREAM_PG_SCHEMA: schema,
    TICKSTREAM_QDB_TABLE_PREFIX: `${prefix}_`,
    TICKSTREAM_HIGH_WATER: '0',
    LOG_LEVEL: 'warn',
    LOG_FORMAT: 'json',
  };
  const config = loadConfig({ env: base });
  const redis = createRedis(config, { log: silentLogger() });
  const sinks: [string, string][] = [
    ['quotes', 'quotes'],
    ['archive', 'archive'],
    ['bars', 'bars'],
    ['questdb', 'hot'],
  ];
  const procs: Proc[] = [];
  const steps: StepResult[] = [];
  const notes: string[] = [
    `load average at start ${loadavg()
      .map((l) => l.toFixed(1))
      .join(
        ' / ',
      )} on ${cpus().length} cores: with other work on the machine the figures are noisy; rerun on a quiet one`,
    `step ${STEP_S} s; sustained = producer ≥ 95% of target and, over the step's second half, no group's backlog floor rising (its lowest sample in the last quarter at most 0.25 s of input above the third quarter's) nor more than ${BEHIND_S} s of input behind in the last quarter; a failed step is run again and the rate fails only if both do; an untimed warm-up step first`,
    `questdb sink: ${QDB === undefined ? 'the in-process stand-in (test/helpers/questdb-standin.ts), NOT QuestDB' : 'real QuestDB (QDB_CLIENT_CONF)'}`,
  ];
  try {
    // Sinks first, one after the other: the archive and bars processes migrate the same schema on start.
    for (const [sink, group] of sinks) {
      const port = await freePort();
      const p = start(
        `consume ${sink === 'questdb' ? questdbLabel : sink}`,
        ['consume', sink, '--group', group],
        { ...base, TICKSTREAM_METRICS_PORT: String(port) },
        group,
      );
      procs.push(p);
      await waitReady(p);
    }
    const indPort = await freePort();
    const ind = start('indicators worker', ['indicators', 'worker'], {
      ...base,
      TICKSTREAM_METRICS_PORT: String(indPort),
    });
    procs.push(ind);
    await waitReady(ind);

    const runStep = async (symbols: number, rate: number, warmUp = false): Promise<StepResult> => {
      const port = await freePort();
      // Sinks first: every tick the producer sends falls between these scrapes and the ones after the drain.
      const before = await Promise.all(procs.map((p) => scrapePort(p.port)));
      const hostBefore = hostCpu(SERVERS);
      const tBefore = performance.now();
      const producer = start(
        'producer',
        [
          'produce',
          'synthetic',
          '--symbols',
          String(symbols),
          '--rate',
          String(rate),
          '--duration',
          `${STEP_S}s`,
        ],
        {
          ...base,
          TICKSTREAM_METRICS_PORT: String(port),
          TICKSTREAM_SOURCE: `bench${symbols}`,
          LOG_LEVEL: 'info', // for its closing summary: ticks and seconds
        },
      );
      const t0 = performance.now();
      const samples: { t: number; backlog: Map<string, number> }[] = [];
      // A fresh process: its counters start at zero.
      const prodBefore: Scrape = new Map();
      let prodAfter = prodBefore;
      let prodAt = t0;
      // Sample backlogs until the producer is done, keeping its last scrape (it exits after the run).
      while (producer.child.exitCode === null) {
        samples.push({ t: performance.now() - t0, backlog: await groupBacklogs(redis, config) });
        // Not listening yet (starting) or already gone (finished): either way, keep the last good scrape.
        const s = await scrapePort(producer.port).catch(() => undefined);
        if (s !== undefined) {
          prodAfter = s;
          prodAt = performance.now();
        }
        await sleep(500);
      }
      const elapsedS = (performance.now() - t0) / 1000;
      await new Promise<void>((r) =>
        producer.child.exitCode !== null ? r() : producer.child.once('exit', () => r()),
      );
      const srcLabel = `{source="bench${symbols}"}`;
      const frames = delta(prodBefore, prodAfter, `tickstream_producer_frames_total${srcLabel}`);
      const entriesPerS = frames / Math.max(0.5, (prodAt - t0) / 1000);
      const lastQuarter = samples.filter((s) => s.t >= elapsedS * 750);
      const backlogGrowth: Record<string, number> = {};
      for (const [, group] of sinks) {
        // The floors, not means or a trend: the bars group's backlog rises by a whole read and falls back after
        // each flush, a sawtooth far taller than the growth allowed, which moved the means (and a fitted trend)
        // by chance. A group that keeps up returns to its floor; one falling behind raises it.
        backlogGrowth[group] = floorGrowth(
          samples.map((s) => [s.t / 1000, s.backlog.get(group) ?? 0]),
          elapsedS,
        );
      }
      const backlogEnd: Record<string, number> = {};
      for (const [, group] of sinks) {
        backlogEnd[group] = Math.max(0, ...lastQuarter.map((s) => s.backlog.get(group) ?? 0));
      }
      // Drain: everything produced is processed before the next step, and the drain time says how far behind.
      const d0 = performance.now();
      for (;;) {
        const b = await groupBacklogs(redis, config);
        if (sinks.every(([, g]) => (b.get(g) ?? 0) === 0)) break;
        if (performance.now() - d0 > DRAIN_TIMEOUT_S * 1000) {
          throw new Error(
            `bench: groups did not drain within ${DRAIN_TIMEOUT_S} s: ${JSON.stringify([...b])}`,
          );
        }
        await sleep(250);
      }
      const drainS = (performance.now() - d0) / 1000;
      const end = await Promise.all(procs.map((p) => scrapePort(p.port)));
      const host = hostCpuDelta(hostBefore, hostCpu(SERVERS));
      const summaryLine = producer.log.find((l) => l.includes('"msg":"produced"'));
      if (summaryLine === undefined) throw new Error('bench: the producer printed no summary');
      const ran = JSON.parse(summaryLine) as { ticks: number; seconds: number };
      // The sinks' rate over the producer's run and the drain after it: every tick went through in that time.
      const wall = ran.seconds + drainS;
      const scraped = (performance.now() - tBefore) / 1000; // CPU shares: over the time between the scrapes
      const result: StepResult = {
        symbols,
        targetRate: rate,
        producedPerS: ran.ticks / ran.seconds,
        sustained: false,
        backlogEnd,
        backlogGrowth,
        entriesPerS,
        drainS,
        sinks: {},
        processes: {},
        host,
      };
      procs.forEach((p, i) => {
        const a = before[i]!;
        const b = end[i]!;
        if (p.group !== undefined) {
          const sinkName = sinks.find(([, g]) => g === p.group)![0];
          const lbl = `group="${p.group}",sink="${sinkName}"`;
          const h = histogramDelta(a, b, 'tickstream_sink_ack_age_seconds', `${lbl},from="exchange"`);
          const hs = histogramDelta(a, b, 'tickstream_sink_ack_age_seconds', `${lbl},from="stream"`);
          result.sinks[p.label.replace(/^consume /, '')] = {
            // Over the step and its drain: every tick produced went through.
            ticksPerS: delta(a, b, `tickstream_worker_ticks_total{${lbl}}`) / wall,
            p50Ms: h.p50 * 1000,
            p99Ms: h.p99 * 1000,
            maxMsAtMost: h.maxAtMost * 1000,
            streamP50Ms: hs.p50 * 1000,
            streamP99Ms: hs.p99 * 1000,
          };
        }
        result.processes[p.label] = {
          cpuShare: delta(a, b, 'process_cpu_seconds_total') / scraped,
          gcShare: sumDelta(a, b, 'nodejs_gc_duration_seconds_sum') / scraped,
          eventLoopP99Ms: (b.get('nodejs_eventloop_lag_p99_seconds') ?? NaN) * 1000,
        };
      });
      result.processes.producer = {
        cpuShare: delta(prodBefore, prodAfter, 'process_cpu_seconds_total') / elapsedS,
        gcShare: sumDelta(prodBefore, prodAfter, 'nodejs_gc_duration_seconds_sum') / elapsedS,
        eventLoopP99Ms: (prodAfter.get('nodejs_eventloop_lag_p99_seconds') ?? NaN) * 1000,
      };
      const behindLimit = Math.max(50, BEHIND_S * entriesPerS);
      const growthLimit = Math.max(10, 0.25 * entriesPerS);
      result.sustained =
        result.producedPerS >= 0.95 * rate &&
        Object.values(backlogEnd).every((b) => b <= behindLimit) &&
        Object.values(backlogGrowth).every((g) => g <= growthLimit);
      const growth = Object.fromEntries(Object.entries(backlogGrowth).map(([k, v]) => [k, Math.round(v)]));
      process.stderr.write(
        `e2e: ${warmUp ? '(warm-up, not counted) ' : ''}${symbols} symbols, target ${rate}/s: produced ${Math.round(result.producedPerS)}/s, ` +
          `backlog ${JSON.stringify(backlogEnd)} (limit ${Math.round(behindLimit)}), ` +
          `growth ${JSON.stringify(growth)} (limit ${Math.round(growthLimit)}), drain ${drainS.toFixed(1)} s → ` +
          `${result.sustained ? 'sustained' : 'NOT sustained'}\n`,
      );
      if (!warmUp) steps.push(result);
      return result;
    };

    // A rate counts as not sustained only when a second step at it fails too: one step can fail on a transient
    // (a checkpoint, a stall of the stand-in) at a rate every other step sustains.
    const confirmedStep = async (symbols: number, rate: number): Promise<StepResult> => {
      const r = await runStep(symbols, rate);
      return r.sustained ? r : runStep(symbols, rate);
    };

    // Not counted: the first step after start-up also measured the processes' JIT warm-up, the first
    // partitions and connections, and once failed at a rate every later step sustained.
    await runStep(SYMBOL_COUNTS[0]!, Math.round(START_RATE / 2), true);

    const measurements: Measurement[] = [];
    const summary: Record<string, string | number> = {};
    for (const symbols of SEARCH ? SYMBOL_COUNTS : []) {
      let good: StepResult | undefined;
      let bad: StepResult | undefined;
      for (let rate = START_RATE; rate <= MAX_RATE; rate *= 2) {
        const r = await confirmedStep(symbols, rate);
        if (r.sustained) good = r;
        else {
          bad = r;
          break;
        }
      }
      for (let i = 0; i < REFINE && bad !== undefined; i++) {
        const lo = good?.targetRate ?? 0;
        const mid = Math.round((lo + bad.targetRate) / 2 / 1000) * 1000;
        if (mid <= lo || mid >= bad.targetRate) break;
        const r = await confirmedStep(symbols, mid);
        if (r.sustained) good = r;
        else bad = r;
      }
      // The group furthest behind at the first rate that was not sustained (all of them when tied).
      const worst = bad === undefined ? 0 : Math.max(...Object.values(bad.backlogEnd));
      const limiting =
        bad === undefined
          ? `none up to ${MAX_RATE}/s`
          : `${Object.entries(bad.backlogEnd)
              .filter(([, b]) => b === worst)
              .map(([g]) => g)
              .join(', ')} (${worst} entries behind at ${bad.targetRate}/s)`;
      const best = good;
      measurements.push(
        measurement(`highest sustained rate, all sinks, ${symbols} symbols`, 'ticks/s', [
          best?.targetRate ?? 0,
        ]),
      );
      summary[`${symbols} symbols: limiting group`] = limiting;
      if (best !== undefined) {
        for (const [sink, s] of Object.entries(best.sinks)) {
          measurements.push(
            measurement(`${symbols} sym @${best.targetRate}/s: ${sink} ticks/s`, 'ticks/s', [s.ticksPerS]),
          );
          summary[`${symbols} sym @${best.targetRate}/s: ${sink} exchange→ack p50/p99/max≤`] =
            `${fmtMs(s.p50Ms)} / ${fmtMs(s.p99Ms)} / ${fmtMs(s.maxMsAtMost)} ms`;
        }
        for (const [proc, p] of Object.entries(best.processes)) {
          summary[`${symbols} sym @${best.targetRate}/s: ${proc} CPU / GC / loop p99`] =
            `${(p.cpuShare * 100).toFixed(0)}% / ${(p.gcShare * 100).toFixed(1)}% / ${fmtMs(p.eventLoopP99Ms)} ms`;
        }
        if (best.host !== undefined) {
          for (const name of SERVERS) {
            const share = best.host.byName[name];
            summary[`${symbols} sym @${best.targetRate}/s: ${name} CPU (all its processes)`] =
              share === undefined ? 'not seen (/proc)' : `${(share * 100).toFixed(0)}% of a core`;
          }
          summary[`${symbols} sym @${best.targetRate}/s: machine CPU busy`] =
            `${(best.host.busy * 100).toFixed(0)}% of ${cpus().length} cores`;
        }
        if (bad?.host !== undefined) {
          summary[`${symbols} sym @${bad.targetRate}/s (not sustained): machine CPU busy`] =
            `${(bad.host.busy * 100).toFixed(0)}% of ${cpus().length} cores`;
        }
      }
    }

    // Tick-to-quote latency at a fixed moderate rate while every other sink runs: first with every process at
    // the same priority, then with the batch sinks at a lower one (docs/architecture.md, "Priorities"), as an
    // operator runs the latency-critical path beside throughput-bound ones on shared cores.
    const latencyRuns = Number(process.env.E2E_LATENCY_RUNS ?? 3);
    const batchProcs = procs.filter((p) => p.group !== 'quotes');
    const latencyPhases: [string, number][] = [
      ['all sinks running', 0],
      [`all sinks running, batch sinks at nice ${BATCH_NICE}`, BATCH_NICE],
    ];
    for (const [label, nice] of latencyPhases) {
      try {
        for (const p of batchProcs) setPriority(p.child.pid!, nice);
      } catch (err) {
        notes.push(`could not set the batch sinks' priority to ${nice} (${String(err)}): "${label}" skipped`);
        continue;
      }
      const latencySteps: StepResult[] = [];
      for (let i = 0; i < latencyRuns; i++)
        latencySteps.push(await runStep(SYMBOL_COUNTS.at(-1)!, LATENCY_RATE));
      const q = (k: 'p50Ms' | 'p99Ms' | 'maxMsAtMost') => latencySteps.map((s) => s.sinks.quotes?.[k] ?? NaN);
      measurements.push(measurement(`tick→quote p50 @${LATENCY_RATE}/s, ${label}`, 'ms', q('p50Ms')));
      measurements.push(measurement(`tick→quote p99 @${LATENCY_RATE}/s, ${label}`, 'ms', q('p99Ms')));
      measurements.push(
        measurement(`tick→quote max (bucket bound) @${LATENCY_RATE}/s, ${label}`, 'ms', q('maxMsAtMost')),
      );
      measurements.push(
        measurement(
          `XADD→quote acked p99 @${LATENCY_RATE}/s (stream-id time), ${label}`,
          'ms',
          latencySteps.map((s) => s.sinks.quotes?.streamP99Ms ?? NaN),
        ),
      );
      summary[`quotes event-loop p99 @${LATENCY_RATE}/s (median), ${label}`] = `${fmtMs(
        median(latencySteps.map((s) => s.processes['consume quotes']?.eventLoopP99Ms ?? NaN)),
      )} ms`;
      const busy = latencySteps.map((s) => s.host?.busy ?? NaN);
      const redisShare = latencySteps.map((s) => s.host?.byName['redis-server'] ?? NaN);
      summary[`machine CPU busy / Redis CPU @${LATENCY_RATE}/s (median), ${label}`] =
        `${(median(busy) * 100).toFixed(0)}% of ${cpus().length} cores / ${(median(redisShare) * 100).toFixed(0)}% of a core`;
      summary[`every group kept up @${LATENCY_RATE}/s, ${label}`] = latencySteps.every((s) => s.sustained)
        ? 'yes'
        : 'NO';
    }
    for (const p of batchProcs) {
      try {
        setPriority(p.child.pid!, 0);
      } catch {
        // Lowering niceness needs privileges; the processes end with the benchmark anyway.
      }
    }
    summary['target'] = '≥ 100k ticks/s sustained at 1,000 symbols; p99 tick→quote ≤ 10 ms at 20k/s';
    notes.push(
      'latency = now − exchange time at acknowledgement, from tickstream_sink_ack_age_seconds (one tick per entry); p50/p99 interpolated within buckets, max is the bucket upper bound',
      'baselines are the single-path benchmarks in the same README table (core, archive, bars, questdb)',
    );
    return { name: 'e2e', measurements, summary, notes, details: { steps } };
  } finally {
    await stopAll(procs);
    await standin?.stop();
    for (const p of [prefix, `${prefix}:`]) await deleteByPrefix(redis, p).catch(() => undefined);
    await closeRedis(redis);
    const pool = createPgPool(config.postgres, { log: silentLogger(), max: 1 });
    await pool.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`).catch(() => undefined);
    await closePgPool(pool);
  }
}

/**
 * How far a backlog's floor rose over a step of `elapsedS` seconds: its lowest sample (time in s, backlog) in the
 * last quarter minus its lowest in the third (0 when a quarter has no sample).
 */
export function floorGrowth(points: readonly (readonly [number, number])[], elapsedS: number): number {
  const low = (from: number, to: number) => {
    const xs = points.filter(([t]) => t >= from && t < to).map(([, b]) => b);
    return xs.length === 0 ? undefined : Math.min(...xs);
  };
  const third = low(elapsedS / 2, (elapsedS * 3) / 4);
  const last = low((elapsedS * 3) / 4, Infinity);
  return third === undefined || last === undefined ? 0 : last - third;
}

function fmtMs(v: number): string {
  return Number.isFinite(v) ? v.toFixed(1) : 'n/a';
}
