package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func runRead(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("ReadEventsOrderAndLimit", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("read"))
		at := base()
		var evs []*herald.Event
		for i := range 10 {
			evs = append(evs, event("read", at.Add(time.Duration(i)*time.Second), string(rune('a'+i))))
		}
		appendStored(t, s, evs[:4]...)
		appendStored(t, s, evs[4:]...)

		cases := []struct {
			after int64
			limit int
			want  []int64
		}{
			{0, 3, []int64{1, 2, 3}},
			{3, 4, []int64{4, 5, 6, 7}},
			{7, 100, []int64{8, 9, 10}},
			{9, 1, []int64{10}},
			{10, 5, nil},
			{50, 5, nil},
		}
		for _, c := range cases {
			got, err := s.ReadEvents(t.Context(), "read", c.after, c.limit)
			if err != nil {
				t.Fatalf("ReadEvents(after %d, limit %d): %v", c.after, c.limit, err)
			}
			wantSeqs(t, "ReadEvents", seqsOf(got), c.want...)
			for _, e := range got {
				sameEvent(t, e, evs[e.Seq-1])
			}
		}
	})

	t.Run("ReadEventsUnknownTopicIsEmpty", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		got, err := s.ReadEvents(t.Context(), "no.such.topic", 0, 10)
		if err != nil || len(got) != 0 {
			t.Fatalf("ReadEvents of an unknown topic = %d events, %v; want none, no error", len(got), err)
		}
	})

	t.Run("GetEvent", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("get"))
		putTopic(t, s, topic("get.other"))
		at := base()
		a, b := event("get", at, "a"), event("get", at, "b")
		appendStored(t, s, a, b)
		got, err := s.GetEvent(t.Context(), "get", b.ID)
		if err != nil {
			t.Fatalf("GetEvent: %v", err)
		}
		sameEvent(t, got, b)

		_, err = s.GetEvent(t.Context(), "get", "no-such-id")
		wantCode(t, "GetEvent unknown id", err, herald.CodeNotFound)
		_, err = s.GetEvent(t.Context(), "get.other", a.ID)
		wantCode(t, "GetEvent with another topic's id", err, herald.CodeNotFound)
		_, err = s.GetEvent(t.Context(), "no.such.topic", a.ID)
		wantCode(t, "GetEvent on an unknown topic", err, herald.CodeNotFound)
	})

	t.Run("GetEventReusedIDGivesNewest", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		// An id names a new event only outside the dedup window.
		dedupTopic(t, s, "reused", time.Minute)
		at := base()
		first := event("reused", at, "first")
		second := event("reused", at.Add(2*time.Minute), "second")
		second.ID = first.ID
		appendStored(t, s, first)
		appendStored(t, s, event("reused", at, "between"))
		appendStored(t, s, second)
		got, err := s.GetEvent(t.Context(), "reused", first.ID)
		if err != nil {
			t.Fatalf("GetEvent: %v", err)
		}
		sameEvent(t, got, second)
	})

	t.Run("SeqAtTime", func(t *testing.T) {
		s := open(t)
		now := base()
		tp := topic("replay")
		tp.Retention = time.Hour
		putTopic(t, s, tp)

		seq := func(at time.Time) int64 {
			t.Helper()
			n, err := s.SeqAtTime(t.Context(), "replay", at)
			if err != nil {
				t.Fatalf("SeqAtTime(%v): %v", at, err)
			}
			return n
		}
		if got := seq(now); got != 1 {
			t.Fatalf("SeqAtTime on an empty topic = %d, want 1 (HeadSeq+1)", got)
		}
		t0 := now.Add(-2 * time.Hour) // expires at now
		appendStored(t, s, event("replay", t0, "1"), event("replay", now, "2"),
			event("replay", now.Add(time.Second), "3"), event("replay", now.Add(2*time.Second), "4"))
		cases := []struct {
			at   time.Time
			want int64
		}{
			{t0.Add(-time.Hour), 1},
			{t0, 1},
			{t0.Add(time.Microsecond), 2},
			{now, 2},
			{now.Add(500 * time.Millisecond), 3},
			{now.Add(2 * time.Second), 4},
			{now.Add(time.Hour), 5},
		}
		for _, c := range cases {
			if got := seq(c.at); got != c.want {
				t.Fatalf("SeqAtTime(%v) = %d, want %d", c.at, got, c.want)
			}
		}
		// After the first event is pruned, a time before it gives the
		// first retained event.
		if n, err := s.Prune(t.Context(), now, 10); err != nil || n != 1 {
			t.Fatalf("Prune = %d, %v; want 1", n, err)
		}
		if got := seq(t0.Add(-time.Hour)); got != 2 {
			t.Fatalf("SeqAtTime before the first retained event = %d, want 2", got)
		}
		_, err := s.SeqAtTime(t.Context(), "no.such.topic", now)
		wantCode(t, "SeqAtTime on an unknown topic", err, herald.CodeNotFound)
	})
}
