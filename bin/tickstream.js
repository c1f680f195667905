#!/usr/bin/env node
// The installed command. It runs the compiled JavaScript (`npm run build` → dist/); nothing is transpiled at
// start and tsx is not needed at run time. In a development checkout without a build it falls back to the
// TypeScript sources through tsx (a devDependency), and says what to do when neither is there.
// After changing the sources, build again (or use `npm run tickstream -- <command>`, which runs the sources).
import { existsSync } from 'node:fs';
import { fileURLToPath, URL } from 'node:url';

const compiled = new URL('../dist/cli/main.js', import.meta.url);
if (existsSync(fileURLToPath(compiled))) {
  await import(compiled.href);
} else {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write('tickstream: not built: run `npm run build` in the checkout (it writes dist/)\n');
    process.exit(2);
  }
  register();
  await import('../cli/main.ts');
}
