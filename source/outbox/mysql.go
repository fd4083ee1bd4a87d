package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/heraldhq/herald/source"
)

// mysqlDSN parses a MySQL DSN, with or without "mysql://", and makes it
// read times as time.Time.
func mysqlDSN(dsn string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
	if err != nil {
		return nil, err
	}
	cfg.ParseTime = true
	return cfg, nil
}

func quoteMySQL(ident string) string {
	parts := strings.Split(ident, ".")
	for i, p := range parts {
		parts[i] = "`" + p + "`"
	}
	return strings.Join(parts, ".")
}

func runMySQL(ctx context.Context, c Config, poll time.Duration, sh *source.Shard, allowPrivate bool) error {
	mc, err := mysqlDSN(c.DSN)
	if err != nil {
		return err
	}
	mc.DialFunc = dialer(allowPrivate).DialContext
	connector, err := mysql.NewConnector(mc)
	if err != nil {
		return err
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect to the outbox database: %w", err)
	}
	defer conn.Close()
	sh.Running()

	// The shard's named lock lives as long as this connection: another
	// process waits for it (a node that lost its lease and has not noticed
	// yet cannot interleave its batches with the new holder's).
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, lockName(sh)).Scan(&got); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lock the shard: %w", err)
		}
		if got.Int64 == 1 {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}

	t := quoteMySQL(c.Table)
	where := "TRUE"
	if c.OnPublish == OnPublishMark {
		where = "published_at IS NULL"
	}
	if sh.Count > 1 {
		where += fmt.Sprintf(" AND (CRC32(`key`) * %d) >> 32 = %d", sh.Count, sh.Index)
	}
	// FOR UPDATE without SKIP LOCKED: InnoDB's locking read sees the
	// latest committed rows as it scans, not a snapshot, so skipping the
	// rows an application's transaction still holds would let the scan
	// pass its first rows and take its last ones once it commits mid-scan,
	// and publish them first. Waiting for that transaction keeps id order;
	// readers of one shard are serialised by the shard lock anyway.
	sel := "SELECT id, topic, `key`, `type`, headers, payload, created_at FROM " + t + " WHERE " + where +
		fmt.Sprintf(" ORDER BY id LIMIT %d FOR UPDATE", c.BatchSize)
	lagQ := "SELECT count(*) FROM (SELECT 1 FROM " + t + " WHERE " + where + fmt.Sprintf(" LIMIT %d) w", maxLagCount)
	var lagAt time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for ctx.Err() == nil {
		n, err := mysqlBatch(ctx, conn, c, t, sel, sh)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		// Count before sleeping too: a shard that drained its rows must
		// not show the last count taken mid-backlog until its next poll.
		if time.Since(lagAt) >= lagEvery || n < c.BatchSize {
			var lag int64
			if err := conn.QueryRowContext(ctx, lagQ).Scan(&lag); err == nil {
				sh.SetLag(lag)
			}
			lagAt = time.Now()
		}
		if n == c.BatchSize {
			continue
		}
		timer.Reset(poll)
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
	}
	return nil
}

func mysqlBatch(ctx context.Context, conn *sql.Conn, c Config, table, sel string, sh *source.Shard) (int, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, sel)
	if err != nil {
		return 0, fmt.Errorf("read the outbox: %w", err)
	}
	var batch []row
	for rows.Next() {
		var r row
		var key, typ sql.NullString
		if err := rows.Scan(&r.id, &r.topic, &key, &typ, &r.headers, &r.payload, &r.createdAt); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read an outbox row (columns id, topic, key, type, headers, payload, created_at): %w", err)
		}
		r.key, r.typ = key.String, typ.String
		batch = append(batch, r)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read the outbox: %w", err)
	}
	rows.Close()
	if len(batch) == 0 {
		return 0, nil
	}
	msgs := make([]source.Message, len(batch))
	args := make([]any, len(batch))
	for i := range batch {
		msgs[i], args[i] = batch[i].message(), batch[i].id
	}
	if err := sh.Publish(ctx, msgs); err != nil {
		return 0, err
	}
	in := "(" + strings.TrimSuffix(strings.Repeat("?,", len(args)), ",") + ")"
	done := "DELETE FROM " + table + " WHERE id IN " + in
	if c.OnPublish == OnPublishMark {
		done = "UPDATE " + table + " SET published_at = CURRENT_TIMESTAMP(6) WHERE id IN " + in
	}
	if _, err := tx.ExecContext(ctx, done, args...); err != nil {
		return 0, fmt.Errorf("remove published rows: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit the outbox: %w", err)
	}
	return len(batch), nil
}
