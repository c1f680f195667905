import { Sender, SenderOptions, createBuffer, createTransport } from '@questdb/nodejs-client';
import { QuestDbSink, appendTick } from '../consumers/sinks/questdb.ts';
import { GroupWorker } from '../consumers/worker.ts';
import { loadConfig, type Config } from '../shared/config.ts';
import { silentLogger } from '../shared/logger.ts';
import type { Tick } from '../shared/model.ts';
import { IlpRows, type IlpProtocolVersion } from '../shared/ilp.ts';
import { ilpSenderOptions, requireQuestDbHttp } from '../shared/questdb.ts';
import { closeRedis, createRedis, type RedisClient } from '../shared/redis.ts';
import { SyntheticMarket, symbolNames } from '../producers/synthetic.ts';
import { Publisher } from '../producers/publisher.ts';
import { QuestDbStandin } from '../test/helpers/questdb-standin.ts';
import { measurement, type BenchReport, type Measurement } from './lib.ts';

/**
 * Hot writer throughput against the client alone, on the same rows in the same batch size:
 * - writer: ticks already in the Redis streams, read by the GroupWorker (XREADGROUP, decode), written by the
 *   QuestDB sink, one flush per batch, then XACK;
 * - baseline: the QuestDB client filling the same rows (same column mapping) and flushing them directly.
 * Into the stand-in (cheap mode: it counts bytes and answers 204, so the figure is the client side's cost),
 * and, when QDB_CLIENT_CONF is set, into that real QuestDB too (fresh tables per run, dropped afterwards).
 * Target: the writer reaches >= 70% of the client alone. Beside them, the writer's rows (shared/ilp.ts) sent
 * alone through the client's transport in the same batches: the writer's rate against that is its own
 * overhead (reading, decoding and acknowledging through Redis), now that its rows cost a tenth of the client's.
 * And the encoding alone, per protocol version: the rows the writer builds (shared/ilp.ts) against the client's
 * own buffer filling the same rows (what the writer did before; docs/adr/0017-own-ilp-encoder.md).
 */
const TICKS = 100_000;
const REPS = 3;

export default async function questdbBench(): Promise<BenchReport> {
  const ticks = new SyntheticMarket({ symbols: symbolNames(200), seed: 11, source: 'bench' }).next(TICKS);
  const base = loadConfig({ overrides: { log: { level: 'silent' } } });
  const batch = base.consumer.batchSize * base.producer.frameSize;
  const measurements: Measurement[] = [];
  const summary: Record<string, string | number> = {};

  for (const version of ['1', '2'] as const) {
    const client: number[] = [];
    const ours: number[] = [];
    for (let rep = 0; rep < REPS + 2; rep++) {
      client.push(await clientEncodeRate(version, ticks, batch));
      ours.push(ownEncodeRate(version, ticks, batch));
    }
    const c = measurement(`encoding, ILP ${version}: baseline, the client's buffer`, 'ticks/s', client);
    const o = measurement(`encoding, ILP ${version}: the writer's rows (shared/ilp.ts)`, 'ticks/s', ours);
    measurements.push(c, o);
    summary[`encoding, ILP ${version}: writer's rows / client's buffer`] =
      `${(o.value / c.value).toFixed(1)}x`;
  }

  const standin = await QuestDbStandin.start({ cheap: true });
  try {
    const r = await compare('stand-in', base, standin.clientConf(), ticks, batch);
    measurements.push(...r.measurements);
    summary['stand-in: writer / direct client'] = r.verdict;
  } finally {
    await standin.stop();
  }

  const real = base.questdb.clientConf;
  if (real !== undefined) {
    const r = await compare('QuestDB', base, real, ticks, batch);
    measurements.push(...r.measurements);
    summary['QuestDB: writer / direct client'] = r.verdict;
  } else {
    summary['QuestDB: writer / direct client'] = 'not run (set QDB_CLIENT_CONF to include a real QuestDB)';
  }
  return {
    name: 'questdb',
    measurements,
    summary,
    notes: [
      `${TICKS} synthetic ticks (200 symbols), ${batch}-tick batches (${base.consumer.batchSize} entries × ${base.producer.frameSize}-tick frames), ${REPS} runs each, median`,
      'writer = Redis streams → GroupWorker (read, decode, ack) → QuestDB sink; baseline = the same rows sent alone through the client transport; client alone = the client buffer + Sender',
    ],
  };
}

async function compare(
  target: string,
  base: Config,
  clientConf: string,
  ticks: readonly Tick[],
  batch: number,
): Promise<{ measurements: Measurement[]; verdict: string }> {
  const writer: number[] = [];
  const direct: number[] = [];
  const directOwn: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    direct.push(await directRun(runConfig(base, clientConf, rep), ticks, batch));
    directOwn.push(await directOwnRun(runConfig(base, clientConf, rep + 200), ticks, batch));
    writer.push(await writerRun(runConfig(base, clientConf, rep + 100), ticks));
  }
  const w = measurement(`${target}: hot writer via Redis + GroupWorker`, 'ticks/s', writer);
  const o = measurement(
    `${target}: baseline, the writer's rows (shared/ilp.ts) + the client's transport alone, same batches`,
    'ticks/s',
    directOwn,
  );
  const d = measurement(
    `${target}: the client alone (its own buffer, same rows, same batches)`,
    'ticks/s',
    direct,
  );
  // The target is against the client alone, as it was set; against the same rows sent alone the ratio is the
  // writer's own overhead (reading, decoding and acknowledging through Redis), shown beside it.
  const ratio = w.value / d.value;
  return {
    measurements: [w, o, d],
    verdict: `${(ratio * 100).toFixed(0)}% of the client alone (target >= 70%) ${ratio >= 0.7 ? 'ok' : 'MISSED'}; ${((w.value / o.value) * 100).toFixed(0)}% of the same rows sent alone through the client's transport`,
  };
}

function runConfig(base: Config, clientConf: string, rep: number): Config {
  const tag = `${Date.now().toString(36)}_${rep}`;
  return loadConfig({
    overrides: {
      redis: { url: base.redis.url },
      streams: { prefix: `bench_qdb_${tag}`, shards: base.streams.shards },
      questdb: { clientConf, tablePrefix: `bench_${tag}_` },
      log: { level: 'silent' },
    },
  });
}

async function directRun(config: Config, ticks: readonly Tick[], batch: number): Promise<number> {
  // The sink's start() creates the tables; the baseline then uses a bare client with auto-flush off, as the
  // sink does, so both send the same requests.
  const sink = new QuestDbSink({ settings: config.questdb, log: silentLogger() });
  await sink.start();
  await sink.close();
  const sender = await Sender.fromConfig(`${config.questdb.clientConf!.replace(/;?$/, ';')}auto_flush=off;`);
  try {
    const started = performance.now();
    for (let i = 0; i < ticks.length; i += batch) {
      const end = Math.min(ticks.length, i + batch);
      for (let j = i; j < end; j++) await appendTick(sender, sink.tables, ticks[j]!);
      await sender.flush();
    }
    return ticks.length / ((performance.now() - started) / 1000);
  } finally {
    await sender.close();
    await dropTables(config, sink.tables);
  }
}

async function directOwnRun(config: Config, ticks: readonly Tick[], batch: number): Promise<number> {
  const sink = new QuestDbSink({ settings: config.questdb, log: silentLogger() });
  await sink.start();
  await sink.close();
  const options = await ilpSenderOptions(config.questdb.clientConf!, silentLogger());
  const transport = createTransport(options);
  const rows = new IlpRows({
    protocolVersion: options.protocol_version as IlpProtocolVersion,
    tables: sink.tables,
    maxBytes: 100 * 1024 * 1024,
  });
  try {
    const started = performance.now();
    for (let i = 0; i < ticks.length; i += batch) {
      const end = Math.min(ticks.length, i + batch);
      for (let j = i; j < end; j++) rows.add(ticks[j]!);
      await transport.send(Buffer.from(rows.view()));
      rows.reset();
    }
    return ticks.length / ((performance.now() - started) / 1000);
  } finally {
    await transport.close();
    await dropTables(config, sink.tables);
  }
}

async function writerRun(config: Config, ticks: readonly Tick[]): Promise<number> {
  const log = silentLogger();
  const redis = createRedis(config, { log });
  const blocking = createRedis(config, { log, blocking: true });
  const sink = new QuestDbSink({ settings: config.questdb, log });
  try {
    const publisher = new Publisher({ redis, layout: config.streams, settings: config.producer, log });
    await publisher.publish(ticks);
    await publisher.flush();
    await sink.start(); // tables exist before the clock starts; the worker's own start() is then a no-op check
    const worker = new GroupWorker({
      redis,
      blocking,
      layout: config.streams,
      group: 'hot',
      consumer: 'bench',
      sink,
      settings: config.consumer,
      log,
    });
    const started = performance.now();
    await worker.start();
    while (worker.stats.acked < worker.stats.entries || worker.stats.ticks < ticks.length) {
      await new Promise((r) => setTimeout(r, 2));
    }
    const elapsed = performance.now() - started;
    await worker.close();
    return ticks.length / (elapsed / 1000);
  } finally {
    await dropStreams(redis, config);
    await closeRedis(blocking);
    await closeRedis(redis);
    await dropTables(config, sink.tables);
  }
}

const TABLES = { trades: 'bench_trades', quotes: 'bench_quotes' };

async function clientEncodeRate(
  version: IlpProtocolVersion,
  ticks: readonly Tick[],
  batch: number,
): Promise<number> {
  const buffer = createBuffer(new SenderOptions(`http::addr=localhost:9000;protocol_version=${version};`));
  // appendTick takes a Sender; the buffer has the same row methods (the unit test compares their bytes).
  const asSender = buffer as unknown as Sender;
  let bytes = 0;
  const started = performance.now();
  for (let i = 0; i < ticks.length; i += batch) {
    const end = Math.min(ticks.length, i + batch);
    for (let j = i; j < end; j++) await appendTick(asSender, TABLES, ticks[j]!);
    bytes += buffer.toBufferView().length;
    buffer.reset();
  }
  if (bytes === 0) throw new Error('the client encoded nothing');
  return ticks.length / ((performance.now() - started) / 1000);
}

function ownEncodeRate(version: IlpProtocolVersion, ticks: readonly Tick[], batch: number): number {
  const rows = new IlpRows({ protocolVersion: version, tables: TABLES, maxBytes: 100 * 1024 * 1024 });
  let bytes = 0;
  const started = performance.now();
  for (let i = 0; i < ticks.length; i += batch) {
    const end = Math.min(ticks.length, i + batch);
    for (let j = i; j < end; j++) rows.add(ticks[j]!);
    bytes += rows.view().length;
    rows.reset();
  }
  if (bytes === 0) throw new Error('nothing encoded');
  return ticks.length / ((performance.now() - started) / 1000);
}

async function dropTables(config: Config, tables: { trades: string; quotes: string }): Promise<void> {
  const http = requireQuestDbHttp(config.questdb);
  for (const t of Object.values(tables)) await http.exec(`drop table if exists ${t}`).catch(() => undefined);
}

async function dropStreams(redis: RedisClient, config: Config): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${config.streams.prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
}
