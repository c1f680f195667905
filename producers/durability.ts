import type { Config } from '../shared/config.ts';
import { ConfigError, TickstreamError } from '../shared/errors.ts';
import type { Redis } from 'ioredis';
import { isCluster, type RedisClient } from '../shared/redis.ts';

/**
 * Producer durability (TICKSTREAM_PRODUCER_DURABILITY, docs/adr/0007-producer-durability.md).
 *
 * - `ack`: a tick counts as published when Redis answers its XADD. It is then in the server's memory only;
 *   with `appendfsync everysec` an OS crash can still lose up to about a second of acknowledged writes.
 * - `fsync`: after the XADDs, WAITAOF 1 0 waits until the server has fsynced them to its append-only file.
 *   Needs Redis 7.2 or newer with `appendonly yes`; the producer refuses to start otherwise.
 * - `replica`: after the XADDs, WAIT n waits until n replicas have acknowledged them.
 *
 * WAIT and WAITAOF cover every write made earlier on the same connection, so the publisher issues one after
 * a burst of XADDs has been answered (on each master under Cluster), and only then counts those ticks as
 * published; the file producer's summary and the Kafka bridge's offset commits follow that count.
 */
export type Durability = Config['producer']['durability'];
export type DurabilitySettings = Pick<
  Config['producer'],
  'durability' | 'durabilityReplicas' | 'durabilityTimeoutMs'
>;

/** WAITAOF appeared in Redis 7.2. */
export const WAITAOF_SINCE: readonly [number, number, number] = [7, 2, 0];

/** The connections a durability check or wait must go through: the one server, or every Cluster master. */
async function servers(redis: RedisClient): Promise<Redis[]> {
  if (!isCluster(redis)) return [redis];
  // Connects and learns the slot map, so that nodes() lists the masters the XADDs go to.
  await redis.call('PING');
  return redis.nodes('master');
}

function infoField(info: string, field: string): string | undefined {
  const m = new RegExp(`^${field}:(.*)$`, 'm').exec(info);
  return m?.[1]?.trim();
}

export function parseVersion(text: string): [number, number, number] {
  const [a = 0, b = 0, c = 0] = text.split('.').map((x) => Number.parseInt(x, 10) || 0);
  return [a, b, c];
}

export function versionAtLeast(v: readonly number[], min: readonly number[]): boolean {
  for (let i = 0; i < min.length; i++) {
    const x = v[i] ?? 0;
    const y = min[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}

/**
 * Fail fast, saying why, when the server cannot give the durability asked for: `fsync` on a Redis older than
 * 7.2 or without an append-only file, `replica` with fewer connected replicas than asked for.
 */
export async function checkDurability(redis: RedisClient, settings: DurabilitySettings): Promise<void> {
  if (settings.durability === 'ack') return;
  for (const server of await servers(redis)) {
    const where = `${server.options.host ?? '?'}:${server.options.port ?? '?'}`;
    if (settings.durability === 'fsync') {
      const info = String(await server.call('INFO', 'server'));
      const version = infoField(info, 'redis_version') ?? 'unknown';
      if (!versionAtLeast(parseVersion(version), WAITAOF_SINCE)) {
        throw new ConfigError(
          `TICKSTREAM_PRODUCER_DURABILITY=fsync needs WAITAOF, which Redis has from ${WAITAOF_SINCE.join('.')}; ` +
            `the server at ${where} is ${version}. Upgrade it, or use "replica" (WAIT) or "ack"`,
        );
      }
      const persistence = String(await server.call('INFO', 'persistence'));
      if (infoField(persistence, 'aof_enabled') !== '1') {
        throw new ConfigError(
          `TICKSTREAM_PRODUCER_DURABILITY=fsync needs the append-only file, and the server at ${where} runs ` +
            'without it (appendonly no)',
        );
      }
    } else {
      const info = String(await server.call('INFO', 'replication'));
      const connected = Number(infoField(info, 'connected_slaves') ?? '0');
      if (infoField(info, 'role') !== 'master') {
        throw new ConfigError(
          `TICKSTREAM_PRODUCER_DURABILITY=replica: the server at ${where} is not a primary (role ${infoField(info, 'role') ?? '?'})`,
        );
      }
      if (connected < settings.durabilityReplicas) {
        throw new ConfigError(
          `TICKSTREAM_PRODUCER_DURABILITY=replica waits for ${settings.durabilityReplicas} replica(s) ` +
            `(TICKSTREAM_PRODUCER_REPLICAS), and the server at ${where} has ${connected} connected`,
        );
      }
    }
  }
}

/**
 * Wait until every write made so far on `redis` is durable as `settings` asks. Rejects with a retriable error
 * when the server does not confirm within the timeout: the writes are in Redis, but not yet as durable as
 * promised, so whoever holds a position (a file offset, a Kafka offset) must not move it past them.
 */
export async function waitDurable(redis: RedisClient, settings: DurabilitySettings): Promise<void> {
  if (settings.durability === 'ack') return;
  const { durabilityTimeoutMs: timeout, durabilityReplicas: wanted } = settings;
  await Promise.all(
    (await servers(redis)).map(async (server) => {
      if (settings.durability === 'fsync') {
        const [local] = (await server.call('WAITAOF', '1', '0', String(timeout))) as [number, number];
        if (Number(local) < 1) {
          throw new TickstreamError(
            `Redis did not fsync the writes to its append-only file within ${timeout} ms`,
            { retriable: true },
          );
        }
      } else {
        const acked = Number(await server.call('WAIT', String(wanted), String(timeout)));
        if (acked < wanted) {
          throw new TickstreamError(
            `only ${acked} of ${wanted} replica(s) acknowledged the writes within ${timeout} ms`,
            { retriable: true },
          );
        }
      }
    }),
  );
}
