/** The dashboard's only link to the server: the public REST API and the /v1/stream WebSocket. */
export async function getJson<T>(path: string): Promise<T> {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return (await r.json()) as T;
}

export interface StreamMessage {
  type: string;
  data?: Record<string, unknown>;
}

/** A WebSocket that reconnects and re-sends its subscriptions. */
export class Stream {
  private ws: WebSocket | undefined;
  private readonly subs = new Map<string, object>();
  onMessage: (m: StreamMessage) => void = () => undefined;
  onState: (open: boolean) => void = () => undefined;

  connect(): void {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/stream`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.onState(true);
      for (const s of this.subs.values()) ws.send(JSON.stringify(s));
    };
    ws.onmessage = (e) => this.onMessage(JSON.parse(String(e.data)) as StreamMessage);
    ws.onclose = () => {
      this.onState(false);
      setTimeout(() => this.connect(), 1000);
    };
  }

  subscribe(channel: string, symbols: string[], tf?: string): void {
    const msg = { op: 'subscribe', channel, symbols, ...(tf === undefined ? {} : { tf }) };
    this.subs.set(`${channel}:${tf ?? ''}:${symbols.join(',')}`, msg);
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  unsubscribe(channel: string, symbols: string[], tf?: string): void {
    this.subs.delete(`${channel}:${tf ?? ''}:${symbols.join(',')}`);
    const msg = { op: 'unsubscribe', channel, symbols, ...(tf === undefined ? {} : { tf }) };
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }
}

/** Text into a table cell (never HTML: symbols and reasons come from data). */
export function row(cells: (string | number)[]): HTMLTableRowElement {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = String(c);
    tr.append(td);
  }
  return tr;
}

export function fmtMs(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}
