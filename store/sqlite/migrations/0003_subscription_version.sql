-- 0003: a version on each subscription, for optimistic concurrency.
--
-- The API and the dispatcher change a subscription by reading it,
-- changing the copy and writing all of it back. UpdateSubscription now
-- writes only if the copy's version is the stored one, and increments it;
-- a Settle increments it when it sets or clears failing_since. So a writer
-- holding an older copy is refused, reads again and retries, instead of
-- putting back what another writer changed meanwhile.

ALTER TABLE subscriptions ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
