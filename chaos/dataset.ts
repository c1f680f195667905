import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import type { Quote, Tick } from '../shared/model.ts';
import { SyntheticMarket, symbolNames } from '../producers/synthetic.ts';

/**
 * The fault suite's data: a deterministic set of ticks (seeded synthetic market, fixed clock), written as CSV
 * files, one per phase, and the ground truth computed from the same ticks — what every store must hold once the
 * pipeline has drained, whatever faults it went through.
 */
export const SOURCE = 'chaos';
/** 2026-01-05T14:30:00Z: a fixed start, so the same seed always gives the same file. */
export const START_NS = 1_767_623_400_000_000_000n;
/** Exchange time between consecutive ticks: 300k ticks span 25 minutes, well inside the bars' ledger horizon. */
export const STEP_NS = 5_000_000n;
const MINUTE_NS = 60_000_000_000n;
/** Prices and sizes are compared exactly as decimals scaled by 10^SCALE. */
const SCALE = 8;

export function generate(ticks: number, symbols: number, seed: number): Tick[] {
  let now = START_NS - STEP_NS;
  const market = new SyntheticMarket({
    symbols: symbolNames(symbols),
    seed,
    source: SOURCE,
    clock: () => (now += STEP_NS),
  });
  const out: Tick[] = [];
  for (let i = 0; i < ticks; i++) out.push(...market.next(1));
  return out;
}

const HEADER = 'type,source,symbol,ts,seq,venue,price,size,side,bid_price,bid_size,ask_price,ask_size';

function csvLine(t: Tick): string {
  return t.type === 'trade'
    ? `trade,${t.source},${t.symbol},${t.ts},${t.seq},${t.venue},${t.price},${t.size},${t.side},,,,`
    : `quote,${t.source},${t.symbol},${t.ts},${t.seq},${t.venue},,,,${t.bidPrice},${t.bidSize},${t.askPrice},${t.askSize}`;
}

/** Write `parts` consecutive slices of `ticks` to dir/part-N.csv; returns each file with its ticks. */
export async function writeParts(
  dir: string,
  ticks: readonly Tick[],
  parts: number,
): Promise<{ path: string; ticks: readonly Tick[] }[]> {
  const out: { path: string; ticks: readonly Tick[] }[] = [];
  const size = Math.ceil(ticks.length / parts);
  for (let p = 0; p < parts; p++) {
    const slice = ticks.slice(p * size, (p + 1) * size);
    const path = join(dir, `part-${p + 1}.csv`);
    const w = createWriteStream(path);
    w.write(`${HEADER}\n`);
    for (const t of slice) if (!w.write(`${csvLine(t)}\n`)) await once(w, 'drain');
    w.end();
    await once(w, 'finish');
    out.push({ path, ticks: slice });
  }
  return out;
}

/** A decimal's exact value × 10^scale. Numbers print as their shortest round-trip decimal. */
export function scaled(value: number | string, scale = SCALE): bigint {
  const text = typeof value === 'number' ? String(value) : value;
  if (/e/i.test(text)) throw new RangeError(`cannot scale ${text} exactly`);
  const negative = text.startsWith('-');
  const [int = '0', frac = ''] = (negative ? text.slice(1) : text).split('.');
  const digits = BigInt(int + frac.padEnd(scale, '0').slice(0, scale));
  if (frac.length > scale && /[1-9]/.test(frac.slice(scale)))
    throw new RangeError(`${text}: too many decimals`);
  return negative ? -digits : digits;
}

export interface Truth {
  trades: number;
  quotes: number;
  /** Σ price × size per symbol, scaled by 10^(2·SCALE). */
  notional: Map<string, bigint>;
  /** 1-minute bar volume per "symbol|bucket start ns", scaled by 10^SCALE. */
  barVolume: Map<string, bigint>;
  /** Trades per 1-minute bar. */
  barTrades: Map<string, number>;
  /** The newest quote per symbol by (ts, seq). */
  lastQuote: Map<string, Quote>;
}

export function truthOf(ticks: Iterable<Tick>): Truth {
  const t: Truth = {
    trades: 0,
    quotes: 0,
    notional: new Map(),
    barVolume: new Map(),
    barTrades: new Map(),
    lastQuote: new Map(),
  };
  for (const x of ticks) {
    if (x.type === 'trade') {
      t.trades++;
      t.notional.set(x.symbol, (t.notional.get(x.symbol) ?? 0n) + scaled(x.price) * scaled(x.size));
      const bar = `${x.symbol}|${(x.ts / MINUTE_NS) * MINUTE_NS}`;
      t.barVolume.set(bar, (t.barVolume.get(bar) ?? 0n) + scaled(x.size));
      t.barTrades.set(bar, (t.barTrades.get(bar) ?? 0) + 1);
    } else {
      t.quotes++;
      const cur = t.lastQuote.get(x.symbol);
      if (cur === undefined || x.ts > cur.ts || (x.ts === cur.ts && x.seq > cur.seq))
        t.lastQuote.set(x.symbol, x);
    }
  }
  return t;
}
