-- Bar updates without index writes (docs/adr/0009, "HOT updates"), both modes.
--
-- An open bar is updated by every flush that has one of its trades: at 1,000 symbols and four timeframes that
-- is about 4,000 row updates per flush, the largest cost of the bars write path. PostgreSQL can update a row
-- in place on its page (a heap-only tuple: no new index entries, dead versions pruned with the page) only when
-- no indexed column changes and the page has room. 0004's outbox index was keyed on `rev`, which every change
-- takes, so no update qualified.
--
-- The outbox is now "closed AND qdb_synced_rev IS NULL": a push still marks a bar with the revision QuestDB
-- confirmed (only if it is still the bar's revision), and every change of a bar sets qdb_synced_rev back to
-- NULL in the same statement, so an amended or re-closed bar is in the outbox from the moment it commits. An
-- open bar's qdb_synced_rev is NULL before and after its update, so its updates change no indexed column. The
-- index is keyed on start_ns: a push sends the oldest bars first.
-- fillfactor 70 leaves room on each page for the new versions of its rows.

UPDATE {{schema}}.bars SET qdb_synced_rev = NULL
 WHERE closed AND qdb_synced_rev IS NOT NULL AND qdb_synced_rev <> rev;

DROP INDEX IF EXISTS {{schema}}.bars_qdb_unsynced;

CREATE INDEX IF NOT EXISTS bars_qdb_outbox ON {{schema}}.bars (start_ns)
  WHERE closed AND qdb_synced_rev IS NULL;

ALTER TABLE {{schema}}.bars SET (fillfactor = 70);
