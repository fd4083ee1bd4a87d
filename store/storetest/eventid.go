package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// withID gives the event a producer-chosen id.
func withID(e *herald.Event, id string) *herald.Event {
	e.ID = id
	return e
}

// appendConflict appends events of which some conflict, and checks that
// the call stored nothing and failed exactly the events at the indexes
// with EventIDConflict naming the seq each one collides with.
func appendConflict(t *testing.T, s herald.Store, conflicts map[int]int64, events ...*herald.Event) []herald.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), events)
	if !errors.Is(err, herald.ErrAppendConflict) {
		t.Fatalf("Append with a conflicting id: err %v, want ErrAppendConflict", err)
	}
	if len(res) != len(events) {
		t.Fatalf("Append with a conflicting id returned %d results for %d events", len(res), len(events))
	}
	for i, r := range res {
		seq, conflicting := conflicts[i]
		switch {
		case conflicting:
			want := herald.EventIDConflict(events[i], seq)
			he, ok := errors.AsType[*herald.Error](r.Err)
			if !ok || *he != *want {
				t.Fatalf("event %d: Err %#v, want %#v", i, r.Err, want)
			}
		case r.Err == nil && r != (herald.AppendResult{}):
			t.Fatalf("event %d of a call that stored nothing: result %+v, want zero", i, r)
		}
		if events[i].Seq != 0 {
			t.Fatalf("event %d got Seq %d set by a call that stored nothing", i, events[i].Seq)
		}
	}
	return res
}

func runEventIDs(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("AssignedWhenNoneGiven", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.assigned", time.Hour)
		at := base()
		evs := []*herald.Event{withID(event("ids.assigned", at, "same"), ""), withID(event("ids.assigned", at, "same"), "")}
		dup := withKey(withID(event("ids.assigned", at, "k"), ""), "k")
		keyed := withKey(withID(event("ids.assigned", at, "k"), ""), "k")
		res := appendOK(t, s, evs[0], evs[1], keyed, dup)
		seen := map[string]bool{}
		for i, e := range []*herald.Event{evs[0], evs[1], keyed} {
			if res[i].Err != nil || res[i].Duplicate || res[i].ID == "" || e.ID != res[i].ID || e.Seq != res[i].Seq || seen[e.ID] {
				t.Fatalf("event %d without an id: result %+v, event id %q seq %d; want stored with a new id, set on the event", i, res[i], e.ID, e.Seq)
			}
			if err := herald.ValidateEvent(e); err != nil {
				t.Fatalf("assigned id %q: %v", e.ID, err)
			}
			seen[e.ID] = true
		}
		// Same payload, no id: two events, not a repeat.
		wantSeqs(t, "stored", seqsOf(readAll(t, s, "ids.assigned")), 1, 2, 3)
		wantDuplicate(t, "a duplicate by its key", res[3], keyed)
		if dup.ID != "" {
			t.Fatalf("a duplicate got ID %q set; it is not stored", dup.ID)
		}
		got, err := s.GetEvent(t.Context(), "ids.assigned", evs[1].ID)
		if err != nil {
			t.Fatal(err)
		}
		sameEvent(t, got, evs[1])
	})

	t.Run("RepeatWithinWindowIsDuplicate", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids", time.Hour)
		at := base()
		first := withID(event("ids", at, "paid"), "order-1")
		appendStored(t, s, first)

		again := withID(event("ids", at.Add(59*time.Minute), "paid"), "order-1")
		res := appendOK(t, s, again)
		wantDuplicate(t, "same id and payload 59m later", res[0], first)
		if again.Seq != 0 {
			t.Fatalf("a duplicate got Seq %d set; it is not stored", again.Seq)
		}
		wantStats(t, s, "ids", 1, 1, 1)
		// An earlier time is within the window too, as for keys.
		res = appendOK(t, s, withID(event("ids", at.Add(-time.Minute), "paid"), "order-1"))
		wantDuplicate(t, "same id with an earlier time", res[0], first)
		// Only the payload decides: other metadata may differ on a retry.
		retry := withID(event("ids", at, "paid"), "order-1")
		retry.Type, retry.Headers = "order.paid", map[string]string{"Traceparent": "00-1"}
		wantDuplicate(t, "same id and payload, other metadata", appendOK(t, s, retry)[0], first)
		// Empty and nil payloads are the same payload.
		empty := withID(event("ids", at, ""), "empty")
		empty.Payload = nil
		appendStored(t, s, empty)
		wantDuplicate(t, "nil payload after empty", appendOK(t, s, withID(event("ids", at, ""), "empty"))[0], empty)
	})

	t.Run("RepeatWithOtherPayloadConflicts", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.conflict", time.Hour)
		putTopic(t, s, topic("ids.conflict.other"))
		at := base()
		first := withID(event("ids.conflict", at, "paid 10"), "order-1")
		appendStored(t, s, first)

		// The conflict fails the whole call: the events beside it, on this
		// topic or another, are not stored and take no seq.
		before := withID(event("ids.conflict", at, "x"), "before")
		other := event("ids.conflict.other", at, "y")
		after := event("ids.conflict", at, "z")
		appendConflict(t, s, map[int]int64{1: 1},
			before, withID(event("ids.conflict", at.Add(time.Minute), "paid 20"), "order-1"), other, after)
		wantStats(t, s, "ids.conflict", 1, 1, 1)
		wantStats(t, s, "ids.conflict.other", 0, 0, 0)

		// Appended again without it, they get the next seqs, gap-free.
		wantSeqs(t, "the rest again", appendStored(t, s, before, other, after), 2, 1, 3)
		got, err := s.GetEvent(t.Context(), "ids.conflict", "order-1")
		if err != nil {
			t.Fatal(err)
		}
		sameEvent(t, got, first)
	})

	t.Run("WithinOneCall", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.call", time.Hour)
		at := base()
		a := withID(event("ids.call", at, "p"), "x")
		b := withID(event("ids.call", at, "p"), "x")
		c := withID(event("ids.call", at, "q"), "y")
		d := withID(event("ids.call", at, "other"), "x")
		appendConflict(t, s, map[int]int64{3: 1}, a, b, c, d)
		wantStats(t, s, "ids.call", 0, 0, 0)

		res := appendOK(t, s, a, b, c)
		if res[0].Duplicate || res[0].Seq != 1 || res[2].Duplicate || res[2].Seq != 2 {
			t.Fatalf("results %+v; want x at seq 1, its repeat a duplicate, y at seq 2", res)
		}
		wantDuplicate(t, "the same id twice in one call", res[1], a)
		wantSeqs(t, "stored", seqsOf(readAll(t, s, "ids.call")), 1, 2)
	})

	t.Run("OutsideWindowStoresAgain", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.expired", time.Hour)
		now := base()
		old := withID(event("ids.expired", now.Add(-2*time.Hour), "old"), "x")
		appendStored(t, s, old)
		// Exactly one window later the id may name a new event, even with
		// another payload.
		fresh := withID(event("ids.expired", now.Add(-time.Hour), "new"), "x")
		wantSeqs(t, "one window later", appendStored(t, s, fresh), 2)
		got, err := s.GetEvent(t.Context(), "ids.expired", "x")
		if err != nil {
			t.Fatal(err)
		}
		sameEvent(t, got, fresh)
		// Repeats are judged against the newest event with the id.
		res := appendOK(t, s, withID(event("ids.expired", now.Add(-time.Hour+time.Minute), "new"), "x"))
		wantDuplicate(t, "the newest event's payload", res[0], fresh)
		appendConflict(t, s, map[int]int64{0: 2}, withID(event("ids.expired", now.Add(-time.Hour+time.Minute), "old"), "x"))
	})

	t.Run("WindowZeroAllowsRepeats", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.off", 0)
		at := base()
		wantSeqs(t, "same id twice in one call",
			appendStored(t, s, withID(event("ids.off", at, "a"), "x"), withID(event("ids.off", at, "a"), "x")), 1, 2)
		last := withID(event("ids.off", at, "b"), "x")
		wantSeqs(t, "same id, another payload", appendStored(t, s, last), 3)
		got, err := s.GetEvent(t.Context(), "ids.off", "x")
		if err != nil {
			t.Fatal(err)
		}
		sameEvent(t, got, last)
	})

	t.Run("IdempotencyKeyDecidesFirst", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.keys", time.Hour)
		at := base()
		first := withKey(withID(event("ids.keys", at, "a"), "x"), "k")
		appendStored(t, s, first)
		// A live key makes a duplicate whatever the id and payload.
		wantDuplicate(t, "same key, same id, other payload",
			appendOK(t, s, withKey(withID(event("ids.keys", at, "b"), "x"), "k"))[0], first)
		wantDuplicate(t, "same key, other id", appendOK(t, s, withKey(withID(event("ids.keys", at, "c"), "y"), "k"))[0], first)
		// A new key does not make a repeated id new.
		wantDuplicate(t, "new key, same id and payload",
			appendOK(t, s, withKey(withID(event("ids.keys", at, "a"), "x"), "k2"))[0], first)
		appendConflict(t, s, map[int]int64{0: 1}, withKey(withID(event("ids.keys", at, "d"), "x"), "k3"))
		wantStats(t, s, "ids.keys", 1, 1, 1)
	})

	t.Run("ConcurrentRepeatsStoreOne", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.race", time.Hour)
		at := base()
		const callers = 8
		results := make([]herald.AppendResult, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				res, err := s.Append(t.Context(), []*herald.Event{withID(event("ids.race", at, "same"), "once")})
				errs[i] = err
				if err == nil {
					results[i] = res[0]
				}
			})
		}
		wg.Wait()
		stored := 0
		for i, r := range results {
			switch {
			case errs[i] != nil || r.Err != nil:
				t.Fatalf("caller %d: err %v, result %+v", i, errs[i], r)
			case !r.Duplicate:
				stored++
			}
			if r.ID != "once" || r.Seq != 1 {
				t.Fatalf("caller %d: result %+v; want id once at seq 1", i, r)
			}
		}
		if stored != 1 {
			t.Fatalf("%d callers stored the event, want exactly 1", stored)
		}
		wantStats(t, s, "ids.race", 1, 1, 1)
	})

	t.Run("ScopedPerTopic", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.a", time.Hour)
		dedupTopic(t, s, "ids.b", time.Hour)
		at := base()
		wantSeqs(t, "same id on two topics",
			appendStored(t, s, withID(event("ids.a", at, "a"), "shared"), withID(event("ids.b", at, "b"), "shared")), 1, 1)
	})

	t.Run("OtherFailuresBesideAConflict", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "ids.mixed", time.Hour)
		at := base()
		appendStored(t, s, withID(event("ids.mixed", at, "a"), "x"))
		res := appendConflict(t, s, map[int]int64{1: 1},
			event("ids.mixed", at, "ok"), withID(event("ids.mixed", at, "b"), "x"), event("ids.missing", at, "c"))
		wantCode(t, "an unknown topic beside a conflict", res[2].Err, herald.CodeNotFound)
	})
}
