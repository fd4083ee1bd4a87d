package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func openTest(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func count(t *testing.T, s *Store, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.writer.QueryRowContext(t.Context(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestPragmas(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	ctx := t.Context()
	var mode string
	if err := s.writer.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
	for pragma, want := range map[string]int64{"synchronous": 2, "foreign_keys": 1, "auto_vacuum": 2} {
		if got := count(t, s, `PRAGMA `+pragma); got != want {
			t.Errorf("writer %s = %d, want %d", pragma, got, want)
		}
	}
	var sync, queryOnly int64
	if err := s.reader.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
		t.Errorf("reader synchronous = %d, %v; want 2 (FULL)", sync, err)
	}
	if err := s.reader.QueryRowContext(ctx, `PRAGMA query_only`).Scan(&queryOnly); err != nil || queryOnly != 1 {
		t.Errorf("reader query_only = %d, %v; want 1", queryOnly, err)
	}
	if _, err := s.reader.ExecContext(ctx, `DELETE FROM topics`); err == nil {
		t.Error("a write through the read pool succeeded")
	}
}

// Reads go through their own pool: a write transaction holding the writer
// connection does not delay them.
func TestReadsDoNotWaitForTheWriter(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	if _, _, err := s.PutTopic(t.Context(), herald.Topic{Name: "t"}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	tx, err := s.writer.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(t.Context(), `UPDATE topics SET head_seq = 99`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tp, err := s.GetTopic(ctx, "t")
	if err != nil {
		t.Fatalf("GetTopic while a write transaction is open: %v", err)
	}
	if tp.HeadSeq != 0 {
		t.Fatalf("a read saw uncommitted head seq %d", tp.HeadSeq)
	}
	if _, err := s.ReadEvents(ctx, "t", 0, 10); err != nil {
		t.Fatalf("ReadEvents while a write transaction is open: %v", err)
	}
}

func TestReopenKeepsEventsSeqsAndDedupKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "dir", "h.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("Open in a missing directory: %v", err)
	}
	tp := herald.Topic{Name: "orders"}.WithDefaults()
	if _, _, err := s.PutTopic(t.Context(), tp); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	first := &herald.Event{ID: herald.NewID(now), Topic: "orders", Time: now, IdempotencyKey: "req-1", Payload: []byte("a")}
	if _, err := s.Append(t.Context(), []*herald.Event{first, {ID: herald.NewID(now), Topic: "orders", Time: now}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openTest(t, path)
	got, err := s.GetTopic(t.Context(), "orders")
	if err != nil || got.HeadSeq != 2 || got.FirstSeq != 1 {
		t.Fatalf("after reopen: %+v, %v; want HeadSeq 2, FirstSeq 1", got, err)
	}
	res, err := s.Append(t.Context(), []*herald.Event{
		{ID: herald.NewID(now), Topic: "orders", Time: now.Add(time.Minute), IdempotencyKey: "req-1"},
		{ID: herald.NewID(now), Topic: "orders", Time: now.Add(time.Minute)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Duplicate || res[0].ID != first.ID || res[0].Seq != 1 {
		t.Fatalf("dedup after reopen: %+v; want a duplicate of seq 1", res[0])
	}
	if res[1].Seq != 3 {
		t.Fatalf("seq after reopen = %d, want 3", res[1].Seq)
	}
	if v := count(t, s, `SELECT version FROM schema_version`); v != int64(SchemaVersion()) || v < 1 {
		t.Fatalf("schema_version = %d, want %d", v, SchemaVersion())
	}
	if n := count(t, s, `SELECT count(*) FROM schema_version`); n != 1 {
		t.Fatalf("schema_version has %d rows after two opens, want 1", n)
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	s := openTest(t, path)
	if _, err := s.writer.ExecContext(t.Context(), `UPDATE schema_version SET version = 999`); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	_, err := Open(t.Context(), path, Options{})
	if !herald.IsCode(err, herald.CodeConflict) || !strings.Contains(err.Error(), "999") {
		t.Fatalf("Open of a newer schema: %v; want CodeConflict naming version 999", err)
	}
}

func TestCreateKeyWithExistingHashIsConflict(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	_, hash := herald.NewKeySecret()
	k := herald.APIKey{ID: "key_a", Name: "a", Hash: hash, Scopes: herald.Scopes{{Action: herald.ActionAdmin}}}
	if err := s.CreateKey(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	k.ID = "key_b"
	if err := s.CreateKey(t.Context(), k); !herald.IsCode(err, herald.CodeConflict) {
		t.Fatalf("CreateKey with an existing hash: %v; want CodeConflict", err)
	}
}

func appendN(t *testing.T, s *Store, topic string, n int, at time.Time, payload []byte, keyed bool) {
	t.Helper()
	for done := 0; done < n; {
		batch := min(n-done, 500)
		evs := make([]*herald.Event, batch)
		for i := range evs {
			evs[i] = &herald.Event{ID: herald.NewID(at), Topic: topic, Time: at, Payload: payload}
			if keyed {
				evs[i].IdempotencyKey = fmt.Sprintf("k-%d", done+i)
			}
		}
		if _, err := s.Append(t.Context(), evs); err != nil {
			t.Fatal(err)
		}
		done += batch
	}
}

// A deleted topic's rows go in Prune's short transactions, counted against
// its limit; expired rows beyond one transaction's chunk all go in one call.
func TestPruneDeletedTopicsAndLargeBacklogs(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	now := time.Now().UTC()
	for _, name := range []string{"gone", "old"} {
		tp := herald.Topic{Name: name}.WithDefaults()
		tp.Retention = time.Hour
		if _, _, err := s.PutTopic(t.Context(), tp); err != nil {
			t.Fatal(err)
		}
	}
	appendN(t, s, "gone", 1200, now, []byte("x"), true) // 1200 events + 1200 keys
	if err := s.DeleteTopic(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "old", 1300, now.Add(-2*time.Hour), []byte("y"), false)

	var got []int64
	for {
		n, err := s.Prune(t.Context(), now, 1000)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
		if n < 1000 {
			break
		}
	}
	if fmt.Sprint(got) != "[1000 1000 1000 700]" {
		t.Fatalf("Prune(limit 1000) results %v, want [1000 1000 1000 700] (2400 rows of the deleted topic, 1300 expired)", got)
	}
	if n := count(t, s, `SELECT count(*) FROM events`) + count(t, s, `SELECT count(*) FROM dedup`) +
		count(t, s, `SELECT count(*) FROM dead_topics`); n != 0 {
		t.Fatalf("%d rows left after pruning", n)
	}
	tp, err := s.GetTopic(t.Context(), "old")
	if err != nil || tp.HeadSeq != 1300 || tp.EventCount() != 0 {
		t.Fatalf("old after prune: %+v, %v", tp, err)
	}
}

// After a large deletion, Prune returns free pages to the file system a
// bounded number at a time; in steady state SQLite reuses them instead.
func TestPruneShrinksTheFileAfterLargeDeletes(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	now := time.Now().UTC()
	tp := herald.Topic{Name: "big"}.WithDefaults()
	if _, _, err := s.PutTopic(t.Context(), tp); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "big", 3000, now, make([]byte, 4000), false) // ~3000 overflow pages
	before := count(t, s, `PRAGMA page_count`)
	if err := s.DeleteTopic(t.Context(), "big"); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := s.Prune(t.Context(), now, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if n < 1000 {
			break
		}
	}
	after := count(t, s, `PRAGMA page_count`)
	if after > before/2 {
		t.Fatalf("page_count %d before, %d after deleting everything; want the file shrunk", before, after)
	}
}

// A write that finds no room is reported as "disk full", unavailable, and
// without the database's path: what a publisher and /readyz show. The
// database's page limit stands in for a full disk here (both are
// SQLITE_FULL); cmd/herald's TestFullDisk fills a real one.
func TestFullDiskIsClassified(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, filepath.Join(dir, "h.db"))
	ctx := t.Context()
	if _, _, err := s.PutTopic(ctx, herald.Topic{Name: "t"}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	pages := count(t, s, `PRAGMA page_count`)
	if _, err := s.writer.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	_, err := s.Append(ctx, []*herald.Event{{ID: herald.NewID(now), Topic: "t", Time: now, ContentType: "text/plain", Payload: make([]byte, 64<<10)}})
	he, ok := errors.AsType[*herald.Error](err)
	if !ok || he.Code != herald.CodeUnavailable || he.Message != msgDiskFull {
		t.Fatalf("append over the page limit = %v; want unavailable %q", err, msgDiskFull)
	}
	if strings.Contains(he.Message, dir) {
		t.Fatalf("the message shows the path: %q", he.Message)
	}
}
