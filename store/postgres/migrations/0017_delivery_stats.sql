-- 0017: what a subscription keeps of its deliveries in place of one
-- attempt-log row per success (ADR 0009): totals, a latency histogram of
-- its successes and a bounded sample of the newest ones. One row per
-- subscription that has delivered, rewritten at most about once a second
-- by the settlement of the node that holds its lease. DeleteSubscription
-- deletes it with the other delivery-state rows.
CREATE TABLE delivery_stats (
	subscription_id text COLLATE "C" PRIMARY KEY,
	delivered       bigint NOT NULL,
	failed          bigint NOT NULL,
	latency         bigint[] NOT NULL, -- bucket counts (herald.LatencyHistogram)
	sample          jsonb  NOT NULL, -- attempts, oldest first (herald.MarshalSample)
	updated_at      bigint NOT NULL
);
