package postgres

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// DeleteTopic answers at once; Prune then removes the old rows in chunks
// of its limit, and a topic created again under the name starts clean.
func TestDeleteTopicThenPrune(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	putTopic(t, s, "gone")
	now := time.Now()
	var evs []*herald.Event
	for i := range 7 {
		evs = append(evs, &herald.Event{ID: fmt.Sprint(i), Topic: "gone", Time: now, IdempotencyKey: fmt.Sprint("k", i)})
	}
	if _, err := s.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTopic(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	putTopic(t, s, "gone")
	res, err := s.Append(ctx, []*herald.Event{{ID: "new", Topic: "gone", Time: now, IdempotencyKey: "k0"}})
	if err != nil || res[0].Seq != 1 || res[0].Duplicate {
		t.Fatalf("append to the new topic: %+v %v, want seq 1, not a duplicate", res, err)
	}

	// 7 events and 7 keys of the old topic, in chunks of 5.
	var counts []int64
	for {
		n, err := s.Prune(ctx, now, 5)
		if err != nil {
			t.Fatal(err)
		}
		counts = append(counts, n)
		if n < 5 {
			break
		}
	}
	if want := []int64{5, 5, 4}; !slices.Equal(counts, want) {
		t.Errorf("prune counts %v, want %v", counts, want)
	}
	var left int
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM dedup) + (SELECT count(*) FROM dead_topics)`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 2 { // the new topic's event and key
		t.Errorf("%d rows left, want 2", left)
	}
}

// Retention removes a prefix of the log: an expired event behind a newer
// one (clock skew between nodes) waits for it, so the retained seqs stay
// one range.
func TestPruneKeepsRetainedRangeContiguous(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	tp := herald.Topic{Name: "ret", Retention: time.Hour}.WithDefaults()
	if _, _, err := s.PutTopic(ctx, tp); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old, fresh := now.Add(-2*time.Hour), now.Add(-time.Minute)
	var evs []*herald.Event
	for i, at := range []time.Time{old, old, fresh, old, fresh} {
		evs = append(evs, &herald.Event{ID: fmt.Sprint(i), Topic: "ret", Time: at})
	}
	if _, err := s.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	n, err := s.Prune(ctx, now, 100)
	if err != nil || n != 2 {
		t.Fatalf("Prune: %d %v, want 2", n, err)
	}
	got, err := s.GetTopic(ctx, "ret")
	if err != nil {
		t.Fatal(err)
	}
	if got.FirstSeq != 3 || got.HeadSeq != 5 || got.EventCount() != 3 {
		t.Errorf("first %d head %d count %d, want 3, 5, 3", got.FirstSeq, got.HeadSeq, got.EventCount())
	}
}

// Prune skips a dedup key whose row an Append holds instead of waiting for
// it, so the two never deadlock; the key goes on a later Prune.
func TestPruneSkipsKeysInUse(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	tp := herald.Topic{Name: "busy", DedupWindow: time.Hour}.WithDefaults()
	if _, _, err := s.PutTopic(ctx, tp); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	at := now.Add(-2 * time.Hour)
	if _, err := s.Append(ctx, []*herald.Event{
		{ID: "1", Topic: "busy", Time: at, IdempotencyKey: "k1"},
		{ID: "2", Topic: "busy", Time: at, IdempotencyKey: "k2"},
	}); err != nil {
		t.Fatal(err)
	}
	holder, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(context.Background()) }()
	if _, err := holder.Exec(ctx, `SELECT 1 FROM dedup WHERE idem_key = 'k1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if n, err := s.Prune(pctx, now, 10); err != nil || n != 1 {
		t.Fatalf("Prune beside a held key: %d %v, want 1 (the free key)", n, err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx, now, 10); err != nil || n != 1 {
		t.Fatalf("Prune after the key was released: %d %v, want 1", n, err)
	}
}
