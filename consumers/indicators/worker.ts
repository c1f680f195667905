import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Config } from '../../shared/config.ts';
import { once } from '../../shared/lifecycle.ts';
import type { Logger } from '../../shared/logger.ts';
import { closePgPool, createPgPool, type PgPool } from '../../shared/pg.ts';
import { closeRedis, createRedis, dropIfDown, type RedisClient } from '../../shared/redis.ts';
import { exposeCounters, observeIndicatorJob } from '../../shared/metrics.ts';
import { postgresReady, redisReady, type ReadinessCheck } from '../../shared/probes.ts';
import { isTimeframe, runIndicatorJob, type IndicatorJobData, type IndicatorJobResult } from './job.ts';
import { ensureSchedulers } from './scheduler.ts';
import { assertSchemaCurrent, migrate, migrateOptions } from '../../shared/schema/migrate.ts';

/**
 * The indicator calculator process: job schedulers (scheduler.ts) plus a BullMQ worker running indicator jobs
 * (job.ts). Run any number of them; schedulers stay one per timeframe and each scheduled tick is one job.
 *
 * Connections: BullMQ needs its own ioredis connections with maxRetriesPerRequest = null (createRedis sets it):
 * one for the queue, one for the worker (which duplicates it for its blocking reads), one for the jobs' own
 * writes (the `ind:` hashes). The service owns and closes all of them, and its PostgreSQL pool unless given one.
 *
 * Failures: a job that throws is retried with exponential backoff (attempts, backoffMs); after the last attempt
 * it stays in the failed set (keepFailed) for `tickstream status`. A job whose process died is found stalled by
 * another worker and run again. Bad job data is not retried (UnrecoverableError).
 *
 * close(): stop taking jobs, let the running job finish (BullMQ's worker.close), then close the queue, the
 * connections and the pool. Idempotent.
 */

export type IndicatorProcessor = (
  job: Job<IndicatorJobData, IndicatorJobResult>,
) => Promise<IndicatorJobResult>;

export interface IndicatorServiceOptions {
  config: Config;
  log: Logger;
  /** Share a pool (tests, benchmarks); otherwise the service opens its own. */
  pool?: PgPool;
  /** Upsert the job schedulers on start (default true). A worker-only process can leave it to others. */
  schedule?: boolean;
  /** Wrap the job body (tests inject failures; the default runs runIndicatorJob). */
  wrap?: (run: IndicatorProcessor) => IndicatorProcessor;
}

export class IndicatorService {
  readonly queue: Queue<IndicatorJobData, IndicatorJobResult>;
  readonly worker: Worker<IndicatorJobData, IndicatorJobResult>;
  readonly stats = { completed: 0, failed: 0 };
  private readonly o: IndicatorServiceOptions;
  private readonly log: Logger;
  private readonly pool: PgPool;
  private readonly ownsPool: boolean;
  private readonly queueRedis: RedisClient;
  private readonly workerRedis: RedisClient;
  private readonly jobRedis: RedisClient;
  private running: Promise<void> | undefined;

  constructor(options: IndicatorServiceOptions) {
    this.o = options;
    const { config } = options;
    const s = config.indicators;
    this.log = options.log.child({ component: 'indicators', queue: s.queueName });
    this.ownsPool = options.pool === undefined;
    this.pool =
      options.pool ??
      createPgPool(config.postgres, { log: this.log, applicationName: 'tickstream:indicators' });
    this.queueRedis = createRedis(config, { log: this.log, connectionName: 'tickstream:indicators:queue' });
    this.workerRedis = createRedis(config, { log: this.log, connectionName: 'tickstream:indicators:worker' });
    this.jobRedis = createRedis(config, { log: this.log, connectionName: 'tickstream:indicators:jobs' });
    this.queue = new Queue(s.queueName, { connection: this.queueRedis, prefix: s.bullPrefix });
    this.queue.on('error', (err) => this.log.warn({ err }, 'queue error'));

    const deps = {
      pool: this.pool,
      redis: this.jobRedis,
      settings: s,
      schema: config.postgres.schema,
      log: this.log,
    };
    const run: IndicatorProcessor = async (job) => {
      if (!isTimeframe(job.data?.tf))
        throw new UnrecoverableError(`bad job data: ${JSON.stringify(job.data)}`);
      return runIndicatorJob(deps, job.data, (p) => job.updateProgress(p));
    };
    const processor = options.wrap === undefined ? run : options.wrap(run);
    this.worker = new Worker(s.queueName, processor, {
      connection: this.workerRedis,
      prefix: s.bullPrefix,
      concurrency: s.concurrency,
      lockDuration: s.lockDurationMs,
      stalledInterval: s.stalledIntervalMs,
      maxStalledCount: 2,
      autorun: false,
    });
    exposeCounters('tickstream_indicator_jobs', { queue: s.queueName }, () => this.stats, {
      completed: 'Indicator jobs completed',
      failed: 'Indicator job attempts failed',
    });
    // BullMQ stamps processedOn/finishedOn (ms) on the job; their difference is the processing time.
    const took = (job: Job | undefined) => ((job?.finishedOn ?? 0) - (job?.processedOn ?? 0)) / 1000;
    this.worker.on('completed', (job, result) => {
      this.stats.completed++;
      observeIndicatorJob(s.queueName, 'completed', took(job));
      this.log.info({ job: job.id, ...result }, 'indicator job done');
    });
    this.worker.on('failed', (job, err) => {
      this.stats.failed++;
      if (job?.processedOn !== undefined) observeIndicatorJob(s.queueName, 'failed', took(job));
      this.log.warn({ job: job?.id, attempt: job?.attemptsMade, err }, 'indicator job failed');
    });
    this.worker.on('error', (err) => this.log.warn({ err }, 'worker error'));
  }

  /** Bring the schema up (or check it), ensure the schedulers (unless told not to), then start taking jobs. */
  async start(): Promise<void> {
    const pg = this.o.config.postgres;
    if (pg.migrateOnStart) await migrate(this.pool, migrateOptions(pg, this.log));
    else await assertSchemaCurrent(this.pool, pg.schema);
    if (this.o.schedule !== false) {
      const ids = await ensureSchedulers(this.queue, this.o.config.indicators);
      this.log.info({ schedulers: ids }, 'job schedulers in place');
    }
    this.running = this.worker
      .run()
      .catch((err: unknown) => this.log.error({ err }, 'worker stopped with an error'));
  }

  /** /readyz: the queue's Redis and PostgreSQL answer, and the BullMQ worker is taking jobs. */
  readiness(): ReadinessCheck[] {
    return [
      redisReady(this.queueRedis),
      postgresReady(this.pool),
      {
        name: 'worker',
        check: async () => {
          if (!this.worker.isRunning()) throw new Error('the BullMQ worker is not running');
        },
      },
    ];
  }

  readonly close = once(async () => {
    dropIfDown(this.queueRedis, this.workerRedis, this.jobRedis);
    await this.worker.close();
    await this.running;
    await this.queue.close();
    await closeRedis(this.jobRedis);
    await closeRedis(this.workerRedis);
    await closeRedis(this.queueRedis);
    if (this.ownsPool) await closePgPool(this.pool);
    this.log.info(this.stats, 'indicator worker stopped');
  });
}

/** `tickstream status` section: job counts, schedulers and the newest failed jobs of the indicator queue. */
export async function indicatorQueueStatus(
  config: Config,
  redis: RedisClient,
): Promise<Record<string, unknown>[] | undefined> {
  const s = config.indicators;
  // A shared connection: BullMQ leaves it open on close.
  const queue = new Queue(s.queueName, { connection: redis, prefix: s.bullPrefix });
  try {
    const [counts, schedulers, failed] = await Promise.all([
      queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized', 'paused'),
      queue.getJobSchedulers(0, -1),
      queue.getFailed(0, 4),
    ]);
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    if (schedulers.length === 0 && total === 0) return undefined;
    const rows: Record<string, unknown>[] = [
      {
        queue: s.queueName,
        schedulers: schedulers.map((x) => `${x.key} every ${x.every ?? '?'}ms`).join(', ') || '-',
        waiting: counts.waiting ?? 0,
        active: counts.active ?? 0,
        delayed: counts.delayed ?? 0,
        completed: counts.completed ?? 0,
        failed: counts.failed ?? 0,
      },
    ];
    for (const job of failed) {
      rows.push({
        queue: s.queueName,
        failed_job: job.id,
        name: job.name,
        attempts: job.attemptsMade,
        finished: job.finishedOn === undefined ? '-' : new Date(job.finishedOn).toISOString(),
        reason: job.failedReason,
      });
    }
    return rows;
  } finally {
    await queue.close();
  }
}
