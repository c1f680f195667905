import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import semver from 'semver';

// The brief pins Node 20.19 as the floor; npm only warns on an engines mismatch, so a dependency bump that
// quietly requires Node 22 would land unnoticed without this check. Optional packages are platform builds
// npm skips when they do not fit.
describe('package-lock.json', () => {
  it('holds no installed package whose engines reject the Node version package.json promises', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { engines: { node: string } };
    const floor = semver.minVersion(pkg.engines.node)?.version;
    expect(floor).toBe('20.19.0');
    const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as {
      packages: Record<string, { engines?: { node?: string } | string[]; optional?: boolean }>;
    };
    const rejecting = Object.entries(lock.packages)
      .filter(([path, entry]) => {
        const node = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
        return (
          path !== '' && entry.optional !== true && node !== undefined && !semver.satisfies(floor!, node)
        );
      })
      .map(([path, entry]) => `${path} wants node ${JSON.stringify(entry.engines)}`);
    expect(rejecting).toEqual([]);
  });
});
