-- 0016: what a source shard's runner is doing (herald.SourceShardStatus.State):
-- "starting", "running" or "retrying"; '' for a shard that never reported.
ALTER TABLE source_shards ADD COLUMN state text NOT NULL DEFAULT '';
