-- Usage per tenant and UTC day ('' is the platform's own), added to by
-- each node's periodic flush.
CREATE TABLE usage_daily (
	tenant               text COLLATE "C" NOT NULL,
	day                  text COLLATE "C" NOT NULL, -- YYYY-MM-DD
	events_published     bigint NOT NULL DEFAULT 0,
	bytes_published      bigint NOT NULL DEFAULT 0,
	deliveries_succeeded bigint NOT NULL DEFAULT 0,
	deliveries_failed    bigint NOT NULL DEFAULT 0,
	dead_lettered        bigint NOT NULL DEFAULT 0,
	bytes_delivered      bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (tenant, day)
);
CREATE INDEX usage_by_day ON usage_daily (day);
