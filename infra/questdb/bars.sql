-- Closed OHLCV bars, written by the bars sink's QuestDB outbox (consumers/bars/questdb.ts), which runs this
-- through QuestDB's HTTP /exec endpoint before its first write. Idempotent (IF NOT EXISTS).
--
-- Placeholder filled in by the writer:
--   {{prefix}}  TICKSTREAM_QDB_TABLE_PREFIX (empty by default: table `bars`)
--
-- `ts` is the bar's start and the designated timestamp. Bars start on whole seconds, so microseconds
-- (TIMESTAMP) lose nothing, on every server version. DEDUP UPSERT KEYS(ts, symbol, tf): a bar sent again
-- (an amendment by a late trade, a rebuild, a retry) replaces its row; `rev` says which revision it is.

CREATE TABLE IF NOT EXISTS {{prefix}}bars (
  ts TIMESTAMP,
  symbol SYMBOL CAPACITY 16384 CACHE,
  tf SYMBOL CAPACITY 8 CACHE,
  open DOUBLE,
  high DOUBLE,
  low DOUBLE,
  close DOUBLE,
  volume DOUBLE,
  vwap DOUBLE,
  trades LONG,
  late LONG,
  rev LONG
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, symbol, tf);
