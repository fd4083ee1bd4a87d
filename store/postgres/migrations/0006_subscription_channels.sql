-- A subscription names a channel and carries that channel's config (JSON,
-- read only by the channel). Existing subscriptions are webhooks: their
-- URL, static headers and signing secrets move into the webhook config
-- (the channel's stored form, webhook.Config, as of this migration), and
-- the old columns go.
ALTER TABLE subscriptions ADD COLUMN channel text NOT NULL DEFAULT 'webhook';
ALTER TABLE subscriptions ADD COLUMN config bytea NOT NULL DEFAULT '\x7b7d';

UPDATE subscriptions SET config = convert_to(jsonb_strip_nulls(jsonb_build_object(
	'url', url,
	'headers', headers,
	'secret', nullif(secret, ''),
	'previous_secret', nullif(previous_secret, ''),
	'previous_expires_at', CASE WHEN previous_expires_at = 0 THEN NULL ELSE
		to_char(to_timestamp(previous_expires_at / 1000000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END
))::text, 'UTF8');

ALTER TABLE subscriptions
	DROP COLUMN url,
	DROP COLUMN headers,
	DROP COLUMN secret,
	DROP COLUMN previous_secret,
	DROP COLUMN previous_expires_at;
