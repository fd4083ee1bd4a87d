-- 0007: delayed events, schedules and named leases (herald.TimeStore).
--
-- A delayed event is committed here at publish and moves into its topic's
-- log when due: the promoter reads the due rows through scheduled_by_due
-- (due_at, then sid: the order they were scheduled), publishes them, then
-- deletes them. Pending ids and idempotency keys are unique per topic.
CREATE TABLE scheduled_events (
	sid          INTEGER PRIMARY KEY AUTOINCREMENT,
	topic        TEXT    NOT NULL,
	id           TEXT    NOT NULL,
	due_at       INTEGER NOT NULL,
	time         INTEGER NOT NULL,
	event_type   TEXT    NOT NULL,
	event_key    TEXT    NOT NULL,
	idem_key     TEXT    NOT NULL,
	content_type TEXT    NOT NULL,
	headers      BLOB,
	payload      BLOB    NOT NULL
);
CREATE UNIQUE INDEX scheduled_by_id ON scheduled_events (topic, id);
CREATE UNIQUE INDEX scheduled_by_idem ON scheduled_events (topic, idem_key) WHERE idem_key <> '';
CREATE INDEX scheduled_by_due ON scheduled_events (due_at, sid);
CREATE INDEX scheduled_by_topic ON scheduled_events (topic, due_at, id);

-- Schedules: the definition is JSON (read only by package schedule);
-- paused and last_tick change without rewriting it.
CREATE TABLE schedules (
	name       TEXT    PRIMARY KEY,
	spec       BLOB    NOT NULL,
	paused     INTEGER NOT NULL DEFAULT 0,
	last_tick  INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Named leases: one node at a time promotes delayed events and fires
-- schedules.
CREATE TABLE leases (
	name       TEXT    PRIMARY KEY,
	node       TEXT    NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
