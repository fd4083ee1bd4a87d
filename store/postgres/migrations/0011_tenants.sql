-- Tenants: the platform's customers. Subscriptions and keys may belong to
-- one ('' is the platform's own).
CREATE TABLE tenants (
	id            text COLLATE "C" PRIMARY KEY,
	name          text   NOT NULL,
	metadata      jsonb  NOT NULL,
	topic_pattern text   NOT NULL,
	max_subscriptions bigint NOT NULL,
	deliveries_per_second double precision NOT NULL,
	max_in_flight bigint NOT NULL,
	created_at    bigint NOT NULL,
	updated_at    bigint NOT NULL
);

ALTER TABLE subscriptions ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant, id) WHERE tenant <> '';
ALTER TABLE api_keys ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT '';
