// Package postgres is Herald's store on PostgreSQL, for running several
// nodes against one database. It uses pgx through a pgxpool connection pool.
//
// Every node may append to every topic: seqs are allocated per topic by
// incrementing the topic row's head_seq inside the appending transaction,
// so the row lock keeps them gap-free and increasing across nodes, and a
// rolled-back transaction takes its seqs with it
// (docs/adr/0002-postgres-seq-allocation.md).
//
// Subscriptions (herald.SubscriptionStore) keep their delivery state in
// tables of their own: cursors, retries, dead letters, attempts. Every
// write to a subscription's state holds its row lock, which is also where
// its dispatch lease and fencing epoch live, so a Settle under a lost
// lease is refused and changes nothing (migrations/0002_subscriptions.sql).
//
// The tables live in the first schema of the connection's search_path, so
// one database can hold several Herald installations (or test runs) side
// by side: add search_path=name to the DSN.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"
)

var _ herald.Store = (*Store)(nil)

// Options tune a Store. The zero value is ready to use.
type Options struct {
	// Logger receives migration and configuration messages; nil discards
	// them.
	Logger *slog.Logger
	// MaxConns bounds the connection pool; 0 means the pgxpool default
	// (the larger of 4 and the number of CPUs), unless the DSN sets
	// pool_max_conns.
	MaxConns int32
}

// Store is a herald.Store on a PostgreSQL database. It is safe for
// concurrent use, also by several processes on the same database. Open
// creates it; the caller closes it with Close.
type Store struct {
	log  *slog.Logger
	pool *pgxpool.Pool

	closed    atomic.Bool
	closeOnce sync.Once

	// copyFrom is the number of events in an Append from which rows are
	// written with COPY instead of INSERT ... SELECT FROM unnest(...);
	// 0 means never. Open sets defaultCopyFrom; benchmarks change it to
	// compare the two.
	copyFrom int

	// notify is where Append announces commits; nil until EnableNotify
	// (notify.go).
	notify atomic.Pointer[notifyTarget]
	// notifyWarned is when notifyFailed last logged (Unix nanoseconds).
	notifyWarned atomic.Int64
}

// defaultCopyFrom is where COPY starts to pay for its extra round trip:
// INSERT ... unnest rides in the round trip that commits, COPY needs one
// of its own but writes rows in bulk. Measured in
// docs/adr/0002-postgres-seq-allocation.md: INSERT is ahead at 1 and 100
// events, COPY at 300 and 1000.
const defaultCopyFrom = 200

// Open connects to the database at dsn (a postgres:// URL or a key=value
// string that pgx accepts, including pool_* settings), applies any pending
// migrations, and returns the store. Migrations run in one transaction
// under an advisory lock, so nodes starting together apply them once and
// the others wait for it. The caller must call Close.
//
// Sessions get idle_in_transaction_session_timeout=10s unless the DSN sets
// it, so the topic locks of a node that vanished mid-append are released
// within seconds.
//
// A bad DSN fails with CodeInvalid (Field "dsn"); an unreachable database
// with CodeUnavailable; a schema newer than this build with CodeConflict.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	pool, err := newPool(ctx, dsn, opts.MaxConns)
	if err != nil {
		return nil, err
	}
	s := &Store{log: log, pool: pool, copyFrom: defaultCopyFrom}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	s.checkDurability(ctx)
	return s, nil
}

// Migrate applies any pending migrations to the database at dsn and
// returns; it is "herald migrate". It is safe to run beside live nodes.
func Migrate(ctx context.Context, dsn string) error {
	pool, err := newPool(ctx, dsn, 1)
	if err != nil {
		return err
	}
	defer pool.Close()
	s := &Store{log: slog.New(slog.NewTextHandler(io.Discard, nil)), pool: pool}
	return s.migrate(ctx)
}

// idleInTxTimeout is the default idle_in_transaction_session_timeout of
// the store's sessions; a DSN that sets it wins.
const idleInTxTimeout = 10 * time.Second

func newPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from its parse errors.
		return nil, &herald.Error{Code: herald.CodeInvalid, Field: "dsn", Message: "the postgres DSN is not valid", Err: err}
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	// A node that vanishes in the middle of an Append (its machine or
	// network gone, so no FIN reaches the server) would keep its topic rows
	// locked until TCP keepalive gives up, hours by default. Herald's
	// transactions are never idle for more than a few microseconds between
	// statements, so the server may end any that stay idle.
	if _, set := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; !set {
		cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(idleInTxTimeout.Milliseconds(), 10)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, &herald.Error{Code: herald.CodeInternal, Message: "create the postgres pool", Err: err}
	}
	return pool, nil
}

// checkDurability warns when the server acknowledges commits before they
// reach disk: Herald's "acked means durable" then holds only as long as
// the database server does not crash. The setting is the operator's.
func (s *Store) checkDurability(ctx context.Context) {
	var syncCommit, fsync string
	err := s.pool.QueryRow(ctx, `SELECT current_setting('synchronous_commit'), current_setting('fsync')`).Scan(&syncCommit, &fsync)
	if err != nil {
		s.log.Warn("postgres store: cannot read the durability settings", "err", err)
		return
	}
	if syncCommit == "off" || fsync == "off" {
		s.log.Warn("postgres store: commits are not flushed to disk before they are acknowledged; a database crash can lose acknowledged events",
			"synchronous_commit", syncCommit, "fsync", fsync)
	}
}

// Close closes the connection pool, waiting for connections in use to be
// released. It is idempotent; calls to other methods after Close fail with
// CodeUnavailable.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.pool.Close()
	})
	return nil
}

// Ping checks that a connection can run a query.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	return s.fail("ping", s.pool.Ping(ctx))
}

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return herald.Errorf(herald.CodeUnavailable, "the store is closed")
	}
	return nil
}

// PostgreSQL error codes used by fail
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	pgUniqueViolation       = "23505"
	pgCharNotInRepertoire   = "22021"
	pgUntranslatableChar    = "22P05"
	pgSerializationFailure  = "40001"
	pgDeadlockDetected      = "40P01"
	pgLockNotAvailable      = "55P03"
	pgQueryCanceled         = "57014"
	pgAdminShutdown         = "57P01"
	pgCrashShutdown         = "57P02"
	pgCannotConnectNow      = "57P03"
	pgTooManyConnections    = "53300"
	pgDiskFull              = "53100"
	pgOutOfMemory           = "53200"
	pgReadOnlyTransaction   = "25006"
	pgInsufficientResources = "53000"
)

// fail translates a driver or context error into a *herald.Error with a
// code; errors that already carry one pass through. Message is safe to
// show; the driver's text stays in Err.
func (s *Store) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*herald.Error](err); ok {
		return err
	}
	code, msg := herald.CodeInternal, "store failure"
	pgErr, isPg := errors.AsType[*pgconn.PgError](err)
	switch {
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		code, msg = herald.CodeTimeout, "the store did not answer in time"
	case errors.Is(err, context.Canceled):
		code, msg = herald.CodeUnavailable, "the request was canceled"
	case errors.Is(err, puddle.ErrClosedPool), s.closed.Load():
		code, msg = herald.CodeUnavailable, "the store is closed"
	case isPg:
		switch pgErr.Code {
		case pgUniqueViolation:
			code, msg = herald.CodeConflict, "it already exists"
		case pgCharNotInRepertoire, pgUntranslatableChar:
			code, msg = herald.CodeInvalid, "text must be valid UTF-8 without NUL bytes"
		case pgQueryCanceled:
			code, msg = herald.CodeTimeout, "the store did not answer in time"
		case pgSerializationFailure, pgDeadlockDetected, pgLockNotAvailable,
			pgAdminShutdown, pgCrashShutdown, pgCannotConnectNow, pgTooManyConnections,
			pgReadOnlyTransaction, pgInsufficientResources, pgOutOfMemory:
			code, msg = herald.CodeUnavailable, "the store is busy; try again"
		case pgDiskFull:
			code, msg = herald.CodeUnavailable, "disk full on the database server"
		}
	default:
		if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
			code, msg = herald.CodeUnavailable, "the database is unreachable"
		}
	}
	return &herald.Error{Code: code, Message: msg, Err: fmt.Errorf("postgres: %s: %w", op, err)}
}

func topicNotFound(name string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "topic", Message: "topic " + name + " does not exist"}
}

// validText reports whether PostgreSQL can store s in a text column: valid
// UTF-8 without NUL bytes. A name that fails it cannot exist in the store,
// so lookups answer "not found" without asking the database (which would
// fail the statement instead).
func validText(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// The times a bigint of Unix nanoseconds can hold.
var (
	minTime = time.Unix(0, math.MinInt64+1) // MinInt64 itself would read back as unset
	maxTime = time.Unix(0, math.MaxInt64)
)

// inNanosRange reports whether t is zero or can be stored as nanoseconds.
func inNanosRange(t time.Time) bool {
	return t.IsZero() || !t.Before(minTime) && !t.After(maxTime)
}

// nanos converts a time to the stored integer: Unix nanoseconds, 0 for the
// zero time. Callers check inNanosRange first.
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

// inTx runs fn in a transaction and commits it; on any error it rolls
// back. A commit returns after the server made it durable (with the
// default synchronous_commit).
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}
