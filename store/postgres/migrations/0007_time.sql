-- 0007: delayed events, schedules and named leases (herald.TimeStore).
--
-- A delayed event is committed here at publish and moves into its topic's
-- log when due: the promoter reads the due rows through scheduled_by_due
-- (due_at, then sid: the order they were scheduled), publishes them, then
-- deletes them. Pending ids and idempotency keys are unique per topic.
-- Times are bigint Unix nanoseconds, as in 0001.
CREATE TABLE scheduled_events (
	sid          bigserial PRIMARY KEY,
	topic        text COLLATE "C" NOT NULL,
	id           text COLLATE "C" NOT NULL,
	due_at       bigint NOT NULL,
	time_ns      bigint NOT NULL,
	event_type   text   NOT NULL,
	event_key    text   NOT NULL,
	idem_key     text   NOT NULL,
	content_type text   NOT NULL,
	headers      jsonb,
	payload      bytea  NOT NULL
);
CREATE UNIQUE INDEX scheduled_by_id ON scheduled_events (topic, id);
CREATE UNIQUE INDEX scheduled_by_idem ON scheduled_events (topic, idem_key) WHERE idem_key <> '';
CREATE INDEX scheduled_by_due ON scheduled_events (due_at, sid);
CREATE INDEX scheduled_by_topic ON scheduled_events (topic, due_at, id);

-- Schedules: the definition is JSON (read only by package schedule);
-- paused and last_tick change without rewriting it.
CREATE TABLE schedules (
	name       text COLLATE "C" PRIMARY KEY,
	spec       jsonb   NOT NULL,
	paused     boolean NOT NULL DEFAULT false,
	last_tick  bigint  NOT NULL DEFAULT 0,
	created_at bigint  NOT NULL,
	updated_at bigint  NOT NULL
);

-- Named leases: one node at a time promotes delayed events and fires
-- schedules.
CREATE TABLE leases (
	name       text COLLATE "C" PRIMARY KEY,
	node       text   NOT NULL,
	expires_at bigint NOT NULL
);
