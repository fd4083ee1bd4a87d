-- 0009: sources (package source): connectors that feed topics from outside
-- Herald, and the leases of their shards. On SQLite one process runs every
-- shard, but the leases and epochs work the same as on PostgreSQL, so the
-- runtime has one code path and storetest one contract.
--
-- Same conventions as 0001: times are integers, Unix nanoseconds (0 =
-- unset). A source's config holds its secrets; only its kind reads it. No
-- foreign keys: DeleteSource removes the shard rows itself.

CREATE TABLE sources (
	id           TEXT    NOT NULL PRIMARY KEY,
	kind         TEXT    NOT NULL,
	config       BLOB    NOT NULL,
	topic        TEXT    NOT NULL,
	mapping      BLOB    NOT NULL,
	description  TEXT    NOT NULL,
	shards       INTEGER NOT NULL,
	state        TEXT    NOT NULL,
	state_reason TEXT    NOT NULL,
	managed      INTEGER NOT NULL,
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL,
	version      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE source_shards (
	source_id        TEXT    NOT NULL,
	shard            INTEGER NOT NULL,
	lease_node       TEXT    NOT NULL DEFAULT '',
	lease_expires_at INTEGER NOT NULL DEFAULT 0,
	lease_epoch      INTEGER NOT NULL DEFAULT 0,
	lag              INTEGER NOT NULL DEFAULT -1,
	events_in        INTEGER NOT NULL DEFAULT 0,
	errors           INTEGER NOT NULL DEFAULT 0,
	last_error       TEXT    NOT NULL DEFAULT '',
	last_error_at    INTEGER NOT NULL DEFAULT 0,
	reported_at      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (source_id, shard)
) WITHOUT ROWID;
