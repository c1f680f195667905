-- Hot tables written by the QuestDB hot writer (consumers/sinks/questdb.ts), which runs these statements
-- through QuestDB's HTTP /exec endpoint every time it starts. They are idempotent (IF NOT EXISTS).
--
-- Placeholders filled in by the writer:
--   {{prefix}}  TICKSTREAM_QDB_TABLE_PREFIX (empty by default: tables `trades` and `quotes`)
--   {{ts}}      TIMESTAMP_NS on QuestDB 9.1 and later (nanoseconds, as the ticks carry them),
--               TIMESTAMP (microseconds) on older servers
--
-- `ts` is the exchange time and the designated timestamp. DEDUP UPSERT KEYS over the tick identity
-- (ts, source, symbol, seq) makes redelivery and replay store nothing twice; it needs a WAL table.

CREATE TABLE IF NOT EXISTS {{prefix}}trades (
  ts {{ts}},
  source SYMBOL CAPACITY 256 CACHE,
  symbol SYMBOL CAPACITY 16384 CACHE,
  venue SYMBOL CAPACITY 256 CACHE,
  seq LONG,
  price DOUBLE,
  size DOUBLE,
  side SYMBOL CAPACITY 4 CACHE
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, source, symbol, seq);

CREATE TABLE IF NOT EXISTS {{prefix}}quotes (
  ts {{ts}},
  source SYMBOL CAPACITY 256 CACHE,
  symbol SYMBOL CAPACITY 16384 CACHE,
  venue SYMBOL CAPACITY 256 CACHE,
  seq LONG,
  bid_price DOUBLE,
  bid_size DOUBLE,
  ask_price DOUBLE,
  ask_size DOUBLE
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, source, symbol, seq);
