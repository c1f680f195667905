-- Example queries on the hot tables (docs/questdb.md, README "Query your data").
-- Paste them into the SQL console at http://localhost:9000, run them with `tickstream sql "..."`, or through
-- psql on port 8812. test/int/questdb-real.int.test.ts runs every statement here against a real server.

-- Latest quote per symbol.
SELECT ts, symbol, bid_price, bid_size, ask_price, ask_size
FROM quotes
LATEST ON ts PARTITION BY symbol;

-- 1-minute OHLCV bars per symbol for the last hour.
SELECT ts, symbol,
  first(price) AS open, max(price) AS high, min(price) AS low, last(price) AS close,
  sum(size) AS volume, count() AS trades
FROM trades
WHERE ts > dateadd('h', -1, now())
SAMPLE BY 1m ALIGN TO CALENDAR;

-- VWAP and volume per symbol over the last hour.
SELECT symbol, sum(price * size) / sum(size) AS vwap, sum(size) AS volume, count() AS trades
FROM trades
WHERE ts > dateadd('h', -1, now());

-- Spread statistics per symbol over the last hour, widest first (bps of the mid price).
SELECT symbol,
  avg(ask_price - bid_price) AS avg_spread,
  min(ask_price - bid_price) AS min_spread,
  max(ask_price - bid_price) AS max_spread,
  avg((ask_price - bid_price) / ((ask_price + bid_price) / 2) * 10000) AS avg_spread_bps,
  count() AS quotes
FROM quotes
WHERE ts > dateadd('h', -1, now())
ORDER BY avg_spread_bps DESC;

-- Each recent trade with the quote in force at that moment.
SELECT t.ts, t.symbol, t.price, t.size, q.bid_price, q.ask_price
FROM trades t ASOF JOIN quotes q ON (symbol)
WHERE t.ts > dateadd('m', -5, now())
LIMIT 20;
