-- 0010: topic schemas, and the per-key state of rules and views.
--
-- Schemas are named by topic name; DeleteTopic removes them. Versions
-- count from 1 per topic.
CREATE TABLE schemas (
	topic      TEXT    NOT NULL,
	version    INTEGER NOT NULL,
	kind       TEXT    NOT NULL,
	format     TEXT    NOT NULL,
	message    TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	definition BLOB    NOT NULL,
	PRIMARY KEY (topic, version)
) WITHOUT ROWID;

-- One row per (owner, key): a rule's windows or a view's value. The key
-- '' of an owner is not used; the owner's position lives in state_positions.
CREATE TABLE state (
	owner      TEXT    NOT NULL,
	key        TEXT    NOT NULL,
	seq        INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	value      BLOB    NOT NULL,
	PRIMARY KEY (owner, key)
) WITHOUT ROWID;

CREATE TABLE state_positions (
	owner TEXT    PRIMARY KEY,
	seq   INTEGER NOT NULL
) WITHOUT ROWID;
