-- tickstream archive, version 2, plain PostgreSQL: trades_1m, 1-minute OHLCV bars per (source, symbol).
-- A plain view computed on read, so that queries written for TimescaleDB's continuous aggregate of the same
-- name and columns also run here. Filter on the trades table's ts for large ranges (see docs/archive.md).

CREATE OR REPLACE VIEW {{schema}}.trades_1m AS
SELECT date_bin(interval '1 minute', ts, timestamptz '2000-01-01 00:00:00+00') AS bucket,
       source,
       symbol,
       (array_agg(price ORDER BY ts_ns, seq))[1]           AS open,
       max(price)                                          AS high,
       min(price)                                          AS low,
       (array_agg(price ORDER BY ts_ns DESC, seq DESC))[1] AS close,
       sum(size)                                           AS volume,
       count(*)                                            AS trades
  FROM {{schema}}.trades
 GROUP BY 1, 2, 3;
