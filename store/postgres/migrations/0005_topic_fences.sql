-- 0005: topic fences, so a settlement made before a topic was deleted
-- cannot write the topic's delivery state back afterwards.
--
-- Cursors, retries and dead letters name their topic by name, and
-- DeleteTopic removes them. A dispatcher that read the topic before the
-- deletion may still settle progress in it afterwards (a settlement in
-- flight, or written before the deletion's notification reached its
-- node): a cursor of 5 written back would make a topic created again under
-- the name skip its seqs 1 to 5. So DeleteTopic records, under the
-- subscription's row lock, for every subscription that matches the topic
-- and holds a dispatch lease, the lease epoch at the time: a Settle under
-- that epoch (or an older one) writes nothing of the topic. The dispatcher
-- that restarts with a new lease reads the store as the deletion left it,
-- and its settlements (a newer epoch) apply.
--
-- AcquireLease deletes a subscription's fences of older epochs: they
-- cannot match any later settlement. A node renewing its own lease while
-- a fence of its epoch exists gets a new epoch too, so its dispatcher,
-- which may not have heard of the deletion, restarts.

CREATE TABLE topic_fences (
	subscription_id text COLLATE "C" NOT NULL,
	topic           text COLLATE "C" NOT NULL,
	epoch           bigint NOT NULL, -- the lease epoch when the topic was deleted
	PRIMARY KEY (subscription_id, topic)
);
