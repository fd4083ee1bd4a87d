-- Usage per tenant and UTC day ('' is the platform's own), added to by
-- each node's periodic flush.
CREATE TABLE usage_daily (
	tenant               TEXT    NOT NULL,
	day                  TEXT    NOT NULL, -- YYYY-MM-DD
	events_published     INTEGER NOT NULL DEFAULT 0,
	bytes_published      INTEGER NOT NULL DEFAULT 0,
	deliveries_succeeded INTEGER NOT NULL DEFAULT 0,
	deliveries_failed    INTEGER NOT NULL DEFAULT 0,
	dead_lettered        INTEGER NOT NULL DEFAULT 0,
	bytes_delivered      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (tenant, day)
);
CREATE INDEX usage_by_day ON usage_daily (day);
