-- 0002: subscriptions and their delivery state: cursors, the durable retry
-- set, dead letters, the attempt log and dispatch leases.
--
-- Same conventions as 0001: times are integers, Unix nanoseconds (0 =
-- unset), durations nanoseconds; text compares in byte order (BINARY).
--
-- Every delivery-state row names its subscription by sid, an integer that
-- is never reused (AUTOINCREMENT): smaller rows and keys than the text id on
-- the hottest tables, and a subscription deleted and created again with the
-- same id never sees rows of its previous life. Topics are named by name,
-- as the dispatcher names them; DeleteTopic removes a topic's rows.
--
-- There are no foreign keys: they would cost a lookup per inserted attempt.
-- All writes go through the store's one writer connection, so a Settle and
-- a DeleteSubscription never interleave; DeleteSubscription deletes the
-- rows itself.

CREATE TABLE subscriptions (
	sid                 INTEGER PRIMARY KEY AUTOINCREMENT,
	id                  TEXT    NOT NULL UNIQUE,
	topic               TEXT    NOT NULL, -- a name or a pattern
	url                 TEXT    NOT NULL,
	description         TEXT    NOT NULL,
	filter              BLOB,             -- canonical filter JSON, byte for byte; NULL = everything
	headers             BLOB,             -- encoded like event headers; NULL = none
	retry_max_attempts  INTEGER NOT NULL,
	retry_initial       INTEGER NOT NULL,
	retry_max           INTEGER NOT NULL,
	timeout             INTEGER NOT NULL,
	max_in_flight       INTEGER NOT NULL,
	rate_limit          REAL    NOT NULL,
	ordered             INTEGER NOT NULL,
	expires_after_idle  INTEGER NOT NULL,
	state               TEXT    NOT NULL,
	state_reason        TEXT    NOT NULL,
	secret              TEXT    NOT NULL,
	previous_secret     TEXT    NOT NULL,
	previous_expires_at INTEGER NOT NULL,
	challenge           TEXT    NOT NULL,
	verify_deadline     INTEGER NOT NULL,
	next_challenge_at   INTEGER NOT NULL,
	challenge_tries     INTEGER NOT NULL,
	owner_key_id        TEXT    NOT NULL,
	created_at          INTEGER NOT NULL,
	updated_at          INTEGER NOT NULL,
	last_activity_at    INTEGER NOT NULL,
	last_success_at     INTEGER NOT NULL,
	failing_since       INTEGER NOT NULL,
	-- The dispatch lease: the node that holds it ('' = none), until when,
	-- and its fencing epoch, which every Settle must match.
	lease_node          TEXT    NOT NULL DEFAULT '',
	lease_expires_at    INTEGER NOT NULL DEFAULT 0,
	lease_epoch         INTEGER NOT NULL DEFAULT 0
);

-- ListSubscriptions filtered by the key that created them.
CREATE INDEX subscriptions_by_owner ON subscriptions (owner_key_id, id);

-- A subscription's position in each topic it has read.
CREATE TABLE cursors (
	sid   INTEGER NOT NULL,
	topic TEXT    NOT NULL,
	seq   INTEGER NOT NULL,
	PRIMARY KEY (sid, topic)
) WITHOUT ROWID;

-- DeleteTopic: every subscription's rows in the topic.
CREATE INDEX cursors_by_topic ON cursors (topic);

-- The durable retry set. due_at NULL means blocked behind an earlier event
-- with the same key (ordered subscriptions).
CREATE TABLE retries (
	sid        INTEGER NOT NULL,
	topic      TEXT    NOT NULL,
	seq        INTEGER NOT NULL,
	event_id   TEXT    NOT NULL,
	event_key  TEXT    NOT NULL,
	attempt    INTEGER NOT NULL,
	due_at     INTEGER,
	last_error TEXT    NOT NULL,
	PRIMARY KEY (sid, topic, seq)
) WITHOUT ROWID;

-- DueRetries: earliest due first; the index also holds the primary key
-- (topic, seq), which orders ties. Blocked rows (NULL) sort first and are
-- skipped by the range.
CREATE INDEX retries_by_due ON retries (sid, due_at);
-- UnblockKeys: the chain of one key, lowest seq first.
CREATE INDEX retries_by_key ON retries (sid, topic, event_key, seq);
CREATE INDEX retries_by_topic ON retries (topic);

CREATE TABLE dead_letters (
	sid        INTEGER NOT NULL,
	topic      TEXT    NOT NULL,
	seq        INTEGER NOT NULL,
	event_id   TEXT    NOT NULL,
	event_key  TEXT    NOT NULL,
	attempts   INTEGER NOT NULL,
	last_error TEXT    NOT NULL,
	dead_at    INTEGER NOT NULL,
	PRIMARY KEY (sid, topic, seq)
) WITHOUT ROWID;

-- RedriveDeadLetters and DeleteDeadLetters by event id.
CREATE INDEX dead_letters_by_event ON dead_letters (sid, event_id);
CREATE INDEX dead_letters_by_topic ON dead_letters (topic);

-- The attempt log, append-only. AUTOINCREMENT: ids are never reused, so
-- they increase in the order attempts are written even after the newest
-- rows are deleted (a page cursor stays valid).
CREATE TABLE attempts (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	sid         INTEGER NOT NULL,
	topic       TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	event_id    TEXT    NOT NULL,
	attempt     INTEGER NOT NULL,
	time        INTEGER NOT NULL,
	outcome     TEXT    NOT NULL,
	status_code INTEGER NOT NULL,
	latency     INTEGER NOT NULL,
	error       TEXT    NOT NULL,
	response    BLOB    NOT NULL -- the excerpt byte for byte: endpoints answer anything
);

-- ListAttempts, newest first, with and without an event id. The event
-- index leads with the event id: ids are mostly time-ordered (UUIDv7), so a
-- Settle's attempts land near the end of the index instead of in every
-- subscription's range (a third fewer bytes written per Settle, measured).
CREATE INDEX attempts_by_sub ON attempts (sid, id);
CREATE INDEX attempts_by_event ON attempts (event_id, sid, id);
-- PruneAttempts: oldest first.
CREATE INDEX attempts_by_time ON attempts (time);
