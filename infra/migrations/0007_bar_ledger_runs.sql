-- The bars ledger as runs (docs/adr/0015), both modes.
--
-- bar_ledger held one row per merged trade under a four-column primary key: at 1,000 symbols that index insert
-- was a third of the bars write path. bar_ledger_runs holds the same identities grouped: one row per
-- (symbol, source) per writer call per minute of exchange time (at most 4,096 identities), sorted, with the
-- first and last identity in columns. A writer asks which runs overlap the identity range of its batch (an
-- index range scan, bounded because a run never spans two minutes) and checks its trades one by one only
-- against those; in the steady state there are none. consumers/bars/ledger.ts is the only writer.
--
-- No primary key: a run is found by (symbol, source, last); two runs may overlap (a late trade's run inside a
-- live run's range), which the lookup handles.

CREATE TABLE IF NOT EXISTS {{schema}}.bar_ledger_runs (
  symbol    text COLLATE "C" NOT NULL,
  source    text COLLATE "C" NOT NULL,
  first_ts  bigint           NOT NULL,
  first_seq bigint           NOT NULL,
  last_ts   bigint           NOT NULL,
  last_seq  bigint           NOT NULL,
  ts        bigint[]         NOT NULL,
  seq       bigint[]         NOT NULL,
  CONSTRAINT bar_ledger_runs_one_minute CHECK (first_ts / 60000000000 = last_ts / 60000000000),
  CONSTRAINT bar_ledger_runs_shape CHECK (
    cardinality(ts) BETWEEN 1 AND 4096 AND cardinality(seq) = cardinality(ts)
    AND ts[1] = first_ts AND seq[1] = first_seq
    AND ts[cardinality(ts)] = last_ts AND seq[cardinality(seq)] = last_seq)
);
CREATE INDEX IF NOT EXISTS bar_ledger_runs_by_last
  ON {{schema}}.bar_ledger_runs (symbol, source, last_ts, last_seq);

-- What the per-trade ledger holds moves into runs, so nothing merged before is merged again.
INSERT INTO {{schema}}.bar_ledger_runs (symbol, source, first_ts, first_seq, last_ts, last_seq, ts, seq)
SELECT symbol, source, ts[1], seq[1], ts[cardinality(ts)], seq[cardinality(seq)], ts, seq
  FROM (SELECT symbol, source, array_agg(ts ORDER BY ts, seq) AS ts, array_agg(seq ORDER BY ts, seq) AS seq
          FROM (SELECT symbol, source, ts, seq, ts / 60000000000 AS minute,
                       (row_number() OVER (PARTITION BY symbol, source, ts / 60000000000 ORDER BY ts, seq) - 1)
                         / 4096 AS part
                  FROM {{schema}}.bar_ledger) AS numbered
         GROUP BY symbol, source, minute, part) AS grouped;

DROP TABLE IF EXISTS {{schema}}.bar_ledger;
