-- The audit log: one row per change made through the API.
CREATE TABLE audit (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	time       INTEGER NOT NULL,
	principal  TEXT    NOT NULL,
	tenant     TEXT    NOT NULL,
	method     TEXT    NOT NULL,
	route      TEXT    NOT NULL,
	object     TEXT    NOT NULL,
	status     INTEGER NOT NULL,
	request_id TEXT    NOT NULL,
	remote     TEXT    NOT NULL,
	changes    BLOB
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_principal ON audit (principal, id);
CREATE INDEX audit_by_object ON audit (object, id);
