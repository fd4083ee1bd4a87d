package engine

import (
	"testing"

	"github.com/heraldhq/herald"
)

func tailEvents(topic string, from, to int64, size int) []*herald.Event {
	var out []*herald.Event
	for s := from; s <= to; s++ {
		out = append(out, &herald.Event{Topic: topic, Seq: s, Payload: make([]byte, size)})
	}
	return out
}

func seqs(evs []*herald.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func TestTailReadsWhatItHolds(t *testing.T) {
	tl := NewTail(TailConfig{})
	tl.Add(tailEvents("a", 1, 10, 1))
	tl.Add(tailEvents("b", 5, 6, 1))

	cases := []struct {
		topic  string
		after  int64
		limit  int
		want   []int64
		wantOK bool
	}{
		{"a", 0, 3, []int64{1, 2, 3}, true},
		{"a", 8, 100, []int64{9, 10}, true},
		{"a", 10, 5, nil, true}, // nothing newer: the cache is sure
		{"a", 12, 5, nil, true},
		{"b", 4, 5, []int64{5, 6}, true},
		{"b", 3, 5, nil, false}, // seq 4 is older than the cache: ask the store
		{"c", 0, 5, nil, false}, // unknown topic
	}
	for _, c := range cases {
		got, ok := tl.Read(c.topic, c.after, c.limit)
		if ok != c.wantOK || !equalSeqs(seqs(got), c.want) {
			t.Errorf("Read(%s, %d, %d) = %v, %v; want %v, %v", c.topic, c.after, c.limit, seqs(got), ok, c.want, c.wantOK)
		}
	}
	if h := tl.Head("a"); h != 10 {
		t.Errorf("Head(a) = %d, want 10", h)
	}
}

func TestTailEvictsOldestInCommitOrder(t *testing.T) {
	tl := NewTail(TailConfig{MaxEvents: 5, MaxBytes: 1 << 20})
	tl.Add(tailEvents("a", 1, 3, 1)) // a1 a2 a3
	tl.Add(tailEvents("b", 1, 3, 1)) // b1 b2 b3: a1 must go
	if _, ok := tl.Read("a", 0, 10); ok {
		t.Fatal("a1 was evicted; reading from 0 must miss")
	}
	if got, ok := tl.Read("a", 1, 10); !ok || !equalSeqs(seqs(got), []int64{2, 3}) {
		t.Fatalf("Read(a, 1) = %v, %v; want [2 3], true", seqs(got), ok)
	}
	// A byte budget evicts too.
	tb := NewTail(TailConfig{MaxEvents: 100, MaxBytes: 100})
	tb.Add(tailEvents("a", 1, 4, 40)) // 160 bytes: two must go
	if got, ok := tb.Read("a", 2, 10); !ok || !equalSeqs(seqs(got), []int64{3, 4}) {
		t.Fatalf("byte budget: Read(a, 2) = %v, %v; want [3 4], true", seqs(got), ok)
	}
	if _, ok := tb.Read("a", 1, 10); ok {
		t.Fatal("byte budget: seq 2 was evicted; reading from 1 must miss")
	}
}

func TestTailGapResetsTopic(t *testing.T) {
	tl := NewTail(TailConfig{})
	tl.Add(tailEvents("a", 1, 3, 1))
	tl.Add(tailEvents("a", 7, 8, 1)) // 4..6 committed elsewhere
	if _, ok := tl.Read("a", 3, 10); ok {
		t.Fatal("after a gap the cache must not answer for seqs it never saw")
	}
	if got, ok := tl.Read("a", 6, 10); !ok || !equalSeqs(seqs(got), []int64{7, 8}) {
		t.Fatalf("Read(a, 6) = %v, %v; want [7 8], true", seqs(got), ok)
	}
	// Evicting the events from before the gap must not disturb the new ring.
	for i := int64(0); i < 100; i++ {
		tl.Add(tailEvents("x", i+1, i+1, 1))
	}
	tl.Forget("a")
	if _, ok := tl.Read("a", 6, 10); ok {
		t.Fatal("Forget must drop the topic")
	}
}

func equalSeqs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
