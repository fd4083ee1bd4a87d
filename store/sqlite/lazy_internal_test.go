package sqlite

import (
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
)

// A lazy transaction (settlements) commits at synchronous=NORMAL, and the
// writer is back at FULL afterwards, whether it committed or rolled back:
// a publish that follows is still synced before it is acknowledged.
func TestLazyTxSyncsOnlyItself(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	ctx := t.Context()
	write := func(name string, inside *int64, fail error) error {
		return s.withLazyTx(ctx, func(tx *sql.Tx) error {
			if err := tx.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(inside); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO topics (name, retention, max_event_bytes, dedup_window, created_at, updated_at)
				VALUES (?, 1, 1, 1, 1, 1)`, name); err != nil {
				return err
			}
			return fail
		})
	}

	var inside int64
	if err := write("kept", &inside, nil); err != nil {
		t.Fatal(err)
	}
	if inside != 1 {
		t.Errorf("synchronous inside the lazy transaction = %d, want 1 (NORMAL)", inside)
	}
	if got := count(t, s, `PRAGMA synchronous`); got != 2 {
		t.Fatalf("writer synchronous after a lazy commit = %d, want 2 (FULL)", got)
	}
	var n int64
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM topics WHERE name = 'kept'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("the committed row is seen %d times by a reader (%v), want 1", n, err)
	}

	boom := errors.New("boom")
	if err := write("rolled-back", &inside, boom); !errors.Is(err, boom) {
		t.Fatalf("withLazyTx = %v, want the function's error", err)
	}
	if got := count(t, s, `PRAGMA synchronous`); got != 2 {
		t.Fatalf("writer synchronous after a lazy rollback = %d, want 2 (FULL)", got)
	}
	if got := count(t, s, `SELECT count(*) FROM topics WHERE name = 'rolled-back'`); got != 0 {
		t.Fatalf("a rolled-back lazy transaction left %d rows", got)
	}
}
