-- 0015: archives hold retention back (see herald.Store.Prune). max_hold
-- bounds the hold of a paused or disabled archive, in nanoseconds past the
-- topic's retention; existing archives take the default, 7 days.
ALTER TABLE archives ADD COLUMN max_hold INTEGER NOT NULL DEFAULT 604800000000000;
