-- 0012: end users' server-side subscriptions and presence
-- (herald.UserStore). A user is the backend's id for one of its users,
-- carried by connection tokens; Herald keeps no other record of users.
CREATE TABLE user_subscriptions (
	user_id    TEXT    NOT NULL,
	topic      TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (user_id, topic)
) WITHOUT ROWID;

-- Connection counts per user and node, rewritten by each node every few
-- seconds; rows older than a few seconds are stale (their node is gone).
CREATE TABLE user_presence (
	user_id    TEXT    NOT NULL,
	node       TEXT    NOT NULL,
	conns      INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (user_id, node)
) WITHOUT ROWID;
CREATE INDEX user_presence_by_node ON user_presence (node);
