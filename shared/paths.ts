import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Files the processes read at run time (migrations, QuestDB DDL) live under the package root, which is one
 * level further up from the compiled output (dist/shared/) than from the sources (shared/): find it by its
 * package.json rather than by counting `..`.
 */
function findRoot(): { root: string; version: string } {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'tickstream') return { root: dir, version: pkg.version ?? 'unknown' };
    } catch {
      // no package.json here: one level up
    }
    dir = dirname(dir);
  }
  throw new Error(`cannot find tickstream's package.json above ${fileURLToPath(import.meta.url)}`);
}

const found = findRoot();

export const PACKAGE_VERSION = found.version;

/** A path under the package root, e.g. packagePath('infra', 'migrations'). */
export function packagePath(...parts: string[]): string {
  return join(found.root, ...parts);
}
