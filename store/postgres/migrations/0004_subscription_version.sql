-- 0004: a version on each subscription, for optimistic concurrency.
--
-- The API and the dispatcher change a subscription by reading it,
-- changing the copy and writing all of it back. UpdateSubscription now
-- writes only if the copy's version is the stored one, and increments it;
-- a Settle increments it when it sets or clears failing_since. So a writer
-- holding an older copy is refused, reads again and retries, instead of
-- putting back what another writer changed meanwhile. Adding a column with
-- a constant default rewrites no rows.

ALTER TABLE subscriptions ADD COLUMN version bigint NOT NULL DEFAULT 0;
