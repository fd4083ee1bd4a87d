package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/source"
)

// lagEvery is how often an idle or busy shard counts the rows waiting.
const lagEvery = 2 * time.Second

// maxLagCount bounds the count of waiting rows, so a huge backlog costs a
// bounded scan.
const maxLagCount = 1_000_000

func quotePG(ident string) string {
	parts := strings.Split(ident, ".")
	for i, p := range parts {
		parts[i] = `"` + p + `"`
	}
	return strings.Join(parts, ".")
}

// pgQueries are one shard's statements.
type pgQueries struct {
	lock, sel, done, lag string
}

func pgStatements(c Config, sh *source.Shard) pgQueries {
	t := quotePG(c.Table)
	where := "TRUE"
	if c.OnPublish == OnPublishMark {
		where = "published_at IS NULL"
	}
	if sh.Count > 1 {
		// Ranges of hashtext(key), an int4, shifted to 0..2^32: shard i
		// takes floor(h*n/2^32) = i.
		where += fmt.Sprintf(` AND ((hashtext("key")::bigint + 2147483648) * %d) >> 32 = %d`, sh.Count, sh.Index)
	}
	q := pgQueries{
		lock: `SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))`,
		sel: `SELECT id, topic, coalesce("key", ''), coalesce("type", ''), headers, payload, created_at FROM ` + t + ` WHERE ` + where +
			fmt.Sprintf(` ORDER BY id LIMIT %d FOR UPDATE SKIP LOCKED`, c.BatchSize),
		done: `DELETE FROM ` + t + ` WHERE id = ANY($1)`,
		lag:  `SELECT count(*) FROM (SELECT 1 FROM ` + t + ` WHERE ` + where + fmt.Sprintf(` LIMIT %d) w`, maxLagCount),
	}
	if c.OnPublish == OnPublishMark {
		q.done = `UPDATE ` + t + ` SET published_at = now() WHERE id = ANY($1)`
	}
	return q
}

func runPostgres(ctx context.Context, c Config, poll time.Duration, sh *source.Shard, allowPrivate bool) error {
	pc, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		return fmt.Errorf("the outbox dsn: %w", redactErr(err, c.DSN))
	}
	pc.DialFunc = dialer(allowPrivate).DialContext
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("connect to the outbox database: %w", redactErr(err, c.DSN))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	listener, err := pgx.ConnectConfig(ctx, pc.Copy())
	if err != nil {
		return fmt.Errorf("connect to the outbox database: %w", redactErr(err, c.DSN))
	}
	defer listener.Close(context.WithoutCancel(ctx))
	if _, err := listener.Exec(ctx, "LISTEN "+quotePG(c.NotifyChannel)); err != nil {
		return fmt.Errorf("listen on %s: %w", c.NotifyChannel, err)
	}
	sh.Running()
	q := pgStatements(c, sh)
	var lagAt time.Time
	for ctx.Err() == nil {
		n, err := pgBatch(ctx, conn, q, sh)
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
			if err := conn.QueryRow(ctx, q.lag).Scan(&lag); err == nil {
				sh.SetLag(lag)
			}
			lagAt = time.Now()
		}
		if n == c.BatchSize {
			continue // more are waiting
		}
		wctx, cancel := context.WithTimeout(ctx, poll)
		err = listener.PgConn().WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			return fmt.Errorf("wait for a notification on %s: %w", c.NotifyChannel, err)
		}
		if listener.IsClosed() && ctx.Err() == nil {
			return errors.New("the outbox database closed the listening connection")
		}
	}
	return nil
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// pgBatch takes, publishes and deletes (or marks) one batch of rows in one
// outbox transaction, and returns how many rows it took. It takes none
// while another process holds the shard's lock.
func pgBatch(ctx context.Context, conn *pgx.Conn, q pgQueries, sh *source.Shard) (int, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var locked bool
	if err := tx.QueryRow(ctx, q.lock, lockName(sh)).Scan(&locked); err != nil {
		return 0, fmt.Errorf("lock the shard: %w", err)
	}
	if !locked {
		return 0, nil
	}
	rows, err := tx.Query(ctx, q.sel)
	if err != nil {
		return 0, fmt.Errorf("read the outbox: %w", err)
	}
	var batch []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.topic, &r.key, &r.typ, &r.headers, &r.payload, &r.createdAt); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read an outbox row (columns id, topic, key, type, headers, payload, created_at): %w", err)
		}
		batch = append(batch, r)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read the outbox: %w", err)
	}
	if len(batch) == 0 {
		return 0, nil
	}
	msgs := make([]source.Message, len(batch))
	ids := make([]int64, len(batch))
	for i := range batch {
		msgs[i], ids[i] = batch[i].message(), batch[i].id
	}
	if err := sh.Publish(ctx, msgs); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, q.done, ids); err != nil {
		return 0, fmt.Errorf("remove published rows: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit the outbox: %w", err)
	}
	return len(batch), nil
}

// redactErr keeps a DSN's password out of an error's text.
func redactErr(err error, dsn string) error {
	msg := err.Error()
	if i := strings.Index(dsn, "://"); i >= 0 {
		rest := dsn[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pass, ok := strings.Cut(rest[:at], ":"); ok && pass != "" {
				return errors.New(strings.ReplaceAll(msg, pass, "xxxxx"))
			}
		}
	}
	return err
}
