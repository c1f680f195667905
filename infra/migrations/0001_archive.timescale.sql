-- tickstream archive, version 1, TimescaleDB: the same trades and quotes tables as the plain variant, as
-- hypertables chunked by day on exchange time. Compression (segmented by symbol) is enabled here; the
-- compression and retention policies themselves are configuration (TICKSTREAM_PG_COMPRESS_AFTER,
-- TICKSTREAM_PG_RETENTION) and are applied by the migration runner after the versioned steps.
--
-- Identity and key: see 0001_archive.plain.sql. Compressed chunks keep the primary key enforced because every
-- key column is a segment-by or order-by column.

CREATE TABLE IF NOT EXISTS {{schema}}.archive_meta (
  key   text PRIMARY KEY,
  value text NOT NULL
);
INSERT INTO {{schema}}.archive_meta (key, value) VALUES ('mode', 'timescale') ON CONFLICT (key) DO NOTHING;

CREATE TABLE IF NOT EXISTS {{schema}}.trades (
  ts     timestamptz      NOT NULL,
  ts_ns  bigint           NOT NULL,
  source text COLLATE "C" NOT NULL,
  symbol text COLLATE "C" NOT NULL,
  seq    bigint           NOT NULL,
  venue  text COLLATE "C" NOT NULL DEFAULT '',
  price  numeric          NOT NULL,
  size   numeric          NOT NULL,
  side   text             NOT NULL DEFAULT '',
  CONSTRAINT trades_pkey PRIMARY KEY (ts, ts_ns, seq, source, symbol),
  CONSTRAINT trades_price_positive CHECK (price > 0),
  CONSTRAINT trades_size_nonnegative CHECK (size >= 0),
  CONSTRAINT trades_side_valid CHECK (side IN ('buy', 'sell', ''))
);
SELECT create_hypertable('{{schema}}.trades', 'ts', chunk_time_interval => interval '1 day', if_not_exists => true);
CREATE INDEX IF NOT EXISTS trades_symbol_ts ON {{schema}}.trades (symbol, ts);
ALTER TABLE {{schema}}.trades SET (
  timescaledb.compress,
  timescaledb.compress_segmentby = 'symbol',
  timescaledb.compress_orderby = 'ts, ts_ns, seq, source'
);

CREATE TABLE IF NOT EXISTS {{schema}}.quotes (
  ts        timestamptz      NOT NULL,
  ts_ns     bigint           NOT NULL,
  source    text COLLATE "C" NOT NULL,
  symbol    text COLLATE "C" NOT NULL,
  seq       bigint           NOT NULL,
  venue     text COLLATE "C" NOT NULL DEFAULT '',
  bid_price numeric          NOT NULL,
  bid_size  numeric          NOT NULL,
  ask_price numeric          NOT NULL,
  ask_size  numeric          NOT NULL,
  CONSTRAINT quotes_pkey PRIMARY KEY (ts, ts_ns, seq, source, symbol),
  CONSTRAINT quotes_prices_positive CHECK (bid_price > 0 AND ask_price > 0),
  CONSTRAINT quotes_sizes_nonnegative CHECK (bid_size >= 0 AND ask_size >= 0)
);
SELECT create_hypertable('{{schema}}.quotes', 'ts', chunk_time_interval => interval '1 day', if_not_exists => true);
CREATE INDEX IF NOT EXISTS quotes_symbol_ts ON {{schema}}.quotes (symbol, ts);
ALTER TABLE {{schema}}.quotes SET (
  timescaledb.compress,
  timescaledb.compress_segmentby = 'symbol',
  timescaledb.compress_orderby = 'ts, ts_ns, seq, source'
);
