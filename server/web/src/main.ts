import { getJson, Stream } from './api.ts';
import { Board } from './board.ts';
import { Chart, type Bar } from './chart.ts';
import { Pipeline } from './pipeline.ts';

/**
 * The dashboard: pipeline health from GET /v1/status, a live quote board and a chart fed by /v1/stream.
 * Symbols: ?symbols=A,B in the page URL, else the most recently traded ones (GET /v1/symbols).
 */
async function main(): Promise<void> {
  new Pipeline().start();
  const params = new URLSearchParams(location.search);
  const fromUrl = params
    .get('symbols')
    ?.split(',')
    .filter((s) => s !== '');
  const meta = await getJson<{ symbols: string[]; timeframes: string[]; indicatorTimeframes: string[] }>(
    '/v1/symbols?limit=20',
  );
  const symbols = fromUrl ?? meta.symbols;
  const board = new Board(symbols);
  const chart = new Chart(document.getElementById('chart')!, meta.indicatorTimeframes);
  const stream = new Stream();
  const conn = document.getElementById('conn')!;
  stream.onState = (open) => {
    conn.textContent = open ? 'live' : 'reconnecting';
    conn.className = `pill ${open ? 'ok' : 'bad'}`;
  };
  stream.onMessage = (m) => {
    if (m.type === 'quote' && m.data !== undefined) board.update(m.data as never);
    else if (m.type === 'bar' && m.data !== undefined) chart.push(m.data as unknown as Bar);
    else if (m.type === 'indicators' && m.data !== undefined)
      void chart.legend((m.data as { values: Record<string, number | null> }).values);
  };
  stream.connect();
  if (symbols.length > 0) stream.subscribe('quotes', symbols);

  const symbolSelect = document.getElementById('symbol') as HTMLSelectElement;
  const tfSelect = document.getElementById('tf') as HTMLSelectElement;
  for (const s of symbols) symbolSelect.add(new Option(s, s));
  for (const tf of meta.timeframes) tfSelect.add(new Option(tf, tf));
  tfSelect.value = params.get('tf') ?? (meta.timeframes.includes('1m') ? '1m' : (meta.timeframes[0] ?? '1m'));
  const select = async () => {
    if (chart.symbol !== '') {
      stream.unsubscribe('bars', [chart.symbol], chart.tf);
      if (meta.indicatorTimeframes.includes(chart.tf))
        stream.unsubscribe('indicators', [chart.symbol], chart.tf);
    }
    const symbol = symbolSelect.value;
    const tf = tfSelect.value;
    if (symbol === '') return;
    stream.subscribe('bars', [symbol], tf);
    if (meta.indicatorTimeframes.includes(tf)) stream.subscribe('indicators', [symbol], tf);
    try {
      await chart.load(symbol, tf);
    } catch {
      document.getElementById('legend')!.textContent = `no ${tf} bars for ${symbol} yet`;
    }
  };
  symbolSelect.onchange = () => void select();
  tfSelect.onchange = () => void select();
  await select();
  Object.assign(window, { tickstream: { chart, board } });
}

void main();
