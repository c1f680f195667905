import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { buildProgram, runCli } from '../../cli/program.ts';
import { duration, formatDuration, positiveInt, positiveNumber } from '../../cli/runtime.ts';
import { parseSymbols } from '../../cli/commands/produce.ts';
import { ConfigError } from '../../shared/errors.ts';
import { PACKAGE_VERSION } from '../../shared/paths.ts';
import { archiveRange, parseBound, streamRange } from '../../consumers/replay.ts';

/**
 * The command line is parsed in-process: every case here fails (or prints) before a command connects to
 * anything. What the process would print and its exit code are captured.
 */
let out = '';
let err = '';
beforeEach(() => {
  out = '';
  err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
});
afterEach(() => {
  vi.restoreAllMocks();
  process.exitCode = undefined;
});

async function cli(...args: string[]): Promise<number> {
  await runCli(args);
  return Number(process.exitCode ?? 0);
}

describe('flag values go through the configuration error path (message, exit 2)', () => {
  it.each([
    [
      ['produce', 'synthetic', '--rate', 'abc'],
      /^tickstream: --rate must be a positive number \(got "abc"\)/,
    ],
    [['produce', 'synthetic', '--rate', '0'], /--rate must be a positive number \(got "0"\)/],
    [['produce', 'synthetic', '--count', '1.5'], /--count must be a positive whole number \(got "1.5"\)/],
    [['produce', 'synthetic', '--count', '0x10'], /--count must be a positive whole number/],
    [['produce', 'synthetic', '--count', '1e3'], /--count must be a positive whole number/],
    [['produce', 'synthetic', '--duration', '5 minutes'], /--duration must be a duration like/],
    [['replay', '--sink', 'quotes', '--page', '0'], /--page must be a positive whole number \(got "0"\)/],
    [['trim', '--max-len', '-1'], /--max-len must be a positive whole number \(got "-1"\)/],
    [['dlq', 'list', '--count', 'ten'], /--count must be a positive whole number/],
    [['demo', '--rate', '-5'], /--rate must be a positive number/],
  ])('%j', async (args, message) => {
    expect(await cli(...args)).toBe(2);
    expect(err).toMatch(message);
    expect(err).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('refuses --symbols 0 before connecting (it used to print the error and hang)', async () => {
    expect(await cli('produce', 'synthetic', '--symbols', '0')).toBe(2);
    expect(err).toMatch(/--symbols: between 1 and 100000 symbols \(got "0"\)/);
    expect(() => parseSymbols(' , ')).toThrow(ConfigError);
    expect(parseSymbols('3')).toEqual(['SYM0000', 'SYM0001', 'SYM0002']);
    expect(parseSymbols('AAPL, MSFT')).toEqual(['AAPL', 'MSFT']);
  });

  it('refuses a replay whose --from is after --to, before connecting', async () => {
    expect(await cli('replay', '--sink', 'quotes', '--from', '2026-11-02', '--to', '2026-11-01')).toBe(2);
    expect(err).toMatch(/--from is after --to/);
    expect(
      await cli(
        'replay',
        '--sink',
        'quotes',
        '--source',
        'postgres',
        '--from',
        '2026-11-02',
        '--to',
        '2026-11-02',
      ),
    ).toBe(2);
    expect(err).toMatch(/--from is not before --to/);
    expect(() => streamRange(parseBound('5-0', '--from'), parseBound('4-9', '--to'))).toThrow(/after --to/);
    expect(streamRange(parseBound('4-0', '--from'), parseBound('4-0', '--to'))).toEqual({
      from: '4-0',
      to: '4-0',
    });
    expect(archiveRange(parseBound('1000', '--from'), parseBound('2000', '--to'))).toEqual({
      from: 1_000_000_000n,
      to: 2_000_000_000n,
    });
  });

  it('refuses dlq requeue with both ids and --all, and names a malformed id', async () => {
    expect(await cli('dlq', 'requeue', '--all', '1764500000000-0')).toBe(2);
    expect(err).toMatch(/give dead-letter ids or --all, not both/);
    err = '';
    expect(await cli('dlq', 'requeue', 'not-an-id')).toBe(2);
    expect(err).toMatch(/"not-an-id" is not a dead-letter id: ids look like 1764500000000-0/);
    err = '';
    expect(await cli('dlq', 'requeue')).toBe(2);
    expect(err).toMatch(/give dead-letter ids, or --all/);
  });

  it('usage errors (unknown command or option, missing argument) exit 2 as well', async () => {
    expect(await cli('bogus')).toBe(2);
    expect(err).toMatch(/unknown command 'bogus'/);
    expect(await cli('status', '--nope')).toBe(2);
    expect(await cli('quote')).toBe(2);
    expect(err).toMatch(/missing required argument/);
  });
});

describe('flag parsers', () => {
  it('take plain decimal numbers only', () => {
    expect(positiveInt('--n')('42')).toBe(42);
    for (const bad of ['0', '-3', '1.5', '0x10', '1e3', '', ' ', 'abc', '9007199254740993']) {
      expect(() => positiveInt('--n')(bad), bad).toThrow(ConfigError);
    }
    expect(positiveNumber('--r')('2.5')).toBe(2.5);
    for (const bad of ['0', '-1', 'Infinity', '1e3', 'abc', '']) {
      expect(() => positiveNumber('--r')(bad), bad).toThrow(ConfigError);
    }
  });

  it('read durations in milliseconds, a bare number as seconds, and print them back the same way', () => {
    const d = duration('--duration');
    expect(d('500ms')).toBe(500);
    expect(d('5')).toBe(5000);
    expect(d('1.5s')).toBe(1500);
    expect(d('2m')).toBe(120_000);
    expect(() => d('0')).toThrow(/at least 1ms/);
    for (const ms of [5000, 1500, 120_000, 7_200_000, 250]) expect(d(formatDuration(ms))).toBe(ms);
  });

  it('demo --duration: the default shown by --help means what --duration would read', () => {
    const demo = buildProgram().commands.find((c) => c.name() === 'demo')!;
    const help = demo.helpInformation();
    const shown = /--duration <time>.*?\(default: ([^)]+)\)/.exec(help.replace(/\s+/g, ' '))?.[1];
    expect(shown).toBe('5s');
    expect(duration('--duration')(shown!)).toBe(demo.getOptionValue('duration'));
  });
});

describe('--version', () => {
  it('prints the package version and exits 0', async () => {
    expect(await cli('--version')).toBe(0);
    expect(out.trim()).toBe(PACKAGE_VERSION);
    expect(PACKAGE_VERSION).toMatch(/^\d+\.\d+\.\d+/);
  });
});
