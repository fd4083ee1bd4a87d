package storetest

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func runAppend(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("ConsecutiveSeqsAcrossCalls", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("seqs"))
		at := base()
		first := []*herald.Event{event("seqs", at, "1"), event("seqs", at, "2"), event("seqs", at, "3")}
		wantSeqs(t, "first call", appendStored(t, s, first...), 1, 2, 3)
		for i, e := range first {
			if e.Seq != int64(i+1) {
				t.Fatalf("Append did not set Seq on event %d: %d", i, e.Seq)
			}
		}
		wantSeqs(t, "second call", appendStored(t, s, event("seqs", at, "4")), 4)
		wantSeqs(t, "third call", appendStored(t, s, event("seqs", at, "5"), event("seqs", at, "6")), 5, 6)
		wantSeqs(t, "read back", seqsOf(readAll(t, s, "seqs")), 1, 2, 3, 4, 5, 6)
	})

	t.Run("EmptyCall", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		res, err := s.Append(t.Context(), nil)
		if err != nil || len(res) != 0 {
			t.Fatalf("Append(nil) = %v, %v; want no results, no error", res, err)
		}
	})

	t.Run("ConcurrentCallersGetGapFreeSeqs", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("busy"))
		putTopic(t, s, topic("busy.other"))
		const workers, calls, perCall = 8, 12, 4
		at := base()
		var mu sync.Mutex
		var seqs, otherSeqs []int64
		ids := map[int64]string{}
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for range calls {
					evs := make([]*herald.Event, perCall)
					for i := range evs {
						evs[i] = event("busy", at, "x")
					}
					// Every other worker also writes to a second topic in
					// the same call.
					if w%2 == 0 {
						evs = append(evs, event("busy.other", at, "y"))
					}
					res, err := s.Append(t.Context(), evs)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for i, r := range res[:perCall] {
						if r.Err != nil || r.Duplicate {
							mu.Unlock()
							errs <- r.Err
							return
						}
						// Events of one topic in one call get consecutive seqs.
						if i > 0 && r.Seq != res[i-1].Seq+1 {
							mu.Unlock()
							t.Errorf("one call got seqs %d then %d", res[i-1].Seq, r.Seq)
							return
						}
						seqs = append(seqs, r.Seq)
						ids[r.Seq] = evs[i].ID
					}
					if w%2 == 0 {
						otherSeqs = append(otherSeqs, res[perCall].Seq)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent Append: %v", err)
		}
		slices.Sort(seqs)
		slices.Sort(otherSeqs)
		for i, seq := range seqs {
			if seq != int64(i+1) {
				t.Fatalf("concurrent appends: seq %d at position %d; seqs must be 1..%d with no gap or repeat", seq, i, workers*calls*perCall)
			}
		}
		for i, seq := range otherSeqs {
			if seq != int64(i+1) {
				t.Fatalf("concurrent appends to the second topic: seq %d at position %d", seq, i)
			}
		}
		evs := readAll(t, s, "busy")
		if len(evs) != workers*calls*perCall {
			t.Fatalf("read %d events, want %d", len(evs), workers*calls*perCall)
		}
		for i, e := range evs {
			if e.Seq != int64(i+1) || e.ID != ids[e.Seq] {
				t.Fatalf("event at position %d: seq %d id %s; want seq %d id %s", i, e.Seq, e.ID, i+1, ids[int64(i+1)])
			}
		}
		wantStats(t, s, "busy", int64(len(evs)), 1, int64(len(evs)))
	})

	t.Run("SeveralTopicsInOneCall", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("multi.a"))
		putTopic(t, s, topic("multi.b"))
		at := base()
		evs := []*herald.Event{event("multi.a", at, "a1"), event("multi.b", at, "b1"), event("multi.a", at, "a2"),
			event("multi.b", at, "b2"), event("multi.b", at, "b3")}
		wantSeqs(t, "mixed call", appendStored(t, s, evs...), 1, 1, 2, 2, 3)
		wantSeqs(t, "multi.a", seqsOf(readAll(t, s, "multi.a")), 1, 2)
		b := readAll(t, s, "multi.b")
		wantSeqs(t, "multi.b", seqsOf(b), 1, 2, 3)
		sameEvent(t, b[2], evs[4])
	})

	t.Run("PayloadsByteForByte", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("payloads"))
		allBytes := make([]byte, 512)
		for i := range allBytes {
			allBytes[i] = byte(i) // every byte value, NULs included, twice
		}
		big := make([]byte, herald.DefaultMaxEventBytes)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range big {
			big[i] = byte(rng.Uint32())
		}
		at := base()
		cases := []struct {
			name        string
			payload     []byte
			contentType string
		}{
			{"binary", allBytes, "application/octet-stream"},
			{"empty", []byte{}, "text/plain"},
			{"nil", nil, ""},
			{"256KiB", big, "application/x-protobuf"},
			{"json", []byte(`{"amount": 12.50, "currency": "EUR", "note": "caf\u00e9 \u2603"}`), "application/json; charset=utf-8"},
			{"invalid utf-8", []byte{0xff, 0xfe, 'a', 0xc3}, "text/plain"},
		}
		var evs []*herald.Event
		for _, c := range cases {
			e := event("payloads", at, "")
			e.Payload, e.ContentType = bytes.Clone(c.payload), c.contentType
			evs = append(evs, e)
		}
		appendStored(t, s, evs...)
		got := readAll(t, s, "payloads")
		if len(got) != len(cases) {
			t.Fatalf("read %d events, want %d", len(got), len(cases))
		}
		for i, c := range cases {
			if !bytes.Equal(got[i].Payload, c.payload) {
				t.Fatalf("%s payload: read %d bytes that differ from the %d written", c.name, len(got[i].Payload), len(c.payload))
			}
			sameEvent(t, got[i], evs[i])
			one, err := s.GetEvent(t.Context(), "payloads", evs[i].ID)
			if err != nil {
				t.Fatalf("GetEvent %s: %v", c.name, err)
			}
			sameEvent(t, one, evs[i])
		}
	})

	t.Run("MetadataRoundTrips", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("meta"))
		at := base().Add(123456 * time.Microsecond)
		full := &herald.Event{
			ID:             "order-42-created", // producer-given id
			Topic:          "meta",
			Type:           "order.created",
			Key:            "customer/7 \u00fc", // any text
			IdempotencyKey: "req-7f3a",
			ContentType:    "application/json",
			Headers:        map[string]string{"X-Trace": "abc-123", "Tenant": "acme", "Empty": "", "Unicode": "\u65e5\u672c"},
			Payload:        []byte(`{}`),
			Time:           at,
		}
		bare := &herald.Event{ID: herald.NewID(at), Topic: "meta", Time: at.Add(time.Second), Payload: []byte("p")}
		appendStored(t, s, full, bare)
		got := readAll(t, s, "meta")
		if len(got) != 2 {
			t.Fatalf("read %d events, want 2", len(got))
		}
		sameEvent(t, got[0], full)
		sameEvent(t, got[1], bare)
		if len(got[1].Headers) != 0 {
			t.Fatalf("event without headers read back with %v", got[1].Headers)
		}
	})

	t.Run("UnknownTopicFailsOnlyItsEvent", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("known"))
		at := base()
		evs := []*herald.Event{event("known", at, "1"), event("unknown", at, "x"), event("known", at, "2")}
		res := appendOK(t, s, evs...)
		if res[0].Err != nil || res[0].Seq != 1 || res[2].Err != nil || res[2].Seq != 2 {
			t.Fatalf("events of the known topic: %+v, %+v; want stored at seqs 1 and 2", res[0], res[2])
		}
		wantCode(t, "event of the unknown topic", res[1].Err, herald.CodeNotFound)
		if res[1].Duplicate || evs[1].Seq != 0 {
			t.Fatalf("event of the unknown topic: result %+v, Seq %d; want not stored", res[1], evs[1].Seq)
		}
		wantSeqs(t, "known topic", seqsOf(readAll(t, s, "known")), 1, 2)
		if evs := readAll(t, s, "unknown"); len(evs) != 0 {
			t.Fatalf("unknown topic reads %d events", len(evs))
		}
		_, err := s.GetTopic(t.Context(), "unknown")
		wantCode(t, "Append must not create topics", err, herald.CodeNotFound)
	})

	t.Run("FailedCallStoresNothing", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("failed"))
		_, err := s.Append(ctxCanceled(t), []*herald.Event{event("failed", base(), "1")})
		if err == nil {
			t.Fatal("Append with a canceled context succeeded")
		}
		wantStats(t, s, "failed", 0, 0, 0)
		wantSeqs(t, "after a failed call", appendStored(t, s, event("failed", base(), "2")), 1)
	})
}
