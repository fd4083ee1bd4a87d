-- 0009: sources (package source): connectors that feed topics from outside
-- Herald, and the leases of their shards. Each shard of a source is run by
-- one node at a time under a lease with a fencing epoch, as subscriptions
-- are dispatched; a shard's runner reports its status (lag, counts, last
-- error) under its epoch, so a fenced-out node's report never lands.
--
-- Same conventions as 0001: times are bigint Unix nanoseconds (0 = unset).
-- A source's config holds its secrets; only the source's kind reads it.

CREATE TABLE sources (
	id           text COLLATE "C" PRIMARY KEY,
	kind         text   NOT NULL,
	config       bytea  NOT NULL,
	topic        text   NOT NULL,
	mapping      bytea  NOT NULL,
	description  text   NOT NULL,
	shards       integer NOT NULL,
	state        text   NOT NULL,
	state_reason text   NOT NULL,
	managed      boolean NOT NULL,
	created_at   bigint NOT NULL,
	updated_at   bigint NOT NULL,
	version      bigint NOT NULL DEFAULT 0
);

CREATE TABLE source_shards (
	source_id        text COLLATE "C" NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
	shard            integer NOT NULL,
	lease_node       text   NOT NULL DEFAULT '',
	lease_expires_at bigint NOT NULL DEFAULT 0,
	lease_epoch      bigint NOT NULL DEFAULT 0,
	lag              bigint NOT NULL DEFAULT -1,
	events_in        bigint NOT NULL DEFAULT 0,
	errors           bigint NOT NULL DEFAULT 0,
	last_error       text   NOT NULL DEFAULT '',
	last_error_at    bigint NOT NULL DEFAULT 0,
	reported_at      bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (source_id, shard)
);
