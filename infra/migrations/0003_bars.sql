-- tickstream bars and indicators (docs/bars-and-indicators.md), both modes. {{schema}} is the configured schema.
--
-- bars: one row per (symbol, timeframe, bucket start), open or closed. Every column is a commutative merge of
-- the bar's trades, so amendments by late trades and rebuilds give the same row whatever the order:
--   open/close = price of the first/last trade by (ts, seq, source); high/low = max/min;
--   volume, notional = exact sums (numeric); vwap = notional / volume, computed here so every path agrees.
-- bar_ledger: identities of the trades merged into bars. A trade already in the ledger is not merged again,
--   so a redelivered or replayed batch cannot double-count. Pruned behind the ledger horizon.
-- bar_clocks: per watermark key (symbol, or stream shard) the newest exchange time seen; bars whose end is at
--   or before max_ts minus the allowed lateness are closed.
-- bar_symbols: per symbol its newest trade time; the indicator jobs' list of active symbols.
-- indicators: one row per (symbol, timeframe, bar start). NULL means "not available yet", never NaN.

CREATE SEQUENCE IF NOT EXISTS {{schema}}.bars_rev;

CREATE TABLE IF NOT EXISTS {{schema}}.bars (
  symbol       text COLLATE "C" NOT NULL,
  tf           text             NOT NULL,
  start_ns     bigint           NOT NULL,
  tf_ns        bigint           NOT NULL,
  start_time   timestamptz      GENERATED ALWAYS AS (to_timestamp((start_ns / 1000)::double precision / 1e6)) STORED,
  open         double precision NOT NULL,
  high         double precision NOT NULL,
  low          double precision NOT NULL,
  close        double precision NOT NULL,
  open_ts      bigint           NOT NULL,
  open_seq     bigint           NOT NULL,
  open_source  text COLLATE "C" NOT NULL,
  close_ts     bigint           NOT NULL,
  close_seq    bigint           NOT NULL,
  close_source text COLLATE "C" NOT NULL,
  volume       numeric          NOT NULL,
  notional     numeric          NOT NULL,
  vwap         double precision GENERATED ALWAYS AS (
                 CASE WHEN volume > 0 THEN (notional / volume)::double precision END) STORED,
  trades       bigint           NOT NULL,
  late         bigint           NOT NULL DEFAULT 0,
  closed       boolean          NOT NULL DEFAULT false,
  wkey         text COLLATE "C" NOT NULL,
  rev          bigint           NOT NULL,
  updated_at   timestamptz      NOT NULL DEFAULT now(),
  CONSTRAINT bars_pkey PRIMARY KEY (symbol, tf, start_ns)
);
CREATE INDEX IF NOT EXISTS bars_open_by_clock ON {{schema}}.bars (wkey) WHERE NOT closed;
CREATE INDEX IF NOT EXISTS bars_by_start ON {{schema}}.bars (start_ns);

CREATE TABLE IF NOT EXISTS {{schema}}.bar_ledger (
  symbol text COLLATE "C" NOT NULL,
  ts     bigint           NOT NULL,
  seq    bigint           NOT NULL,
  source text COLLATE "C" NOT NULL,
  CONSTRAINT bar_ledger_pkey PRIMARY KEY (symbol, ts, seq, source)
);

CREATE TABLE IF NOT EXISTS {{schema}}.bar_clocks (
  wkey   text COLLATE "C" PRIMARY KEY,
  max_ts bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS {{schema}}.bar_symbols (
  symbol     text COLLATE "C" PRIMARY KEY,
  wkey       text COLLATE "C" NOT NULL,
  max_ts     bigint           NOT NULL,
  updated_at timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bar_symbols_by_update ON {{schema}}.bar_symbols (updated_at);

CREATE TABLE IF NOT EXISTS {{schema}}.indicators (
  symbol      text COLLATE "C" NOT NULL,
  tf          text             NOT NULL,
  start_ns    bigint           NOT NULL,
  start_time  timestamptz      GENERATED ALWAYS AS (to_timestamp((start_ns / 1000)::double precision / 1e6)) STORED,
  sma         double precision,
  ema         double precision,
  rsi         double precision,
  macd        double precision,
  macd_signal double precision,
  macd_hist   double precision,
  bb_upper    double precision,
  bb_middle   double precision,
  bb_lower    double precision,
  atr         double precision,
  vwap        double precision,
  -- 'ok' when every value is available, else 'warming_up' (too little history in the window).
  status      text             NOT NULL,
  -- Bars of the window that exist, and buckets filled by carrying the previous close (gaps).
  bars        integer          NOT NULL,
  filled      integer          NOT NULL,
  params      text             NOT NULL,
  computed_at timestamptz      NOT NULL DEFAULT now(),
  CONSTRAINT indicators_pkey PRIMARY KEY (symbol, tf, start_ns),
  CONSTRAINT indicators_status_valid CHECK (status IN ('ok', 'warming_up'))
);
