-- 0010: topic schemas, and the per-key state of rules and views.
--
-- Schemas are named by topic name; DeleteTopic removes them. Versions
-- count from 1 per topic.
CREATE TABLE schemas (
	topic      text COLLATE "C" NOT NULL,
	version    integer NOT NULL,
	kind       text NOT NULL,
	format     text NOT NULL,
	message    text NOT NULL,
	created_at bigint NOT NULL,
	definition bytea NOT NULL,
	PRIMARY KEY (topic, version)
);

-- One row per (owner, key): a rule's windows or a view's value.
CREATE TABLE state (
	owner      text COLLATE "C" NOT NULL,
	key        text COLLATE "C" NOT NULL,
	seq        bigint NOT NULL,
	updated_at bigint NOT NULL,
	value      bytea NOT NULL,
	PRIMARY KEY (owner, key)
);

CREATE TABLE state_positions (
	owner text COLLATE "C" PRIMARY KEY,
	seq   bigint NOT NULL
);
