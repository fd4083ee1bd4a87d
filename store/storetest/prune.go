package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func prune(t *testing.T, s herald.Store, now time.Time, limit int) int64 {
	t.Helper()
	n, err := s.Prune(t.Context(), now, limit)
	if err != nil {
		t.Fatalf("Prune(limit %d): %v", limit, err)
	}
	if n < 0 || n > int64(limit) {
		t.Fatalf("Prune(limit %d) = %d, out of range", limit, n)
	}
	return n
}

// The prune subtests look at the whole store (Prune has no topic
// argument), so they do not run in parallel.
func runPrune(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("ArchiveHold", func(t *testing.T) { runArchiveHold(t, open) })
	t.Run("EventsPastRetentionWithLimit", func(t *testing.T) {
		s := open(t)
		now := base()
		for _, name := range []string{"prune.a", "prune.b"} {
			tp := topic(name)
			tp.Retention = time.Hour
			putTopic(t, s, tp)
		}
		keep := topic("prune.long")
		keep.Retention = 24 * time.Hour
		putTopic(t, s, keep)

		old := now.Add(-time.Hour) // retention passes exactly at now
		appendStored(t, s, event("prune.a", old.Add(-time.Minute), "a1"), event("prune.a", old, "a2"),
			event("prune.a", old, "a3"), event("prune.a", now, "a4"))
		appendStored(t, s, event("prune.b", old, "b1"), event("prune.b", old, "b2"), event("prune.b", old, "b3"))
		appendStored(t, s, event("prune.long", old, "l1"), event("prune.long", old, "l2"))

		// Nothing has expired a moment before.
		if n := prune(t, s, old.Add(time.Hour-time.Minute-time.Microsecond), 10); n != 0 {
			t.Fatalf("Prune before any retention passed deleted %d", n)
		}
		// 6 expired events in all: limit 4, then the remaining 2, then 0.
		if n := prune(t, s, now, 4); n != 4 {
			t.Fatalf("first Prune(limit 4) = %d, want 4", n)
		}
		if n := prune(t, s, now, 4); n != 2 {
			t.Fatalf("second Prune(limit 4) = %d, want 2", n)
		}
		if n := prune(t, s, now, 4); n != 0 {
			t.Fatalf("third Prune(limit 4) = %d, want 0", n)
		}
		wantSeqs(t, "prune.a retained", seqsOf(readAll(t, s, "prune.a")), 4)
		wantSeqs(t, "prune.b retained", seqsOf(readAll(t, s, "prune.b")))
		wantSeqs(t, "prune.long retained", seqsOf(readAll(t, s, "prune.long")), 1, 2)
		wantStats(t, s, "prune.a", 4, 4, 1)
		wantStats(t, s, "prune.b", 3, 0, 0)
		wantStats(t, s, "prune.long", 2, 1, 2)
		_, err := s.GetEvent(t.Context(), "prune.b", readAllIDs(t, s, "prune.long")[0])
		wantCode(t, "GetEvent of another topic's id", err, herald.CodeNotFound)

		// A pruned topic keeps counting from its head.
		wantSeqs(t, "append after prune", appendStored(t, s, event("prune.b", now, "b4")), 4)
	})

	t.Run("DedupKeysPastWindow", func(t *testing.T) {
		s := open(t)
		now := base()
		tp := topic("prune.keys")
		tp.DedupWindow = time.Hour
		putTopic(t, s, tp) // retention: the 7-day default, so events stay
		at := now.Add(-2 * time.Hour)
		first := []*herald.Event{
			withKey(event(tp.Name, at, "1"), "k1"),
			withKey(event(tp.Name, at, "2"), "k2"),
			withKey(event(tp.Name, at, "3"), "k3"),
			withKey(event(tp.Name, now, "4"), "k4"), // window still open at now
		}
		appendStored(t, s, first...)
		probe := func(key string) *herald.Event { return withKey(event(tp.Name, at.Add(time.Minute), "probe"), key) }

		// Before pruning, the keys are live for events inside their window.
		res := appendOK(t, s, probe("k1"))
		wantDuplicate(t, "k1 before prune", res[0], first[0])

		if n := prune(t, s, now, 2); n != 2 {
			t.Fatalf("first Prune(limit 2) = %d, want 2 expired keys", n)
		}
		if n := prune(t, s, now, 2); n != 1 {
			t.Fatalf("second Prune(limit 2) = %d, want the last expired key", n)
		}
		if n := prune(t, s, now, 2); n != 0 {
			t.Fatalf("third Prune(limit 2) = %d, want 0", n)
		}
		// The events themselves are retained.
		wantStats(t, s, tp.Name, 4, 1, 4)
		// A pruned key no longer deduplicates, even for an event inside the
		// first event's window; the live key still does.
		wantSeqs(t, "k1 after prune", appendStored(t, s, probe("k1")), 5)
		res = appendOK(t, s, withKey(event(tp.Name, now.Add(time.Minute), "again"), "k4"))
		wantDuplicate(t, "k4 after prune", res[0], first[3])
	})

	t.Run("NothingToPrune", func(t *testing.T) {
		s := open(t)
		if n := prune(t, s, base(), 10); n != 0 {
			t.Fatalf("Prune of an empty store = %d", n)
		}
	})
}

func readAllIDs(t *testing.T, s herald.Store, topic string) []string {
	t.Helper()
	evs := readAll(t, s, topic)
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

// runArchiveHold checks that archives hold retention back: an active
// archive keeps what it has not written (above its cursor, in its retry
// set, or all of a topic it has no cursor in) however old; a paused one at
// most its MaxHold past retention; other subscriptions and dead letters
// hold nothing; and what is written goes.
func runArchiveHold(t *testing.T, open func(t *testing.T) herald.Store) {
	st := open(t)
	s, ok := st.(SubscriptionTestStore)
	if !ok {
		t.Fatal("the store does not implement herald.SubscriptionStore")
	}
	as := st.(herald.ArchiveStore)
	ctx := t.Context()
	now := base()
	old := now.Add(-2 * time.Hour) // past the 1h retention
	for _, name := range []string{"hold.a", "hold.b", "free.hold"} {
		tp := topic(name)
		tp.Retention = time.Hour
		putTopic(t, s, tp)
		for i := range 6 {
			appendStored(t, s, event(name, old, fmt.Sprintf("%s-%d", name, i+1)))
		}
	}
	// An archive of hold.* that has written hold.a up to seq 2, with seq 2
	// failed and waiting in its retry set; it has no cursor in hold.c,
	// created after it. A webhook subscription behind on hold.a holds
	// nothing.
	arch := plainSub("sub_hold_archive", "hold.*")
	arch.Channel = "archive"
	createSub(t, s, arch, herald.StartPosition{Earliest: true})
	if err := as.CreateArchive(ctx, herald.Archive{Name: "hold", SubscriptionID: arch.ID, MaxHold: time.Hour}); err != nil {
		t.Fatalf("CreateArchive: %v", err)
	}
	createSub(t, s, plainSub("sub_hold_webhook", "hold.>"), herald.StartPosition{Earliest: true})
	epoch := lease(t, s, arch.ID)
	settleOK(t, s, arch.ID, epoch, herald.Settlement{
		Cursors:    []herald.Cursor{{Topic: "hold.a", Seq: 3}},
		AddRetries: []herald.Retry{retry(arch.ID, "hold.a", 2, "", 1, at(60))},
	})
	// hold.b: written up to 4, then 5 dead-lettered (dead letters do not hold).
	settleOK(t, s, arch.ID, epoch, herald.Settlement{
		Cursors:     []herald.Cursor{{Topic: "hold.b", Seq: 5}},
		DeadLetters: []herald.DeadLetter{deadLetter(arch.ID, "hold.b", 5, "", 3, at(60))},
	})
	late := topic("hold.c")
	late.Retention = time.Hour
	putTopic(t, s, late)
	appendStored(t, s, event("hold.c", old, "c1"), event("hold.c", old, "c2"))

	// Years later, the active archive still holds what it has not written.
	years := now.Add(3 * 365 * 24 * time.Hour)
	for prune(t, s, years, 1000) > 0 {
	}
	wantSeqs(t, "hold.a kept from the retry", seqsOf(readAll(t, s, "hold.a")), 2, 3, 4, 5, 6)
	wantSeqs(t, "hold.b kept after the cursor", seqsOf(readAll(t, s, "hold.b")), 6)
	wantSeqs(t, "hold.c kept whole (no cursor)", seqsOf(readAll(t, s, "hold.c")), 1, 2)
	wantSeqs(t, "free.hold pruned (not archived)", seqsOf(readAll(t, s, "free.hold")))

	// The retry written and the cursor moved: those go.
	settleOK(t, s, arch.ID, epoch, herald.Settlement{
		Cursors:     []herald.Cursor{{Topic: "hold.a", Seq: 4}},
		DoneRetries: []herald.Cursor{{Topic: "hold.a", Seq: 2}},
	})
	for prune(t, s, years, 1000) > 0 {
	}
	wantSeqs(t, "hold.a after it was written up to 4", seqsOf(readAll(t, s, "hold.a")), 5, 6)

	// Paused, it holds for at most its MaxHold (1h) past retention.
	sub := getSub(t, s, arch.ID)
	sub.State = herald.StatePaused
	if err := s.UpdateSubscription(ctx, sub); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if n := prune(t, s, now.Add(-time.Minute), 1000); n != 0 { // 1h59m old: past retention, inside the hold
		t.Fatalf("Prune within a paused archive's hold deleted %d", n)
	}
	wantSeqs(t, "hold.a paused, inside the hold", seqsOf(readAll(t, s, "hold.a")), 5, 6)
	for prune(t, s, now, 1000) > 0 { // 2h old: retention and hold both passed
	}
	wantSeqs(t, "hold.a paused, past the hold", seqsOf(readAll(t, s, "hold.a")))
	wantSeqs(t, "hold.c paused, past the hold", seqsOf(readAll(t, s, "hold.c")))

	// A deleted archive holds nothing (its subscription is gone with it).
	appendStored(t, s, event("hold.b", old, "b7"))
	if err := as.DeleteArchive(ctx, "hold"); err != nil {
		t.Fatalf("DeleteArchive: %v", err)
	}
	for prune(t, s, years, 1000) > 0 {
	}
	wantSeqs(t, "hold.b without the archive", seqsOf(readAll(t, s, "hold.b")))
}
