import { describe, expect, it } from 'vitest';
import {
  parseVersion,
  preloadListHas,
  timescaleDecision,
  timescaleVersionProblem,
} from '../../shared/schema/migrate.ts';

describe('TimescaleDB version check (timescale/timescaledb#7672)', () => {
  it('parses extension versions, with or without a patch number or a suffix', () => {
    expect(parseVersion('2.17.2')).toEqual([2, 17, 2]);
    expect(parseVersion('2.18.0-dev')).toEqual([2, 18, 0]);
    expect(parseVersion(' 2.9 ')).toEqual([2, 9, 0]);
    expect(parseVersion('nightly')).toBeUndefined();
  });

  it('refuses exactly 2.16.0 to 2.18.0, naming the fix', () => {
    for (const bad of ['2.16.0', '2.16.1', '2.17.0', '2.17.2', '2.18.0', '2.18.0-rc1']) {
      expect(timescaleVersionProblem(bad), bad).toMatch(/upgrade the extension to 2\.18\.1 or later/);
      expect(timescaleVersionProblem(bad)).toContain(`TimescaleDB ${bad}`);
    }
    for (const good of ['2.11.0', '2.15.3', '2.18.1', '2.18.2', '2.19.0', '2.22.1', '3.0.0', 'unknown']) {
      expect(timescaleVersionProblem(good), good).toBeUndefined();
    }
  });
});

describe('shared_preload_libraries', () => {
  it('finds timescaledb in the list however it is written', () => {
    expect(preloadListHas('timescaledb', 'timescaledb')).toBe(true);
    expect(preloadListHas('pg_stat_statements, timescaledb', 'timescaledb')).toBe(true);
    expect(preloadListHas('"timescaledb"', 'timescaledb')).toBe(true);
    expect(preloadListHas('$libdir/timescaledb.so', 'timescaledb')).toBe(true);
    expect(preloadListHas('', 'timescaledb')).toBe(false);
    expect(preloadListHas('pg_stat_statements', 'timescaledb')).toBe(false);
    expect(preloadListHas('timescaledb_toolkit', 'timescaledb')).toBe(false);
  });
});

describe('choosing the archive mode', () => {
  const base = { installed: false, available: true, preloaded: true as boolean | undefined };

  it('available but not preloaded: auto falls back to plain saying why, on fails naming postgresql.conf', () => {
    const auto = timescaleDecision({ ...base, wanted: 'auto', preloaded: false });
    expect(auto).toMatchObject({ kind: 'plain' });
    expect(auto.kind === 'plain' && auto.reason).toMatch(/not in shared_preload_libraries/);
    const on = timescaleDecision({ ...base, wanted: 'on', preloaded: false });
    expect(on).toMatchObject({ kind: 'error' });
    expect(on.kind === 'error' && on.message).toMatch(
      /shared_preload_libraries = 'timescaledb'.*postgresql\.conf|postgresql\.conf.*shared_preload_libraries/,
    );
  });

  it('installed but the library no longer preloaded: never used as TimescaleDB (every query would fail)', () => {
    expect(timescaleDecision({ ...base, installed: true, wanted: 'auto', preloaded: false })).toMatchObject({
      kind: 'plain',
    });
    expect(timescaleDecision({ ...base, installed: true, wanted: 'on', preloaded: false })).toMatchObject({
      kind: 'error',
    });
    expect(timescaleDecision({ ...base, installed: true, wanted: 'auto' })).toEqual({ kind: 'timescale' });
  });

  it('available and preloaded: create the extension; not available: plain, or an error for on', () => {
    expect(timescaleDecision({ ...base, wanted: 'auto' })).toEqual({ kind: 'create' });
    expect(timescaleDecision({ ...base, available: false, wanted: 'auto' })).toEqual({ kind: 'plain' });
    expect(timescaleDecision({ ...base, available: false, wanted: 'on' })).toMatchObject({
      kind: 'error',
      message: expect.stringMatching(/not available on this server/),
    });
  });

  it('preload setting unreadable: auto stays plain and says how to force it; on tries', () => {
    const auto = timescaleDecision({ ...base, wanted: 'auto', preloaded: undefined });
    expect(auto.kind === 'plain' && auto.reason).toMatch(/TICKSTREAM_PG_TIMESCALE=on/);
    expect(timescaleDecision({ ...base, wanted: 'on', preloaded: undefined })).toEqual({ kind: 'create' });
  });
});
