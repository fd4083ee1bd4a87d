package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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

// TestPruneHoldRace checks that a change which makes an archive hold
// events, committed while Prune is deleting them, is never ignored: Prune
// reads the holds and deletes in one transaction that keeps them from
// changing, so the change either waits for the delete (the events were
// not held when they went) or the delete sees it (they stay). To catch
// Prune between its reading of the holds and its delete, a transaction
// locks the first expired event's row: Prune's DELETE waits on it; the
// change is made then, and the row released.
func TestPruneHoldRace(t *testing.T) {
	now := time.Now()
	old := now.Add(-2 * time.Hour) // past the topic's 1h retention
	archiveSub := func(id string) herald.Subscription {
		return herald.Subscription{ID: id, Topic: "race", Channel: "archive", State: herald.StateActive,
			Config: []byte(`{"destination":{"type":"local"}}`),
			Retry:  herald.DefaultRetryPolicy, Timeout: herald.DefaultTimeout, MaxInFlight: herald.DefaultMaxInFlight}
	}
	for _, c := range []struct {
		name string
		// setup leaves the three expired events unheld; change makes
		// an archive hold them.
		setup, change func(ctx context.Context, s *Store) error
	}{
		{"an archive created", func(ctx context.Context, s *Store) error {
			return s.CreateSubscription(ctx, archiveSub("sub_race"), herald.StartPosition{Earliest: true})
		}, func(ctx context.Context, s *Store) error {
			return s.CreateArchive(ctx, herald.Archive{Name: "race", SubscriptionID: "sub_race", MaxHold: time.Hour})
		}},
		{"a paused archive resumed", func(ctx context.Context, s *Store) error {
			sub := archiveSub("sub_race")
			sub.State = herald.StatePaused
			if err := s.CreateSubscription(ctx, sub, herald.StartPosition{Earliest: true}); err != nil {
				return err
			}
			return s.CreateArchive(ctx, herald.Archive{Name: "race", SubscriptionID: sub.ID}) // MaxHold 0: paused, it holds nothing
		}, func(ctx context.Context, s *Store) error {
			sub, err := s.GetSubscription(ctx, "sub_race")
			if err != nil {
				return err
			}
			sub.State = herald.StateActive
			return s.UpdateSubscription(ctx, sub)
		}},
		{"written events replayed", func(ctx context.Context, s *Store) error {
			if err := s.CreateSubscription(ctx, archiveSub("sub_race"), herald.StartPosition{Earliest: true}); err != nil {
				return err
			}
			if err := s.CreateArchive(ctx, herald.Archive{Name: "race", SubscriptionID: "sub_race"}); err != nil {
				return err
			}
			epoch, err := s.AcquireLease(ctx, "sub_race", "node-a", now, time.Hour)
			if err != nil {
				return err
			}
			errs, err := s.Settle(ctx, []herald.SettleItem{{SubscriptionID: "sub_race", Epoch: epoch,
				Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "race", Seq: 3}}}}})
			return errors.Join(err, errs[0])
		}, func(ctx context.Context, s *Store) error {
			_, err := s.ScheduleReplay(ctx, "sub_race", "race", 1, 3, now, 100)
			return err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTestStore(t)
			ctx := t.Context()
			if _, _, err := s.PutTopic(ctx, herald.Topic{Name: "race", Retention: time.Hour}.WithDefaults()); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if _, err := s.Append(ctx, []*herald.Event{{ID: fmt.Sprint("e", i), Topic: "race", Time: old, ContentType: "text/plain"}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.setup(ctx, s); err != nil {
				t.Fatalf("setup: %v", err)
			}
			blocker, err := s.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer blocker.Rollback(context.Background())
			var blockerPID int32
			if err := blocker.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&blockerPID); err != nil {
				t.Fatal(err)
			}
			if _, err := blocker.Exec(ctx, `SELECT 1 FROM events WHERE seq = 1 FOR UPDATE`); err != nil {
				t.Fatal(err)
			}
			type result struct {
				n   int64
				err error
			}
			pruned := make(chan result, 1)
			go func() {
				n, err := s.Prune(ctx, now, 100)
				pruned <- result{n, err}
			}()
			// blockedBy returns a session waiting for a lock the session
			// pid holds; 0 for none.
			blockedBy := func(pid int32) (int32, error) {
				var waiter int32
				err := s.pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE $1::int = ANY(pg_blocking_pids(pid)) LIMIT 1`, pid).Scan(&waiter)
				if errors.Is(err, pgx.ErrNoRows) {
					return 0, nil
				}
				return waiter, err
			}
			var prunePID int32
			waitFor(t, "Prune to wait for the locked event", func() (bool, error) {
				var err error
				prunePID, err = blockedBy(blockerPID)
				return prunePID != 0, err
			})
			changed := make(chan error, 1)
			go func() { changed <- c.change(ctx, s) }()
			// The change either commits while Prune waits, or waits for
			// Prune itself.
			changedFirst := false
			waitFor(t, "the change to commit or wait for Prune", func() (bool, error) {
				select {
				case err := <-changed:
					if err != nil {
						return false, fmt.Errorf("change: %w", err)
					}
					changedFirst = true
					return true, nil
				default:
				}
				waiter, err := blockedBy(prunePID)
				return waiter != 0, err
			})
			if err := blocker.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			r := <-pruned
			if r.err != nil {
				t.Fatalf("Prune: %v", r.err)
			}
			if !changedFirst {
				if err := <-changed; err != nil {
					t.Fatalf("change: %v", err)
				}
			}
			var left int
			if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&left); err != nil {
				t.Fatal(err)
			}
			if changedFirst && left != 3 {
				t.Fatalf("the archive held the events from before Prune's delete ran, yet Prune deleted %d of 3", r.n)
			}
			if !changedFirst && (r.n != 3 || left != 0) {
				t.Fatalf("the change waited for Prune, which held nothing back then: it deleted %d of 3, %d left", r.n, left)
			}
			// Either way the archive holds what is left from now on.
			if n, err := s.Prune(ctx, now.Add(365*24*time.Hour), 100); err != nil || n != 0 {
				t.Fatalf("Prune after the change: deleted %d, %v", n, err)
			}
		})
	}
}
