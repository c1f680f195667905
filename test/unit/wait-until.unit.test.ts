import { describe, expect, it } from 'vitest';
import { waitUntil } from '../helpers/index.ts';

describe('waitUntil (test helper)', () => {
  it("reports the check's last error, as message and cause, when it times out", async () => {
    const boom = new Error('connection refused (test)');
    const failure = await waitUntil(
      () => {
        throw boom;
      },
      'a check that throws',
      { timeoutMs: 50, intervalMs: 10 },
    ).catch((err: unknown) => err as Error);
    expect(failure.message).toBe(
      'timed out after 50 ms waiting for a check that throws; last error: Error: connection refused (test)',
    );
    expect(failure.cause).toBe(boom);
  });

  it('returns the first truthy value', async () => {
    let n = 0;
    expect(await waitUntil(() => (++n >= 3 ? n : 0), 'three calls', { intervalMs: 1 })).toBe(3);
  });
});
