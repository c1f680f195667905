import { randomBytes } from 'node:crypto';
import { loadConfig, type Config, type ConfigInput } from '../../shared/config.ts';
import { silentLogger } from '../../shared/logger.ts';
import { createRedis, deleteByPrefix, type RedisClient } from '../../shared/redis.ts';

/**
 * Shared test helpers. Integration tests talk to the real services given by REDIS_URL and DATABASE_URL
 * (defaulting to the loopback servers), and isolate themselves with unique names instead of running serially.
 */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://127.0.0.1:5432/test';
/** A real QuestDB for the tests that need one (e.g. "http::addr=localhost:9000;"); those skip without it. */
export const QDB_CLIENT_CONF = process.env.QDB_CLIENT_CONF === '' ? undefined : process.env.QDB_CLIENT_CONF;

/** A name no other test (or earlier run) uses: prefix plus random hex, safe for Redis keys and SQL identifiers. */
export function uniqueName(prefix = 't'): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

/** Poll `check` until it returns a truthy value (which is returned), or fail after `timeoutMs` with `what`. */
export async function waitUntil<T>(
  check: () => Promise<T> | T,
  what: string,
  { timeoutMs = 20_000, intervalMs = 25 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      // The check's own last error is the likely reason: say it, and keep it as the cause.
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last !== undefined ? `; last error: ${String(last)}` : ''}`,
        last !== undefined ? { cause: last } : undefined,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A configuration for one test: unique stream prefix and quote keys, fast timers, real service addresses. */
export function testConfig(overrides: ConfigInput = {}): Config {
  const prefix = uniqueName('ts');
  return loadConfig({
    env: { REDIS_URL, DATABASE_URL },
    overrides: deepMerge(
      {
        streams: { prefix, shards: 2 },
        consumer: {
          blockMs: 100,
          claimIntervalMs: 100,
          claimMinIdleMs: 500,
          retryBaseMs: 10,
          retryMaxMs: 100,
        },
        quotes: { keyPrefix: `${prefix}:quote:`, channelPrefix: `${prefix}:quotes:` },
        bars: { channelPrefix: `${prefix}:bars:` },
        indicators: { channelPrefix: `${prefix}:indicators:` },
        producer: { lingerMs: 1 },
        // Tests archive fixed dates years back (2021, 2023, 2024): the default window would refuse them.
        postgres: { archiveDaysBack: 30_000 },
        log: { level: 'silent' },
      },
      overrides,
    ),
  });
}

export function testRedis(config: Config, blocking = false): RedisClient {
  return createRedis(config, { blocking, log: silentLogger() });
}

/** Delete every key a test created under its prefix. */
export async function cleanupPrefix(redis: RedisClient, prefix: string): Promise<void> {
  await deleteByPrefix(redis, prefix);
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): ConfigInput {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] =
      v !== null && typeof v === 'object' && !Array.isArray(v) && cur !== null && typeof cur === 'object'
        ? deepMerge(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out as ConfigInput;
}
