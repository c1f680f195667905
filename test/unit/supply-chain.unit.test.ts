import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

/** Static checks of how tickstream is installed, run and shipped (no build, no network). */
const root = join(import.meta.dirname, '..', '..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');

function sources(dir: string): string[] {
  return readdirSync(join(root, dir)).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(join(root, path)).isDirectory()) return sources(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

describe('supply chain', () => {
  it('needs no TypeScript tooling at run time: tsx is a devDependency and no shipped source imports it', () => {
    const pkg = JSON.parse(read('package.json')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
      bin: Record<string, string>;
      scripts: Record<string, string>;
    };
    expect(pkg.dependencies).not.toHaveProperty('tsx');
    expect(pkg.dependencies).not.toHaveProperty('typescript');
    expect(pkg.devDependencies).toHaveProperty('tsx');
    expect(pkg.bin).toEqual({ tickstream: './bin/tickstream.js' });
    expect(pkg.scripts.build).toMatch(/tsc -p tsconfig\.build\.json/);
    for (const file of ['shared', 'producers', 'consumers', 'cli'].flatMap(sources)) {
      expect(read(file), file).not.toMatch(/from ['"]tsx|import\(['"]tsx/);
    }
  });

  it('the installed command runs the compiled output, and only falls back to tsx in a checkout without it', () => {
    const bin = read('bin/tickstream.js');
    const compiled = bin.indexOf('../dist/cli/main.js');
    const fallback = bin.indexOf("import('tsx/esm/api')");
    expect(compiled).toBeGreaterThan(0);
    expect(fallback).toBeGreaterThan(compiled);
    expect(bin).toMatch(/npm run build/);
  });

  it('the image builds dist/ and runs it, with run-time dependencies only', () => {
    const dockerfile = read('Dockerfile');
    const stages = dockerfile.split(/^FROM /m).slice(1);
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const final = stages[stages.length - 1]!;
    expect(dockerfile).toMatch(/^RUN npm run build$/m);
    expect(final).toMatch(/^COPY --from=\w+ \/app\/dist \.\/dist$/m);
    expect(final).toMatch(/^COPY --from=\w+ \/app\/node_modules \.\/node_modules$/m);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    // The final image holds no TypeScript sources: only bin/, dist/ and infra/.
    for (const dir of ['shared', 'producers', 'consumers', 'cli']) {
      expect(final, dir).not.toMatch(new RegExp(`^COPY ${dir} `, 'm'));
    }
    expect(final).toMatch(/^CMD \["node", "bin\/tickstream\.js"/m);
  });

  it('the docs never tell anyone to run a bare `npx tickstream` (an unclaimed registry name)', () => {
    const docs = [
      'README.md',
      ...readdirSync(join(root, 'docs'))
        .filter((f) => f.endsWith('.md'))
        .map((f) => `docs/${f}`),
    ];
    for (const doc of docs) {
      for (const line of read(doc).split('\n')) {
        if (/npx tickstream/.test(line))
          expect(line, `${doc}: ${line}`).toMatch(/Never run a bare `npx tickstream`/);
      }
    }
    expect(read('README.md')).toMatch(/npm link/);
    expect(read('README.md')).toMatch(/npx --no-install tickstream/);
  });

  it('CI audits the run-time dependencies and tolerates an advisory service that does not answer', () => {
    const ci = read('.ci/run');
    expect(ci).toMatch(/npm audit --omit=dev/);
    expect(ci).toMatch(/audit endpoint returned an error/);
    expect(ci).toMatch(/skipped: the advisory service did not answer/);
  });
});
