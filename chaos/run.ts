import { parseArgs } from 'node:util';
import { ALL_FAULTS, formatRows, runChaos, type Fault } from './suite.ts';

/**
 * `npm run chaos [-- --ticks N --kills N --faults a,b --seed N --short]`: the fault suite (docs/chaos.md).
 * Prints one row per fault and exits 1 when any store differs from the ground truth.
 */
const { values } = parseArgs({
  options: {
    ticks: { type: 'string', default: '300000' },
    symbols: { type: 'string', default: '40' },
    seed: { type: 'string', default: '7' },
    kills: { type: 'string', default: '20' },
    faults: { type: 'string', default: ALL_FAULTS.join(',') },
    'pg-down': { type: 'string', default: '10' },
    short: { type: 'boolean', default: false },
  },
});

function positive(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) {
    process.stderr.write(`chaos: --${name} must be a positive integer (got "${text}")\n`);
    process.exit(2);
  }
  return n;
}

const faults = values.faults.split(',').map((f) => f.trim()) as Fault[];
const unknown = faults.filter((f) => !ALL_FAULTS.includes(f));
if (unknown.length > 0) {
  process.stderr.write(
    `chaos: unknown fault(s) ${unknown.join(', ')}; choose from ${ALL_FAULTS.join(', ')}\n`,
  );
  process.exit(2);
}

const short = values.short;
const started = Date.now();
const rows = await runChaos({
  ticks: short ? 30_000 : positive('ticks', values.ticks),
  symbols: positive('symbols', values.symbols),
  seed: positive('seed', values.seed),
  faults: short ? ['consumer-kills', 'redis-restart', 'poison'] : faults,
  consumerKills: short ? 4 : positive('kills', values.kills),
  postgresDownMs: positive('pg-down', values['pg-down']) * 1000,
  perSink: 2,
  drainTimeoutMs: 180_000,
  say: (line) => process.stderr.write(`${line}\n`),
});

process.stdout.write(`${formatRows(rows)}\n`);
for (const r of rows) for (const p of r.problems) process.stdout.write(`  ${r.fault}: ${p}\n`);
const failed = rows.some((r) => r.problems.length > 0 || r.duplicates > 0);
process.stdout.write(
  `${failed ? 'FAILED' : 'passed'}: ${rows.length} fault phase(s) in ${((Date.now() - started) / 1000).toFixed(0)} s\n`,
);
process.exitCode = failed ? 1 : 0;
