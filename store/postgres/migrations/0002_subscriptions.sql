-- 0002: subscriptions and their delivery state: cursors, the durable retry
-- set, dead letters, the attempt log and dispatch leases.
--
-- Same conventions as 0001: times are bigint Unix nanoseconds (0 = unset),
-- durations bigint nanoseconds, compared text uses the "C" collation.
--
-- Locking: every row of a subscription's delivery state (cursors, retries,
-- dead letters) is written by a transaction that holds the subscription
-- row's lock (FOR NO KEY UPDATE, or the DELETE of the row), taken first and
-- in id order when there are several. So writers of one subscription queue
-- behind each other instead of deadlocking, a Settle under a lease epoch
-- cannot interleave with the AcquireLease that ends it, and nothing is
-- written for a subscription that DeleteSubscription is removing.
--
-- There are no foreign keys: they would cost a lookup and a row lock per
-- inserted attempt, on the hottest write path, and the row lock above
-- already keeps orphans out. DeleteSubscription deletes the rows itself.

CREATE TABLE subscriptions (
	id                  text COLLATE "C" PRIMARY KEY,
	topic               text COLLATE "C" NOT NULL, -- a name or a pattern
	url                 text   NOT NULL,
	description         text   NOT NULL,
	filter              bytea,                     -- canonical filter JSON, byte for byte; NULL = everything
	headers             jsonb,                     -- NULL = none
	retry_max_attempts  bigint NOT NULL,
	retry_initial       bigint NOT NULL,
	retry_max           bigint NOT NULL,
	timeout             bigint NOT NULL,
	max_in_flight       bigint NOT NULL,
	rate_limit          double precision NOT NULL,
	ordered             boolean NOT NULL,
	expires_after_idle  bigint NOT NULL,
	state               text   NOT NULL,
	state_reason        text   NOT NULL,
	secret              text   NOT NULL,
	previous_secret     text   NOT NULL,
	previous_expires_at bigint NOT NULL,
	challenge           text   NOT NULL,
	verify_deadline     bigint NOT NULL,
	next_challenge_at   bigint NOT NULL,
	challenge_tries     bigint NOT NULL,
	owner_key_id        text COLLATE "C" NOT NULL,
	created_at          bigint NOT NULL,
	updated_at          bigint NOT NULL,
	last_activity_at    bigint NOT NULL,
	last_success_at     bigint NOT NULL,
	failing_since       bigint NOT NULL,
	-- The dispatch lease: the node that holds it ('' = none), until when,
	-- and its fencing epoch, which every Settle must match.
	lease_node          text   NOT NULL DEFAULT '',
	lease_expires_at    bigint NOT NULL DEFAULT 0,
	lease_epoch         bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70); -- room for HOT updates: Settle rewrites the row often

-- ListSubscriptions filtered by the key that created them.
CREATE INDEX subscriptions_by_owner ON subscriptions (owner_key_id, id);

-- A subscription's position in each topic it has read, by topic name (a
-- deleted topic's cursors go with it, see DeleteTopic).
CREATE TABLE cursors (
	subscription_id text COLLATE "C" NOT NULL,
	topic           text COLLATE "C" NOT NULL,
	seq             bigint NOT NULL,
	PRIMARY KEY (subscription_id, topic)
) WITH (fillfactor = 70); -- cursor moves are HOT updates

-- DeleteTopic: every subscription's rows in the topic.
CREATE INDEX cursors_by_topic ON cursors (topic);

-- The durable retry set. due_at NULL means blocked behind an earlier event
-- with the same key (ordered subscriptions).
CREATE TABLE retries (
	subscription_id text COLLATE "C" NOT NULL,
	topic           text COLLATE "C" NOT NULL,
	seq             bigint NOT NULL,
	event_id        text   NOT NULL,
	event_key       text COLLATE "C" NOT NULL,
	attempt         bigint NOT NULL,
	due_at          bigint,
	last_error      text   NOT NULL,
	PRIMARY KEY (subscription_id, topic, seq)
);

-- DueRetries: earliest due first, ties in (topic, seq) order, and the next
-- due time after them, from one range scan.
CREATE INDEX retries_by_due ON retries (subscription_id, due_at, topic, seq) WHERE due_at IS NOT NULL;
-- UnblockKeys: the chain of one key, lowest seq first.
CREATE INDEX retries_by_key ON retries (subscription_id, topic, event_key, seq);
CREATE INDEX retries_by_topic ON retries (topic);

CREATE TABLE dead_letters (
	subscription_id text COLLATE "C" NOT NULL,
	topic           text COLLATE "C" NOT NULL,
	seq             bigint NOT NULL,
	event_id        text COLLATE "C" NOT NULL,
	event_key       text   NOT NULL,
	attempts        bigint NOT NULL,
	last_error      text   NOT NULL,
	dead_at         bigint NOT NULL,
	PRIMARY KEY (subscription_id, topic, seq)
);

-- RedriveDeadLetters and DeleteDeadLetters by event id.
CREATE INDEX dead_letters_by_event ON dead_letters (subscription_id, event_id);
CREATE INDEX dead_letters_by_topic ON dead_letters (topic);

-- The attempt log, append-only. Ids come from the identity sequence (no
-- cache), so they increase in the order attempts are written. The primary
-- key serves ListAttempts (newest first); the BRIN index on time serves
-- PruneAttempts at almost no cost per insert, as rows arrive in time order.
CREATE TABLE attempts (
	id              bigint GENERATED ALWAYS AS IDENTITY,
	subscription_id text COLLATE "C" NOT NULL,
	topic           text   NOT NULL,
	seq             bigint NOT NULL,
	event_id        text COLLATE "C" NOT NULL,
	attempt         bigint NOT NULL,
	time_ns         bigint NOT NULL,
	outcome         text   NOT NULL,
	status_code     bigint NOT NULL,
	latency         bigint NOT NULL,
	error           text   NOT NULL,
	response        bytea  NOT NULL, -- the excerpt byte for byte: endpoints answer anything
	PRIMARY KEY (subscription_id, id)
);

CREATE INDEX attempts_by_event ON attempts (subscription_id, event_id, id);
CREATE INDEX attempts_by_time ON attempts USING brin (time_ns);
