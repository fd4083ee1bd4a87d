-- A subscription names a channel and carries that channel's config (JSON,
-- read only by the channel). Existing subscriptions are webhooks: their
-- URL, static headers and signing secrets move into the webhook config,
-- which a step in Go writes (migrate.go: the headers are stored in a
-- binary form SQL cannot read), then the old columns go.
ALTER TABLE subscriptions ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook';
ALTER TABLE subscriptions ADD COLUMN config BLOB NOT NULL DEFAULT x'7b7d';
