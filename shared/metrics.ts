import { createServer, type Server } from 'node:http';

/**
 * Prometheus exposition for a process's counters and gauges, without a client library: the values live in
 * the components (worker stats, publisher stats) and are read when scraped.
 */
export interface Metric {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  /** One value per label set. */
  values: () => { labels?: Record<string, string>; value: number }[];
}

export function renderMetrics(metrics: readonly Metric[]): string {
  const lines: string[] = [];
  for (const m of metrics) {
    lines.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`);
    for (const v of m.values()) {
      const labels = Object.entries(v.labels ?? {})
        .map(([k, val]) => `${k}="${val.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
        .join(',');
      lines.push(`${m.name}${labels === '' ? '' : `{${labels}}`} ${v.value}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Serve GET /metrics on 127.0.0.1 or the given host. Resolves once listening. */
export async function serveMetrics(
  port: number,
  metrics: readonly Metric[],
  host = '0.0.0.0',
): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(renderMetrics(metrics));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return server;
}
