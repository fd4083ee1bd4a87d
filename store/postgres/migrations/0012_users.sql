-- 0012: end users' server-side subscriptions and presence
-- (herald.UserStore). A user is the backend's id for one of its users,
-- carried by connection tokens; Herald keeps no other record of users.
CREATE TABLE user_subscriptions (
	user_id    text COLLATE "C" NOT NULL,
	topic      text COLLATE "C" NOT NULL,
	created_at bigint NOT NULL,
	PRIMARY KEY (user_id, topic)
);

-- Connection counts per user and node, rewritten by each node every few
-- seconds; rows older than a few seconds are stale (their node is gone).
CREATE TABLE user_presence (
	user_id    text COLLATE "C" NOT NULL,
	node       text COLLATE "C" NOT NULL,
	conns      bigint NOT NULL,
	updated_at bigint NOT NULL,
	PRIMARY KEY (user_id, node)
);
CREATE INDEX user_presence_by_node ON user_presence (node);
