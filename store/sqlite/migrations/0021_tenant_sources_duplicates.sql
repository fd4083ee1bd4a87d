-- How many sources a tenant may have (0: no limit), and the duplicates a
-- source shard's runner brought in (messages its service delivered again,
-- absorbed by deduplication), beside events_in.
ALTER TABLE tenants ADD COLUMN max_sources INTEGER NOT NULL DEFAULT 0;
ALTER TABLE source_shards ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
