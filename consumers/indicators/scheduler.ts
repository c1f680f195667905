import type { JobsOptions, Queue } from 'bullmq';
import type { Config } from '../../shared/config.ts';
import { TIMEFRAME_NS, type TimeframeName } from '../bars/aggregate.ts';
import type { IndicatorJobData } from './job.ts';

/**
 * BullMQ job schedulers, one per indicator timeframe, repeating every timeframe.
 *
 * Idempotent by construction: the scheduler id is derived from the timeframe (`indicators:1m`) and
 * `upsertJobScheduler` creates or updates that one scheduler atomically in Redis, so any number of workers
 * calling `ensureSchedulers` at start-up, concurrently or after a restart, leave exactly one scheduler per
 * timeframe. Each tick of a scheduler produces one job whose id BullMQ derives from the scheduler id and the
 * tick time, so two workers never both enqueue the same tick. Schedulers of timeframes no longer configured
 * are removed.
 */

const ID_PREFIX = 'indicators:';

export function schedulerId(tf: TimeframeName): string {
  return `${ID_PREFIX}${tf}`;
}

export function jobOptions(settings: Config['indicators']): JobsOptions {
  return {
    attempts: settings.attempts,
    backoff: { type: 'exponential', delay: settings.backoffMs },
    removeOnComplete: { count: settings.keepCompleted },
    // Failed jobs stay for inspection (`tickstream status`); 0 keeps every one of them.
    removeOnFail: settings.keepFailed === 0 ? false : { count: settings.keepFailed },
  };
}

export async function ensureSchedulers(
  queue: Queue<IndicatorJobData>,
  settings: Config['indicators'],
): Promise<string[]> {
  const wanted = [...new Set(settings.timeframes)];
  for (const tf of wanted) {
    await queue.upsertJobScheduler(
      schedulerId(tf),
      { every: Number(TIMEFRAME_NS[tf] / 1_000_000n) },
      { name: `indicators-${tf}`, data: { tf }, opts: jobOptions(settings) },
    );
  }
  const ids = new Set(wanted.map(schedulerId));
  for (const s of await queue.getJobSchedulers(0, -1)) {
    const id = s.key;
    if (id.startsWith(ID_PREFIX) && !ids.has(id)) await queue.removeJobScheduler(id);
  }
  return [...ids];
}
