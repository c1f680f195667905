import { row } from './api.ts';

interface Quote {
  symbol: string;
  bid: number | null;
  ask: number | null;
  last: number | null;
  last_size: number | null;
  updated_at: number;
}

/** The live quote board: one row per symbol, a cell flashes green or red when its value moves. */
export class Board {
  private readonly rows = new Map<string, HTMLTableRowElement>();
  private readonly last = new Map<string, Quote>();

  constructor(symbols: string[]) {
    const body = document.querySelector('#board tbody')!;
    for (const s of symbols) {
      const tr = row([s, '-', '-', '-', '-', '-']);
      tr.dataset.symbol = s;
      this.rows.set(s, tr);
      body.append(tr);
    }
    setInterval(() => this.ages(), 1000);
  }

  update(q: Quote): void {
    const tr = this.rows.get(q.symbol);
    if (tr === undefined) return;
    const prev = this.last.get(q.symbol);
    this.last.set(q.symbol, q);
    const cells = tr.children;
    this.set(cells[1] as HTMLElement, q.bid, prev?.bid);
    this.set(cells[2] as HTMLElement, q.ask, prev?.ask);
    this.set(cells[3] as HTMLElement, q.last, prev?.last);
    (cells[4] as HTMLElement).textContent = q.last_size === null ? '-' : String(q.last_size);
    (cells[5] as HTMLElement).textContent = `${Math.max(0, Date.now() - q.updated_at)} ms`;
  }

  private set(td: HTMLElement, v: number | null, before: number | null | undefined): void {
    td.textContent = v === null ? '-' : String(v);
    if (v === null || before === null || before === undefined || v === before) return;
    td.classList.remove('flash-up', 'flash-down');
    // Restart the animation: reading layout between the class changes makes the browser replay it.
    void td.offsetWidth;
    td.classList.add(v > before ? 'flash-up' : 'flash-down');
  }

  private ages(): void {
    for (const [s, q] of this.last) {
      const cell = this.rows.get(s)?.children[5] as HTMLElement | undefined;
      if (cell !== undefined) cell.textContent = `${Math.max(0, Date.now() - q.updated_at)} ms`;
    }
  }
}
