-- The outbox table Herald's outbox source reads, for MySQL 8 and
-- MariaDB 10.6 or later (SKIP LOCKED). Write a row in the same transaction
-- as the change it announces (client/outbox.Write does it); Herald
-- publishes it and deletes it.
CREATE TABLE IF NOT EXISTS herald_outbox (
	id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
	topic        VARCHAR(255) NOT NULL,
	`key`        VARCHAR(512) NOT NULL DEFAULT '',
	`type`       VARCHAR(200) NOT NULL DEFAULT '',
	headers      JSON         NULL,
	payload      LONGBLOB     NOT NULL,
	created_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
	published_at TIMESTAMP(6) NULL
);
