-- The QuestDB outbox of the bars (docs/bars-and-indicators.md, "Bars in QuestDB"), both modes.
--
-- qdb_synced_rev: the revision of the bar last confirmed by QuestDB (NULL: never sent). Every change of a bar
-- takes a new `rev`, so a closed bar whose qdb_synced_rev differs from its rev (just closed, amended by a late
-- trade, rebuilt) is "not yet in QuestDB". It commits with the bar itself, so neither a crash nor a QuestDB
-- outage can lose one: the bars sink sends these rows, oldest change first, and marks them only once QuestDB
-- has confirmed them and only if their rev is still the one it sent.
-- bars_qdb_unsynced holds just those rows (none once QuestDB has caught up); without QuestDB configured it
-- holds every closed bar, which is also what a later first sync sends.

ALTER TABLE {{schema}}.bars ADD COLUMN IF NOT EXISTS qdb_synced_rev bigint;

CREATE INDEX IF NOT EXISTS bars_qdb_unsynced ON {{schema}}.bars (rev)
  WHERE closed AND qdb_synced_rev IS DISTINCT FROM rev;
