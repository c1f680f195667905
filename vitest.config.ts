import { defineConfig } from 'vitest/config';

// Tiers as in the style guide: unit (no I/O) and int (real Redis / PostgreSQL, or real QuestDB/Kafka when
// their address is given). Integration files share one Redis and one PostgreSQL, so each test isolates itself
// with unique stream, group and table names instead of running serially.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/**/*.unit.test.ts'] } },
      { extends: true, test: { name: 'int', include: ['test/**/*.int.test.ts', 'test/**/*.e2e.test.ts'] } },
    ],
  },
});
