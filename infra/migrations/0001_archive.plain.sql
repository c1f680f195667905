-- tickstream archive, version 1, plain PostgreSQL: trades and quotes range-partitioned by day on exchange
-- time. {{schema}} is the configured schema (a quoted identifier), {{schema_name}} the same as a string literal.
--
-- Identity: (source, symbol, ts_ns, seq). ts_ns is the exact exchange time in nanoseconds; ts is the same
-- instant truncated to the microsecond (timestamptz cannot hold more), used for partitioning and queries.
-- A unique key on a partitioned table must contain the partition key, so the primary key is
-- (ts, ts_ns, seq, source, symbol): ts is a function of ts_ns, so this is exactly unique on the identity, and
-- leading with time it is appended to in order and serves time-range scans in (ts, seq) order.

CREATE TABLE IF NOT EXISTS {{schema}}.archive_meta (
  key   text PRIMARY KEY,
  value text NOT NULL
);
INSERT INTO {{schema}}.archive_meta (key, value) VALUES ('mode', 'plain') ON CONFLICT (key) DO NOTHING;

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
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS trades_symbol_ts ON {{schema}}.trades (symbol, ts);

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
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS quotes_symbol_ts ON {{schema}}.quotes (symbol, ts);

-- One partition per UTC day, named <parent>_pYYYYMMDD. Safe to call from several writers at once: an
-- advisory lock serialises creators of the same partition, and losing a race anyway counts as "exists".
-- Call it in its own short transaction: creating a partition locks the parent table until commit.
CREATE OR REPLACE FUNCTION {{schema}}.ensure_day_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  part text := parent || '_p' || to_char(day, 'YYYYMMDD');
  lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
BEGIN
  IF to_regclass(format('%I.%I', {{schema_name}}, part)) IS NOT NULL THEN
    RETURN false;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('tickstream.partition'), hashtext({{schema_name}} || '.' || part));
  BEGIN
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                   {{schema_name}}, part, {{schema_name}}, parent, lo, lo + interval '1 day');
  EXCEPTION WHEN duplicate_table OR unique_violation THEN
    RETURN false;
  END;
  RETURN true;
END
$$;

-- Retention for plain PostgreSQL: drop the day partitions that end on or before the cutoff.
CREATE OR REPLACE FUNCTION {{schema}}.drop_day_partitions_before(parent text, cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  r record;
  dropped integer := 0;
BEGIN
  FOR r IN
    SELECT c.relname
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = format('%I.%I', {{schema_name}}, parent)::regclass
       AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
       AND to_date(right(c.relname, 8), 'YYYYMMDD') + 1 <= cutoff
  LOOP
    EXECUTE format('DROP TABLE %I.%I', {{schema_name}}, r.relname);
    dropped := dropped + 1;
  END LOOP;
  RETURN dropped;
END
$$;
