-- The audit log: one row per change made through the API.
CREATE TABLE audit (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	time       bigint NOT NULL,
	principal  text COLLATE "C" NOT NULL,
	tenant     text COLLATE "C" NOT NULL,
	method     text NOT NULL,
	route      text NOT NULL,
	object     text COLLATE "C" NOT NULL,
	status     integer NOT NULL,
	request_id text NOT NULL,
	remote     text NOT NULL,
	changes    bytea
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_principal ON audit (principal, id);
CREATE INDEX audit_by_object ON audit (object, id);
