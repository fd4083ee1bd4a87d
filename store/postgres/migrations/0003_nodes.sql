-- 0003: cluster membership (package cluster). Each node inserts its row at
-- start and refreshes heartbeat_at every second; a node is live while its
-- heartbeat is recent. A node that stops cleanly deletes its row; rows of
-- nodes silent for a day are deleted by the others' heartbeats. Ids are
-- unique per process start, so a restarted node is a new row.
--
-- Same conventions as 0001: times are bigint Unix nanoseconds. The table
-- holds a handful of rows, read in full every heartbeat: no index beyond
-- the key.

CREATE TABLE nodes (
	id           text COLLATE "C" PRIMARY KEY,
	addr         text   NOT NULL,
	started_at   bigint NOT NULL,
	heartbeat_at bigint NOT NULL
);
