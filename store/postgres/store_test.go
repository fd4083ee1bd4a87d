package postgres

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/store/postgres/pgtest"

	"github.com/heraldhq/herald"
)

// testDSN creates a fresh schema on the server named by
// HERALD_TEST_POSTGRES and returns its DSN (see pgtest.SchemaOn). It skips
// the test when the variable is unset or the server cannot be reached.
func testDSN(t testing.TB) (dsn, schema string) {
	t.Helper()
	return pgtest.Schema(t, "herald_test")
}

// openTest opens a store on dsn and closes it when the test ends (before
// the schema is dropped: cleanups run last-registered first).
func openTest(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, Options{Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), MaxConns: 8})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// newTestStore opens a store on a fresh schema.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	dsn, _ := testDSN(t)
	return openTest(t, dsn)
}

func putTopic(t testing.TB, s *Store, name string) herald.Topic {
	t.Helper()
	tp, _, err := s.PutTopic(context.Background(), herald.Topic{Name: name}.WithDefaults())
	if err != nil {
		t.Fatalf("PutTopic %s: %v", name, err)
	}
	return tp
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// lockWaiters counts this test's sessions that wait for a lock.
func lockWaiters(ctx context.Context, s *Store, schema string) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND wait_event_type = 'Lock'`, schema).Scan(&n)
	return n, err
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	dsn, _ := testDSN(t)
	ctx := t.Context()

	// Several nodes starting at once on an empty schema: all succeed, the
	// migrations are applied once.
	const nodes = 4
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	stores := make([]*Store, nodes)
	for i := range nodes {
		wg.Go(func() { stores[i], errs[i] = Open(ctx, dsn, Options{MaxConns: 2}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: Open: %v", i, err)
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	if err := Migrate(ctx, dsn); err != nil {
		t.Fatalf("Migrate on a migrated schema: %v", err)
	}
	var rows, version int
	if err := stores[0].pool.QueryRow(ctx, `SELECT count(*), max(version) FROM schema_version`).Scan(&rows, &version); err != nil {
		t.Fatal(err)
	}
	if rows != SchemaVersion() || version != SchemaVersion() {
		t.Errorf("schema_version has %d rows up to %d; want %d rows up to %d", rows, version, SchemaVersion(), SchemaVersion())
	}

	// A schema written by a newer build is refused, not half-used.
	if _, err := stores[0].pool.Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, 'future.sql')`, SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, dsn, Options{}); !herald.IsCode(err, herald.CodeConflict) {
		t.Errorf("Open on a newer schema: got %v, want CodeConflict", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(t.Context(), "postgres://h:notaport/db", Options{}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("bad DSN: got %v, want CodeInvalid", err)
	}
	// Nothing listens on port 1.
	if _, err := Open(t.Context(), "postgres://postgres@127.0.0.1:1/test?connect_timeout=5", Options{}); !herald.IsCode(err, herald.CodeUnavailable) {
		t.Errorf("unreachable database: got %v, want CodeUnavailable", err)
	}
	dsn, _ := testDSN(t)
	missing := strings.Replace(dsn, "search_path=herald_test_", "search_path=herald_missing_", 1)
	if _, err := Open(t.Context(), missing, Options{}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("search_path without a schema: got %v, want CodeInvalid", err)
	}
}

func TestClosed(t *testing.T) {
	s := newTestStore(t)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Ping(t.Context()); !herald.IsCode(err, herald.CodeUnavailable) {
		t.Errorf("Ping after Close: got %v, want CodeUnavailable", err)
	}
	if _, err := s.Append(t.Context(), []*herald.Event{{ID: "a", Topic: "t", Time: time.Now()}}); !herald.IsCode(err, herald.CodeUnavailable) {
		t.Errorf("Append after Close: got %v, want CodeUnavailable", err)
	}
}

// Sessions end transactions left idle (by a node that vanished), unless
// the DSN chose otherwise.
func TestIdleInTransactionTimeout(t *testing.T) {
	dsn, _ := testDSN(t)
	sep := " " // key=value form
	if strings.Contains(dsn, "://") {
		sep = "&" // testDSN's URLs always have a query
	}
	for _, tc := range []struct{ dsn, want string }{
		{dsn, "10s"},
		{dsn + sep + "idle_in_transaction_session_timeout=1min", "1min"},
	} {
		s := openTest(t, tc.dsn)
		var got string
		if err := s.pool.QueryRow(t.Context(), `SHOW idle_in_transaction_session_timeout`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("idle_in_transaction_session_timeout = %s, want %s", got, tc.want)
		}
	}
}
