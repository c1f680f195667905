-- Indicators that carry their state (docs/bars-and-indicators.md, "Indicators"), both modes.
--
-- indicators.state: what EMA, RSI (Wilder), MACD (its two EMAs and the signal EMA) and ATR need to continue
--   the series at the next bucket, as JSON text with the doubles in shortest round-trip form (exact): the next
--   bar's row is O(1) work from this one and equals TA-Lib over the symbol's whole history. Also the series'
--   length in buckets. NULL (rows written before this version) means "no usable state": the series is
--   recomputed from its first bar.
-- indicator_dirty: per (symbol, timeframe) the earliest bar whose indicator row, and every later one, must be
--   recomputed: a late trade amended a closed bar, or a rebuild replaced bars. Written in the bars transaction
--   that changed the bar; cleared by the indicator job that recomputed the rows, only if `rev` is still the one
--   it read (an amendment meanwhile keeps the marker).

ALTER TABLE {{schema}}.indicators ADD COLUMN IF NOT EXISTS state text;

CREATE SEQUENCE IF NOT EXISTS {{schema}}.indicator_dirty_rev;

CREATE TABLE IF NOT EXISTS {{schema}}.indicator_dirty (
  symbol  text COLLATE "C" NOT NULL,
  tf      text             NOT NULL,
  from_ns bigint           NOT NULL,
  rev     bigint           NOT NULL,
  CONSTRAINT indicator_dirty_pkey PRIMARY KEY (symbol, tf)
);
