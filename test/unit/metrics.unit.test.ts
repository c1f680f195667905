import { describe, expect, it } from 'vitest';
import { renderMetrics, serveMetrics } from '../../shared/metrics.ts';

describe('metrics', () => {
  it('renders Prometheus text with escaped labels', () => {
    const text = renderMetrics([
      {
        name: 'tickstream_ticks_total',
        help: 'Ticks written',
        type: 'counter',
        values: () => [{ labels: { group: 'quo"tes' }, value: 42 }],
      },
    ]);
    expect(text).toBe(
      '# HELP tickstream_ticks_total Ticks written\n# TYPE tickstream_ticks_total counter\ntickstream_ticks_total{group="quo\\"tes"} 42\n',
    );
  });

  it('serves the current values on /metrics', async () => {
    let n = 1;
    const server = await serveMetrics(
      0,
      [{ name: 'x', help: 'x', type: 'gauge', values: () => [{ value: n }] }],
      '127.0.0.1',
    );
    const addr = server.address();
    const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
    n = 7;
    const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(body).toContain('x 7');
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    server.close();
  });
});
