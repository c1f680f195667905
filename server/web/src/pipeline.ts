import { fmtMs, getJson, row } from './api.ts';

interface Status {
  at: number;
  shards: {
    stream: string;
    length: number;
    entriesAdded: number | null;
    groups: {
      group: string;
      lag: number | null;
      pending: number;
      entriesRead: number | null;
      consumers: { name: string; pending: number; idleMs: number }[];
    }[];
  }[];
  deadLetters: { total: number };
  deadLetterNewest: { id: string; group: string; reason: string }[];
  stores: Record<string, { ok: boolean; ms?: number; error?: string; configured?: boolean }>;
}

/** Throughput, lag, pending, consumers, dead letters and store state, from GET /v1/status every 2 s. */
export class Pipeline {
  private prev: Status | undefined;

  start(): void {
    void this.tick();
    setInterval(() => void this.tick(), 2000);
  }

  private async tick(): Promise<void> {
    let s: Status;
    try {
      s = await getJson<Status>('/v1/status');
    } catch {
      return;
    }
    const dt = this.prev === undefined ? 0 : (s.at - this.prev.at) / 1000;
    const rate = (now: number | null, before: number | null | undefined) =>
      dt > 0 && now !== null && before !== null && before !== undefined
        ? Math.max(0, Math.round((now - before) / dt))
        : '-';

    const shards = document.querySelector('#shards tbody')!;
    const groups = document.querySelector('#groups tbody')!;
    const consumers = document.querySelector('#consumers tbody')!;
    shards.replaceChildren(
      ...s.shards.map((sh) => {
        const before = this.prev?.shards.find((p) => p.stream === sh.stream);
        return row([sh.stream, sh.length, rate(sh.entriesAdded, before?.entriesAdded)]);
      }),
    );
    groups.replaceChildren(
      ...s.shards.flatMap((sh) =>
        sh.groups.map((g) => {
          const before = this.prev?.shards
            .find((p) => p.stream === sh.stream)
            ?.groups.find((x) => x.group === g.group);
          const tr = row([
            g.group,
            sh.stream,
            rate(g.entriesRead, before?.entriesRead),
            g.lag ?? '?',
            g.pending,
            g.consumers.length,
            fmtMs(Math.max(0, ...g.consumers.map((c) => c.idleMs))),
          ]);
          tr.dataset.group = g.group;
          return tr;
        }),
      ),
    );
    consumers.replaceChildren(
      ...s.shards.flatMap((sh) =>
        sh.groups.flatMap((g) => g.consumers.map((c) => row([g.group, c.name, c.pending, fmtMs(c.idleMs)]))),
      ),
    );
    document.getElementById('dlq-total')!.textContent = String(s.deadLetters.total);
    document.getElementById('dlq')!.replaceChildren(
      ...s.deadLetterNewest.map((d) => {
        const li = document.createElement('li');
        li.textContent = `${d.group}: ${d.reason}`;
        return li;
      }),
    );
    document.getElementById('stores')!.replaceChildren(
      ...Object.entries(s.stores)
        .filter(([, st]) => st.configured !== false)
        .map(([name, st]) => {
          const span = document.createElement('span');
          span.className = `pill ${st.ok ? 'ok' : 'bad'}`;
          span.textContent = st.ok ? `${name} ${st.ms === undefined ? 'ok' : `${st.ms} ms`}` : `${name} down`;
          if (st.error !== undefined) span.title = st.error;
          return span;
        }),
    );
    this.prev = s;
  }
}
