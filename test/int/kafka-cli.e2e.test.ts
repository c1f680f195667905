import { describe, expect, it } from 'vitest';
import { REDIS_URL } from '../helpers/index.ts';
import { runCli } from '../helpers/cli.ts';

describe('tickstream bridge without KAFKA_BROKERS (processes)', () => {
  it('both directions refuse to start, name KAFKA_BROKERS, exit 2 and open nothing that would hang', async () => {
    for (const direction of ['kafka-to-redis', 'redis-to-kafka']) {
      const r = await runCli(['bridge', direction], { REDIS_URL }, 30_000);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/the Kafka bridge is off: set KAFKA_BROKERS/);
    }
    const viaConsume = await runCli(['consume', 'kafka'], { REDIS_URL }, 30_000);
    expect(viaConsume.code).toBe(2);
    expect(viaConsume.stderr).toMatch(/KAFKA_BROKERS/);
  });

  it('refuses a mirror topic that the ingest side reads (a copy loop)', async () => {
    const r = await runCli(
      ['bridge', 'redis-to-kafka'],
      { REDIS_URL, KAFKA_BROKERS: '127.0.0.1:9', KAFKA_TOPICS: 'a,b', KAFKA_MIRROR_TOPIC: 'b' },
      30_000,
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/KAFKA_MIRROR_TOPIC "b" is also in KAFKA_TOPICS/);
  });
});
