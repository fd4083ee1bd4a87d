-- 0001: topics, their event logs, dedup keys and API keys.
--
-- Times are integers: Unix nanoseconds (0 = unset). Durations are
-- nanoseconds. Topics have an integer id that is never reused
-- (AUTOINCREMENT), so a topic deleted and created again never sees the rows
-- of its previous life while Prune is still removing them.

CREATE TABLE topics (
	id              INTEGER PRIMARY KEY AUTOINCREMENT,
	name            TEXT    NOT NULL UNIQUE,
	retention       INTEGER NOT NULL,
	max_event_bytes INTEGER NOT NULL,
	dedup_window    INTEGER NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	-- seq of the newest event ever appended, so Append never scans
	head_seq        INTEGER NOT NULL DEFAULT 0
);

-- Deleted topics whose events and dedup keys Prune has not removed yet.
CREATE TABLE dead_topics (
	id INTEGER PRIMARY KEY
);

-- The event log, clustered by (topic_id, seq): appends go to the end of
-- each topic's range and reads are range scans. The payload is the last
-- column so the small columns stay on the b-tree page and large payloads
-- spill to overflow pages.
CREATE TABLE events (
	topic_id     INTEGER NOT NULL,
	seq          INTEGER NOT NULL,
	id           TEXT    NOT NULL,
	time         INTEGER NOT NULL,
	event_type   TEXT    NOT NULL,
	event_key    TEXT    NOT NULL,
	idem_key     TEXT    NOT NULL,
	content_type TEXT    NOT NULL,
	headers      BLOB,
	payload      BLOB    NOT NULL,
	PRIMARY KEY (topic_id, seq)
) WITHOUT ROWID;

-- GetEvent by id (ids may repeat outside the dedup window: newest wins).
CREATE INDEX events_by_id ON events (topic_id, id);
-- SeqAtTime: replay from a time.
CREATE INDEX events_by_time ON events (topic_id, time);

-- Idempotency keys, one row per (topic, key): the first event's id, seq
-- and time. A key is live while time + the topic's dedup window > the
-- new event's time.
CREATE TABLE dedup (
	topic_id INTEGER NOT NULL,
	idem_key TEXT    NOT NULL,
	event_id TEXT    NOT NULL,
	seq      INTEGER NOT NULL,
	time     INTEGER NOT NULL,
	PRIMARY KEY (topic_id, idem_key)
) WITHOUT ROWID;

-- Prune: expired keys of a topic, oldest first.
CREATE INDEX dedup_by_time ON dedup (topic_id, time);

CREATE TABLE api_keys (
	id         TEXT    PRIMARY KEY,
	name       TEXT    NOT NULL,
	hash       BLOB    NOT NULL UNIQUE,
	prefix     TEXT    NOT NULL,
	scopes     TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
);
