-- 0008: archives. An archive names the internal subscription that carries
-- its settings and delivery state (see herald.Archive).

CREATE TABLE archives (
	name            TEXT    NOT NULL PRIMARY KEY,
	subscription_id TEXT    NOT NULL,
	created_at      INTEGER NOT NULL -- Unix nanoseconds
) WITHOUT ROWID;
