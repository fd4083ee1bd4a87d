package sqlite

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// Topic fences do not pile up: a new lease epoch removes the
// subscription's fences, DeleteSubscription removes them too, and a
// subscription whose lease was released gets none. Reading the fences in a
// Settle searches the primary key.
func TestTopicFencesAreRemoved(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	ctx := t.Context()
	now := time.Unix(1_700_000_000, 0)
	for _, name := range []string{"orders", "payments"} {
		if _, _, err := s.PutTopic(ctx, herald.Topic{Name: name}.WithDefaults()); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"sub_1", "sub_2", "sub_idle"} {
		sub := herald.Subscription{ID: id, Topic: "*", State: herald.StateActive, CreatedAt: now}
		if err := s.CreateSubscription(ctx, sub, herald.StartPosition{}); err != nil {
			t.Fatal(err)
		}
	}
	epoch, err := s.AcquireLease(ctx, "sub_1", "node", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLease(ctx, "sub_2", "node", now, time.Minute); err != nil {
		t.Fatal(err)
	}
	idle, err := s.AcquireLease(ctx, "sub_idle", "node", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLease(ctx, "sub_idle", "node", idle); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"orders", "payments"} {
		if err := s.DeleteTopic(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	sid := func(id string) int64 { return count(t, s, `SELECT sid FROM subscriptions WHERE id = ?`, id) }
	fences := func(id string) int64 { return count(t, s, `SELECT count(*) FROM topic_fences WHERE sid = ?`, sid(id)) }
	if n1, n2, ni := fences("sub_1"), fences("sub_2"), fences("sub_idle"); n1 != 2 || n2 != 2 || ni != 0 {
		t.Fatalf("fences after deleting two topics: %d, %d, %d; want 2 for each leased subscription, 0 for the released one", n1, n2, ni)
	}

	if e, err := s.AcquireLease(ctx, "sub_1", "node", now.Add(time.Second), time.Minute); err != nil || e != epoch+1 {
		t.Fatalf("renewal after the deletions = %d, %v; want epoch %d", e, err, epoch+1)
	}
	if n := fences("sub_1"); n != 0 {
		t.Fatalf("%d fences left after the epoch moved on", n)
	}
	gone := sid("sub_2")
	if err := s.DeleteSubscription(ctx, "sub_2"); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT count(*) FROM topic_fences WHERE sid = ?`, gone); n != 0 {
		t.Fatalf("%d fences of a deleted subscription left", n)
	}

	rows, err := s.writer.QueryContext(ctx, `EXPLAIN QUERY PLAN `+fencedTopicsSQL, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(detail, "SEARCH topic_fences USING PRIMARY KEY") {
			t.Errorf("fencedTopicsSQL is planned with %q", detail)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}
