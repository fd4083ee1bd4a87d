-- The outbox table Herald's outbox source reads, for PostgreSQL.
-- Write a row in the same transaction as the change it announces
-- (client/outbox.Write does it); Herald publishes it and deletes it.
CREATE TABLE IF NOT EXISTS herald_outbox (
	id           bigserial   PRIMARY KEY,           -- the order rows are published in
	topic        text        NOT NULL,              -- the event's topic ({topic} in templates)
	key          text        NOT NULL DEFAULT '',   -- the event key: order, and the shard
	type         text        NOT NULL DEFAULT '',   -- the event type
	headers      jsonb,                             -- {"name": "value", ...} or NULL
	payload      bytea       NOT NULL,              -- the event's bytes, passed byte for byte
	created_at   timestamptz NOT NULL DEFAULT now(),
	published_at timestamptz                        -- set instead of deleting, with "on_publish": "mark"
);

-- Wakes Herald at once instead of at its next poll: one notification per
-- inserting statement.
CREATE OR REPLACE FUNCTION herald_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('herald_outbox', '');
	RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS herald_outbox_notify ON herald_outbox;
CREATE TRIGGER herald_outbox_notify AFTER INSERT ON herald_outbox
	FOR EACH STATEMENT EXECUTE FUNCTION herald_outbox_notify();
