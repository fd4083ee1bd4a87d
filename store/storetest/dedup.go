package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// wantDuplicate checks that a result reports a duplicate of the first event.
func wantDuplicate(t *testing.T, what string, r herald.AppendResult, first *herald.Event) {
	t.Helper()
	if r.Err != nil || !r.Duplicate || r.ID != first.ID || r.Seq != first.Seq {
		t.Fatalf("%s: result %+v; want a duplicate of %s at seq %d", what, r, first.ID, first.Seq)
	}
}

func dedupTopic(t *testing.T, s herald.Store, name string, window time.Duration) {
	t.Helper()
	tp := topic(name)
	tp.DedupWindow = window
	putTopic(t, s, tp)
}

func runDedup(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("WithinWindowAcrossCalls", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "dedup", time.Hour)
		at := base()
		first := withKey(event("dedup", at, "first"), "k1")
		appendStored(t, s, first)

		again := withKey(event("dedup", at.Add(59*time.Minute), "second"), "k1")
		res := appendOK(t, s, again)
		wantDuplicate(t, "same key 59m later", res[0], first)
		if again.Seq != 0 {
			t.Fatalf("a duplicate got Seq %d set; it is not stored", again.Seq)
		}
		// Nothing was stored and no seq was used.
		wantStats(t, s, "dedup", 1, 1, 1)
		_, err := s.GetEvent(t.Context(), "dedup", again.ID)
		wantCode(t, "GetEvent of a duplicate", err, herald.CodeNotFound)
		wantSeqs(t, "next event", appendStored(t, s, withKey(event("dedup", at, "other"), "k2")), 2)

		// An event earlier than the first one is within the window too.
		res = appendOK(t, s, withKey(event("dedup", at.Add(-time.Minute), "earlier"), "k1"))
		wantDuplicate(t, "same key with an earlier time", res[0], first)
	})

	t.Run("WithinOneCall", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "dedup.call", time.Hour)
		at := base()
		evs := []*herald.Event{
			withKey(event("dedup.call", at, "a"), "k"),
			withKey(event("dedup.call", at, "b"), "k"),
			event("dedup.call", at, "c"),
			withKey(event("dedup.call", at.Add(time.Second), "d"), "k"),
		}
		res := appendOK(t, s, evs...)
		if res[0].Duplicate || res[0].Seq != 1 {
			t.Fatalf("first event: %+v; want stored at seq 1", res[0])
		}
		wantDuplicate(t, "second event, same key", res[1], evs[0])
		// A duplicate consumes no seq: the next stored event follows on.
		if res[2].Duplicate || res[2].Err != nil || res[2].Seq != 2 {
			t.Fatalf("event after a duplicate in the same call: %+v; want stored at seq 2", res[2])
		}
		wantDuplicate(t, "fourth event, same key", res[3], evs[0])
		wantSeqs(t, "stored", seqsOf(readAll(t, s, "dedup.call")), 1, 2)
	})

	t.Run("ExpiredWindowStoresAgain", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "dedup.expired", time.Hour)
		now := base()
		old := withKey(event("dedup.expired", now.Add(-2*time.Hour), "old"), "k")
		appendStored(t, s, old)
		// Exactly one window later the key has expired ("less than the
		// window before" is a duplicate; the window itself is not).
		edge := withKey(event("dedup.expired", now.Add(-time.Hour), "edge"), "k")
		wantSeqs(t, "one window later", appendStored(t, s, edge), 2)
		fresh := withKey(event("dedup.expired", now, "fresh"), "k")
		wantSeqs(t, "two windows later", appendStored(t, s, fresh), 3)
		// The newest stored event is now the one duplicates point to.
		res := appendOK(t, s, withKey(event("dedup.expired", now.Add(time.Minute), "dup"), "k"))
		wantDuplicate(t, "after the key was stored again", res[0], fresh)

		// The same in one call: the second is a window after the first.
		evs := []*herald.Event{
			withKey(event("dedup.expired", now.Add(5*time.Hour), "x"), "k2"),
			withKey(event("dedup.expired", now.Add(6*time.Hour), "y"), "k2"),
			withKey(event("dedup.expired", now.Add(6*time.Hour+time.Minute), "z"), "k2"),
		}
		res = appendOK(t, s, evs...)
		if res[0].Duplicate || res[1].Duplicate || res[0].Seq != 4 || res[1].Seq != 5 {
			t.Fatalf("one call, key a window apart: %+v, %+v; want stored at 4 and 5", res[0], res[1])
		}
		wantDuplicate(t, "one call, third event", res[2], evs[1])
	})

	t.Run("WindowZeroDisablesDedup", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "dedup.off", 0)
		at := base()
		wantSeqs(t, "same key twice in one call",
			appendStored(t, s, withKey(event("dedup.off", at, "a"), "k"), withKey(event("dedup.off", at, "b"), "k")), 1, 2)
		wantSeqs(t, "same key in another call", appendStored(t, s, withKey(event("dedup.off", at, "c"), "k")), 3)
	})

	t.Run("ScopedPerTopic", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "dedup.a", time.Hour)
		dedupTopic(t, s, "dedup.b", time.Hour)
		at := base()
		a := withKey(event("dedup.a", at, "a"), "shared")
		b := withKey(event("dedup.b", at, "b"), "shared")
		wantSeqs(t, "same key on two topics", appendStored(t, s, a, b), 1, 1)
		res := appendOK(t, s, withKey(event("dedup.b", at, "b2"), "shared"), withKey(event("dedup.a", at, "a2"), "shared"))
		wantDuplicate(t, "dedup.b again", res[0], b)
		wantDuplicate(t, "dedup.a again", res[1], a)
	})

	t.Run("WindowChangeAppliesToStoredKeys", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		dedupTopic(t, s, "dedup.change", time.Hour)
		at := base()
		first := withKey(event("dedup.change", at, "a"), "k")
		appendStored(t, s, first)
		dedupTopic(t, s, "dedup.change", 3*time.Hour)
		res := appendOK(t, s, withKey(event("dedup.change", at.Add(2*time.Hour), "b"), "k"))
		wantDuplicate(t, "2h later with the window grown to 3h", res[0], first)
	})
}
