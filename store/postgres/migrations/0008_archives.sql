-- 0008: archives. An archive names the internal subscription that carries
-- its settings and delivery state (see herald.Archive).

CREATE TABLE archives (
	name            text COLLATE "C" NOT NULL PRIMARY KEY,
	subscription_id text COLLATE "C" NOT NULL,
	created_at      bigint NOT NULL -- Unix nanoseconds
);
