// Package outbox writes events to a transactional outbox table that a
// Herald outbox source reads (docs/sources.md). Write the row in the same
// transaction as the change it announces: the event then exists exactly
// when the change does, and Herald publishes it, at least once into its
// log and deduplicated there, and deletes the row.
//
//	tx, _ := db.BeginTx(ctx, nil)
//	_, _ = tx.ExecContext(ctx, `UPDATE accounts SET balance = balance - $1 WHERE id = $2`, amount, id)
//	_ = outbox.Write(ctx, tx, outbox.Event{Topic: "payments.debited", Key: id, Payload: body})
//	_ = tx.Commit()
//
// Write takes a database/sql transaction (PostgreSQL by default,
// outbox.MySQL for MySQL and MariaDB) or a pgx transaction.
package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5/pgconn"
)

// Event is one row of the outbox.
type Event struct {
	Topic   string            // required: the topic, or what the source's topic template reads as {topic}
	Key     string            // ordering key; also picks the shard
	Type    string            // event type
	Headers map[string]string // carried to the event
	Payload []byte            // the event's bytes, byte for byte
}

// Option changes how Write writes.
type Option func(*options)

type options struct {
	table string
	mysql bool
}

// Table names the outbox table (default herald_outbox).
func Table(name string) Option { return func(o *options) { o.table = name } }

// MySQL writes with MySQL's placeholders and quoting, for a database/sql
// transaction on MySQL or MariaDB.
func MySQL() Option { return func(o *options) { o.mysql = true } }

// SQLTx is a database/sql transaction (*sql.Tx), or anything that
// executes like one.
type SQLTx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// PgxTx is a pgx transaction (pgx.Tx), or anything that executes like one.
type PgxTx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

var tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// Write inserts the event into the outbox within tx, a SQLTx or a PgxTx.
func Write(ctx context.Context, tx any, e Event, opts ...Option) error {
	o := options{table: "herald_outbox"}
	for _, f := range opts {
		f(&o)
	}
	if !tableRE.MatchString(o.table) {
		return fmt.Errorf("outbox: table %q is not a plain name", o.table)
	}
	if e.Topic == "" {
		return errors.New("outbox: the event has no topic")
	}
	if e.Payload == nil {
		e.Payload = []byte{}
	}
	var headers any
	if len(e.Headers) > 0 {
		b, err := json.Marshal(e.Headers)
		if err != nil {
			return fmt.Errorf("outbox: headers: %w", err)
		}
		headers = string(b)
	}
	switch tx := tx.(type) {
	case PgxTx:
		_, err := tx.Exec(ctx, `INSERT INTO `+o.table+` (topic, "key", "type", headers, payload) VALUES ($1, $2, $3, $4::jsonb, $5)`,
			e.Topic, e.Key, e.Type, headers, e.Payload)
		return wrap(err)
	case SQLTx:
		q := `INSERT INTO ` + o.table + ` (topic, "key", "type", headers, payload) VALUES ($1, $2, $3, $4::jsonb, $5)`
		if o.mysql {
			q = "INSERT INTO " + o.table + " (topic, `key`, `type`, headers, payload) VALUES (?, ?, ?, ?, ?)"
		}
		_, err := tx.ExecContext(ctx, q, e.Topic, e.Key, e.Type, headers, e.Payload)
		return wrap(err)
	default:
		return fmt.Errorf("outbox: %T is neither a database/sql nor a pgx transaction", tx)
	}
}

func wrap(err error) error {
	if err != nil {
		return fmt.Errorf("outbox: write: %w", err)
	}
	return nil
}
