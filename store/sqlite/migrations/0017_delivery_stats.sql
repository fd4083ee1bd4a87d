-- 0017: what a subscription keeps of its deliveries in place of one
-- attempt-log row per success (ADR 0009): totals, a latency histogram of
-- its successes and a bounded sample of the newest ones. One row per
-- subscription that has delivered, rewritten at most about once a second
-- by the settlement of the node that holds its lease. DeleteSubscription
-- deletes it with the other delivery-state rows.
CREATE TABLE delivery_stats (
	sid        INTEGER PRIMARY KEY,
	delivered  INTEGER NOT NULL,
	failed     INTEGER NOT NULL,
	latency    BLOB    NOT NULL, -- JSON array of bucket counts (herald.LatencyHistogram)
	sample     BLOB    NOT NULL, -- JSON array of attempts, oldest first
	updated_at INTEGER NOT NULL
);
