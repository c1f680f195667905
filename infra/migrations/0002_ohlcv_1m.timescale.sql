-- tickstream archive, version 2, TimescaleDB: trades_1m, a continuous aggregate of 1-minute OHLCV bars per
-- (source, symbol), refreshed every minute over the last 3 hours; real-time aggregation adds the minutes not
-- materialised yet. Bars for older minutes changed by a backfill are refreshed by
-- CALL refresh_continuous_aggregate('<schema>.trades_1m', <from>, <to>) (docs/archive.md).
-- WITH NO DATA: a continuous aggregate created with data cannot be created inside the migration transaction.

CREATE MATERIALIZED VIEW IF NOT EXISTS {{schema}}.trades_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 minute', ts) AS bucket,
       source,
       symbol,
       first(price, ts_ns) AS open,
       max(price)          AS high,
       min(price)          AS low,
       last(price, ts_ns)  AS close,
       sum(size)           AS volume,
       count(*)            AS trades
  FROM {{schema}}.trades
 GROUP BY bucket, source, symbol
WITH NO DATA;

SELECT add_continuous_aggregate_policy('{{schema}}.trades_1m',
  start_offset => interval '3 hours',
  end_offset => interval '1 minute',
  schedule_interval => interval '1 minute',
  if_not_exists => true);
