-- 0001: topics, their event logs, dedup keys and API keys.
--
-- Times are bigint Unix nanoseconds (0 = unset) and durations bigint
-- nanoseconds: Go times round-trip exactly (timestamptz keeps microseconds)
-- and "time + window" is integer arithmetic. Text that is compared or
-- indexed uses the "C" collation: byte order, the order Go and SQLite use,
-- and cheaper comparisons than a linguistic collation.
--
-- Topics have an integer id that is never reused (an identity column), so a
-- topic deleted and created again never sees the rows of its previous life
-- while Prune is still removing them.

CREATE TABLE topics (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name            text COLLATE "C" NOT NULL UNIQUE,
	retention       bigint  NOT NULL,
	max_event_bytes integer NOT NULL,
	dedup_window    bigint  NOT NULL,
	created_at      bigint  NOT NULL,
	updated_at      bigint  NOT NULL,
	-- seq of the newest event ever appended. Append allocates seqs by
	-- incrementing it under the row lock: see
	-- docs/adr/0002-postgres-seq-allocation.md.
	head_seq        bigint  NOT NULL DEFAULT 0
);

-- Deleted topics whose events and dedup keys Prune has not removed yet.
CREATE TABLE dead_topics (
	id bigint PRIMARY KEY
);

-- The event log. Appends go to the end of each topic's (topic_id, seq)
-- range and reads are range scans of the primary key. There is no foreign
-- key to topics: it would cost a check per inserted row, and DeleteTopic
-- leaves the rows to Prune.
CREATE TABLE events (
	topic_id     bigint NOT NULL,
	seq          bigint NOT NULL,
	id           text COLLATE "C" NOT NULL,
	time_ns      bigint NOT NULL,
	event_type   text  NOT NULL,
	event_key    text  NOT NULL,
	idem_key     text  NOT NULL,
	content_type text  NOT NULL,
	headers      jsonb,
	payload      bytea NOT NULL,
	PRIMARY KEY (topic_id, seq)
);

-- GetEvent by id (ids may repeat outside the dedup window: newest wins).
CREATE INDEX events_by_id ON events (topic_id, id);
-- SeqAtTime: replay from a time.
CREATE INDEX events_by_time ON events (topic_id, time_ns);

-- Idempotency keys, one row per (topic, key): the first event's id, seq
-- and time. A key is live while time_ns + the topic's dedup window > the new
-- event's time.
CREATE TABLE dedup (
	topic_id bigint NOT NULL,
	idem_key text COLLATE "C" NOT NULL,
	event_id text   NOT NULL,
	seq      bigint NOT NULL,
	time_ns  bigint NOT NULL,
	PRIMARY KEY (topic_id, idem_key)
);

-- Prune: expired keys of a topic, oldest first.
CREATE INDEX dedup_by_time ON dedup (topic_id, time_ns);

CREATE TABLE api_keys (
	id         text COLLATE "C" PRIMARY KEY,
	name       text   NOT NULL,
	hash       bytea  NOT NULL UNIQUE,
	prefix     text   NOT NULL,
	scopes     text[] NOT NULL,
	created_at bigint NOT NULL,
	expires_at bigint NOT NULL
);

CREATE INDEX api_keys_by_created ON api_keys (created_at, id);
