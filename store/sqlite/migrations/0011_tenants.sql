-- Tenants: the platform's customers. Subscriptions and keys may belong to
-- one ('' is the platform's own).
CREATE TABLE tenants (
	id            TEXT    PRIMARY KEY,
	name          TEXT    NOT NULL,
	metadata      TEXT    NOT NULL,
	topic_pattern TEXT    NOT NULL,
	max_subscriptions INTEGER NOT NULL,
	deliveries_per_second REAL NOT NULL,
	max_in_flight INTEGER NOT NULL,
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
);

ALTER TABLE subscriptions ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant, id) WHERE tenant <> '';
ALTER TABLE api_keys ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
