// Package sqlite is Herald's embedded store: one SQLite file in WAL mode
// with synchronous=FULL, so an acknowledged append survives a crash of the
// process and of the machine.
//
// Writes go through a single connection (SQLite allows one writer at a
// time; queueing in Go is cheaper than spinning on SQLITE_BUSY), reads go
// through a separate pool of read-only connections, which WAL lets run
// beside the writer without waiting for it.
//
// Subscriptions and their delivery state live in the same file. A
// dispatch lease's epoch is checked inside the write transaction that
// applies a settlement, and that transaction is the only writer, so a node
// (or a worker) that lost a subscription cannot move its cursors.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldhq/herald"
)

var _ herald.Store = (*Store)(nil)

// Options tune a Store. The zero value is ready to use.
type Options struct {
	// Logger receives migration and maintenance messages; nil discards them.
	Logger *slog.Logger
	// MaxReadConns bounds the read pool; 0 means max(4, GOMAXPROCS).
	MaxReadConns int
	// BusyTimeout is how long a statement waits for a lock held by another
	// process (for example "herald migrate" beside a running server);
	// 0 means 5s.
	BusyTimeout time.Duration
}

// Store is a herald.Store and a herald.SubscriptionStore on one SQLite
// file. It is safe for concurrent use. Open creates it; the caller closes
// it with Close.
type Store struct {
	log    *slog.Logger
	path   string
	writer *sql.DB // exactly one connection: SQLite has one writer at a time
	reader *sql.DB // read-only pool; WAL readers never wait for the writer
	closed atomic.Bool

	closeOnce sync.Once
	closeErr  error

	// Prepared on the writer connection once; transactions bind them with
	// Tx.StmtContext, which reuses the preparation on the same connection.
	wTopicByName *sql.Stmt
	wDedupGet    batchStmts // IN lists of 1, 2, 4, ... keys of one topic
	wIDGet       batchStmts // IN lists of 1, 2, 4, ... event ids of one topic
	wSetHead     *sql.Stmt
	wInsert      batchStmts
	wDedupPut    batchStmts // new keys only: a multi-row INSERT OR ROLLBACK
	wDedupRenew  *sql.Stmt  // a key stored before whose window had passed
	settle       settleStmts

	// Prepared on the read pool; database/sql prepares them once on each
	// connection that runs them.
	rGetTopic   *sql.Stmt
	rReadEvents *sql.Stmt
	rGetEvent   *sql.Stmt
	rSeqAtTime  *sql.Stmt

	rGetSub       *sql.Stmt
	rGetState     *sql.Stmt // a view read: prepared once, not per read
	rStatePos     *sql.Stmt
	rCursors      *sql.Stmt
	rDueRetries   *sql.Stmt
	rRetryKeys    *sql.Stmt
	rCountRetries *sql.Stmt
	rCountDead    *sql.Stmt
	rListDead     *sql.Stmt
}

// Open opens the store in the SQLite file at path, creating the file and its
// parent directory if needed, and applies any pending migrations in one
// transaction. The caller must call Close.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, herald.FieldErrorf("path", "sqlite store path is empty")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, &herald.Error{Code: herald.CodeInternal, Message: "create the store directory", Err: err}
		}
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 5 * time.Second
	}
	readConns := opts.MaxReadConns
	if readConns <= 0 {
		readConns = max(4, runtime.GOMAXPROCS(0))
	}

	s := &Store{log: log, path: path}
	s.writer = openDB(dsn(path, busy, false))
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	s.writer.SetConnMaxLifetime(0)
	s.writer.SetConnMaxIdleTime(0)

	if err := s.migrate(ctx); err != nil {
		_ = s.writer.Close()
		return nil, err
	}

	s.reader = openDB(dsn(path, busy, true))
	s.reader.SetMaxOpenConns(readConns)
	s.reader.SetMaxIdleConns(readConns)
	s.reader.SetConnMaxIdleTime(5 * time.Minute)

	if err := s.prepare(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// dsn returns the data source name of a writer or reader connection, with
// the settings every connection needs in the driver's own syntax.
func dsn(path string, busy time.Duration, readOnly bool) string {
	// SQLite parses "file:" names as URIs: escape what would end the path.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	// _txlock: every write transaction takes the write lock at BEGIN; a
	// deferred one that upgrades later can fail with SQLITE_BUSY when another
	// process holds the lock, without the busy handler helping.
	// auto_vacuum takes effect only on a new, empty file (it is applied
	// before journal_mode); see docs/adr/0001-sqlite-driver.md.
	return "file:" + esc + "?" + driverParams(busy, readOnly)
}

func (s *Store) prepare(ctx context.Context) error {
	var err error
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = s.writer.PrepareContext(ctx, q)
		return st
	}
	s.wTopicByName = prep(`SELECT id, head_seq, dedup_window FROM topics WHERE name = ?`)
	s.wSetHead = prep(`UPDATE topics SET head_seq = ? WHERE id = ?`)
	s.wDedupRenew = prep(`UPDATE dedup SET event_id = ?, seq = ?, time = ? WHERE topic_id = ? AND idem_key = ?`)
	// OR ROLLBACK: a multi-row write that may fail halfway (the default
	// ABORT) makes SQLite keep a statement journal to undo just that
	// statement, copying every page it touches that the transaction had
	// dirtied already, and past 64 KiB spilling it to a temporary file:
	// for a batch of 500 events that was 2 KB written per event besides
	// the WAL. An append that fails a constraint fails whole anyway, so
	// rolling back the transaction loses nothing (docs/benchmarks.md).
	for i := range s.wInsert {
		s.wInsert[i] = prep(valuesSQL(`INSERT OR ROLLBACK INTO events (topic_id, seq, id, time, event_type, event_key, idem_key,
			content_type, headers, payload) VALUES `, eventColumns, 1<<i, ``))
		s.wDedupGet[i] = prep(`SELECT idem_key, event_id, seq, time FROM dedup WHERE topic_id = ? AND idem_key IN (?` +
			strings.Repeat(`,?`, 1<<i-1) + `)`)
		// INDEXED BY: without statistics the planner prefers scanning the
		// topic's whole range of the primary key, which grows with the log.
		s.wIDGet[i] = prep(`SELECT id, seq, time, payload FROM events INDEXED BY events_by_id WHERE topic_id = ? AND id IN (?` +
			strings.Repeat(`,?`, 1<<i-1) + `)`)
		s.wDedupPut[i] = prep(valuesSQL(`INSERT OR ROLLBACK INTO dedup (topic_id, idem_key, event_id, seq, time) VALUES `, dedupColumns, 1<<i, ``))
	}
	s.settle.prepare(prep)

	rprep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = s.reader.PrepareContext(ctx, q)
		return st
	}
	s.rGetTopic = rprep(`SELECT ` + topicColumns + ` FROM topics t WHERE t.name = ?`)
	s.rReadEvents = rprep(eventSelect + ` WHERE e.topic_id = (SELECT id FROM topics WHERE name = ?) AND e.seq > ? ORDER BY e.seq LIMIT ?`)
	// INDEXED BY, as for wIDGet: otherwise a GET by id scans the topic.
	s.rGetEvent = rprep(eventSelect + ` INDEXED BY events_by_id WHERE e.topic_id = (SELECT id FROM topics WHERE name = ?) AND e.id = ?
		ORDER BY e.seq DESC LIMIT 1`)
	s.rSeqAtTime = rprep(`SELECT t.head_seq, (SELECT min(e.seq) FROM events e WHERE e.topic_id = t.id AND e.time >= ?)
		FROM topics t WHERE t.name = ?`)
	s.rGetSub = rprep(getSubSQL)
	s.rGetState = rprep(`SELECT seq, updated_at, value FROM state WHERE owner = ? AND key = ?`)
	s.rStatePos = rprep(`SELECT seq FROM state_positions WHERE owner = ?`)
	s.rCursors = rprep(cursorsSQL)
	s.rDueRetries = rprep(dueRetriesSQL)
	s.rRetryKeys = rprep(retryKeysSQL)
	s.rCountRetries = rprep(countRetriesSQL)
	s.rCountDead = rprep(countDeadSQL)
	s.rListDead = rprep(listDeadSQL)
	if err != nil {
		return s.fail("prepare statements", err)
	}
	return nil
}

// batchStmts holds a multi-row statement for 1, 2, 4, ... maxBatchRows
// rows. Multi-row statements save a VM run per row; powers of two cover
// any count in a few runs with few prepared statements.
type batchStmts [6]*sql.Stmt

// maxBatchRows is the most rows one batch statement carries; it keeps the
// parameter count (maxBatchRows * eventColumns) far below SQLite's limit.
const maxBatchRows = 1 << (len(batchStmts{}) - 1)

// exec runs the statements over rows of width arguments each.
func (b *batchStmts) exec(ctx context.Context, tx *sql.Tx, args []any, width int) error {
	return execRows(ctx, tx, b[:], args, width)
}

// execRows runs multi-row statements over rows of width arguments each:
// stmts[i] takes 1<<i rows, and each run takes the largest that fits.
func execRows(ctx context.Context, tx *sql.Tx, stmts []*sql.Stmt, args []any, width int) error {
	for len(args) > 0 {
		rows := len(args) / width
		i := min(bits.Len(uint(rows))-1, len(stmts)-1)
		n := (1 << i) * width
		st := tx.StmtContext(ctx, stmts[i])
		_, err := st.ExecContext(ctx, args[:n]...)
		_ = st.Close()
		if err != nil {
			return err
		}
		args = args[n:]
	}
	return nil
}

// valuesSQL returns head followed by rows groups of width placeholders and
// then tail.
func valuesSQL(head string, width, rows int, tail string) string {
	group := "(?" + strings.Repeat(",?", width-1) + ")"
	return head + group + strings.Repeat(","+group, rows-1) + tail
}

// Close closes both connection pools. It is idempotent; calls to other
// methods after Close fail with CodeUnavailable.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		var errs []error
		if s.reader != nil {
			errs = append(errs, s.reader.Close())
		}
		// Closing the writer's last connection checkpoints the WAL into
		// the database file and removes it.
		errs = append(errs, s.writer.Close())
		if err := errors.Join(errs...); err != nil {
			s.closeErr = &herald.Error{Code: herald.CodeInternal, Message: "close the sqlite store", Err: err}
		}
	})
	return s.closeErr
}

// Ping checks that both pools can run a query.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	var one int
	if err := s.reader.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return s.fail("ping reader", err)
	}
	if err := s.writer.PingContext(ctx); err != nil {
		return s.fail("ping writer", err)
	}
	return nil
}

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return herald.Errorf(herald.CodeUnavailable, "the store is closed")
	}
	return nil
}

// fail translates a driver or context error into a *herald.Error with a
// code; errors that already carry one pass through.
func (s *Store) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*herald.Error](err); ok {
		return err
	}
	code, msg := herald.CodeInternal, "store failure"
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = herald.CodeTimeout, "the store did not answer in time"
	case errors.Is(err, context.Canceled):
		code, msg = herald.CodeUnavailable, "the request was canceled"
	case errors.Is(err, sql.ErrConnDone), s.closed.Load():
		code, msg = herald.CodeUnavailable, "the store is closed"
	default:
		switch c := sqliteCode(err); c & 0xff {
		case sqliteConstraint:
			if c == sqliteConstraintUnique || c == sqliteConstraintPrimaryKey {
				code, msg = herald.CodeConflict, "it already exists"
			}
		case sqliteBusy, sqliteLocked:
			code, msg = herald.CodeUnavailable, "the store is busy; try again"
		case sqliteFull:
			code, msg = herald.CodeUnavailable, msgDiskFull
		case sqliteIOErr:
			code, msg = herald.CodeUnavailable, "disk I/O error"
			if sqliteErrno(err) == syscall.ENOSPC {
				msg = msgDiskFull
			}
		}
	}
	return &herald.Error{Code: code, Message: msg, Err: fmt.Errorf("sqlite: %s: %w", op, err)}
}

// msgDiskFull is the caller-safe reason for a write that found no room: it
// names the class of failure and no path.
const msgDiskFull = "disk full: the database file cannot grow"

// SQLite result codes used by fail (https://sqlite.org/rescode.html).
const (
	sqliteBusy                 = 5
	sqliteLocked               = 6
	sqliteIOErr                = 10
	sqliteFull                 = 13
	sqliteConstraint           = 19
	sqliteConstraintPrimaryKey = 19 | 6<<8
	sqliteConstraintUnique     = 19 | 8<<8
)

// nanos converts a time to the stored integer: Unix nanoseconds, 0 for the
// zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos; times come back in UTC.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// withTx runs fn in a write transaction and commits it; on any error it
// rolls back. With synchronous=FULL the commit is durable when it returns.
func (s *Store) withTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	return commitTx(tx, err, fn)
}

// commitTx runs fn in tx, whose BeginTx returned beginErr, and commits it;
// on any error it rolls back.
func commitTx(tx *sql.Tx, beginErr error, fn func(tx *sql.Tx) error) error {
	if beginErr != nil {
		return beginErr
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// withLazyTx is withTx for a transaction whose loss in a power failure
// does no harm, like a delivery settlement (a lost one means deliveries
// are repeated, which at-least-once allows): its commit does not wait for
// the disk. The writer runs it at synchronous=NORMAL and returns to FULL
// before anything else uses the connection, so publishes stay durable
// when acknowledged. In WAL mode the transaction becomes durable with the
// next FULL commit or checkpoint, which sync the whole log; and a process
// crash loses nothing either way, since the write reached the operating
// system. See docs/adr/0006-settlements-skip-the-sync.md.
func (s *Store) withLazyTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		return err
	}
	tx, err := conn.BeginTx(ctx, nil)
	err = commitTx(tx, err, fn)
	if _, serr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA synchronous = FULL`); serr != nil {
		// The connection must not serve a publish unsynced: drop it, and
		// the pool opens a new one with the DSN's FULL.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return errors.Join(err, fmt.Errorf("restore synchronous=FULL: %w", serr))
	}
	return err
}
