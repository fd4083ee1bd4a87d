// Package storetest is the conformance suite every herald.Store passes: the
// executable form of the contracts written on herald.Store. Each store
// package calls Run from its tests, so SQLite and PostgreSQL cannot drift
// apart; when a contract changes, change this suite first.
package storetest

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// Run runs the suite, one subtest per contract clause.
//
// open must return a new, empty, ready store each time it is called (each
// subtest calls it once) and close it when t ends, with t.Cleanup; that
// Close may come after the suite's own call to Close, so its error is to be
// ignored. Subtests that touch only their own topics run in parallel;
// those that look at the whole store (listing, pruning, keys) do not.
//
// Times are compared at microsecond precision (the suite truncates the
// times it writes), so a backend may store microseconds.
func Run(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("Topics", func(t *testing.T) { runTopics(t, open) })
	t.Run("Append", func(t *testing.T) { runAppend(t, open) })
	t.Run("Dedup", func(t *testing.T) { runDedup(t, open) })
	t.Run("EventIDs", func(t *testing.T) { runEventIDs(t, open) })
	t.Run("Read", func(t *testing.T) { runRead(t, open) })
	t.Run("Prune", func(t *testing.T) { runPrune(t, open) })
	t.Run("Keys", func(t *testing.T) { runKeys(t, open) })
	t.Run("Audit", func(t *testing.T) { runAudit(t, open) })
	t.Run("Usage", func(t *testing.T) { runUsage(t, open) })
	t.Run("Lifecycle", func(t *testing.T) { runLifecycle(t, open) })
	t.Run("Archives", func(t *testing.T) { runArchives(t, open) })
	t.Run("Schemas", func(t *testing.T) { runSchemas(t, open) })
	t.Run("State", func(t *testing.T) { runState(t, open) })
	t.Run("StateBatch", func(t *testing.T) { runStateBatch(t, open) })
}

// base is a fixed point in time, microsecond aligned, near the present so
// events written at it are well inside default retention when that matters.
func base() time.Time { return time.Now().UTC().Truncate(time.Second).Add(-time.Hour) }

// topic returns valid topic settings with the defaults.
func topic(name string) herald.Topic {
	return herald.Topic{Name: name}.WithDefaults()
}

func putTopic(t *testing.T, s herald.Store, tp herald.Topic) herald.Topic {
	t.Helper()
	got, _, err := s.PutTopic(t.Context(), tp)
	if err != nil {
		t.Fatalf("PutTopic(%s): %v", tp.Name, err)
	}
	return got
}

func getTopic(t *testing.T, s herald.Store, name string) herald.Topic {
	t.Helper()
	got, err := s.GetTopic(t.Context(), name)
	if err != nil {
		t.Fatalf("GetTopic(%s): %v", name, err)
	}
	return got
}

// event returns a new event for the topic at the time.
func event(topic string, at time.Time, payload string) *herald.Event {
	return &herald.Event{
		ID:          herald.NewID(at),
		Topic:       topic,
		Time:        at,
		ContentType: "text/plain",
		Payload:     []byte(payload),
	}
}

// withKey sets the event's idempotency key.
func withKey(e *herald.Event, key string) *herald.Event {
	e.IdempotencyKey = key
	return e
}

// appendOK appends and fails the test on a call error; per-event results
// are returned for the caller to check.
func appendOK(t *testing.T, s herald.Store, events ...*herald.Event) []herald.AppendResult {
	t.Helper()
	res, err := s.Append(t.Context(), events)
	if err != nil {
		t.Fatalf("Append(%d events): %v", len(events), err)
	}
	if len(res) != len(events) {
		t.Fatalf("Append(%d events) returned %d results", len(events), len(res))
	}
	return res
}

// appendStored appends and requires every event to be stored (not a
// duplicate, no error); it returns their seqs.
func appendStored(t *testing.T, s herald.Store, events ...*herald.Event) []int64 {
	t.Helper()
	res := appendOK(t, s, events...)
	seqs := make([]int64, len(res))
	for i, r := range res {
		if r.Err != nil || r.Duplicate {
			t.Fatalf("Append: event %d: err %v, duplicate %v; want stored", i, r.Err, r.Duplicate)
		}
		if r.ID != events[i].ID {
			t.Fatalf("Append: event %d: result id %q, want %q", i, r.ID, events[i].ID)
		}
		seqs[i] = r.Seq
	}
	return seqs
}

func readAll(t *testing.T, s herald.Store, topic string) []herald.Event {
	t.Helper()
	evs, err := s.ReadEvents(t.Context(), topic, 0, 100_000)
	if err != nil {
		t.Fatalf("ReadEvents(%s): %v", topic, err)
	}
	return evs
}

func wantCode(t *testing.T, what string, err error, code herald.Code) {
	t.Helper()
	if got := herald.ErrorCode(err); got != code {
		t.Fatalf("%s: error %v has code %q, want %q", what, err, got, code)
	}
}

func wantSeqs(t *testing.T, what string, got []int64, want ...int64) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: seqs %v, want %v", what, got, want)
	}
}

func seqsOf(evs []herald.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

func wantStats(t *testing.T, s herald.Store, name string, head, first, count int64) {
	t.Helper()
	tp := getTopic(t, s, name)
	if tp.HeadSeq != head || tp.FirstSeq != first || tp.EventCount() != count {
		t.Fatalf("topic %s: HeadSeq %d, FirstSeq %d, EventCount %d; want %d, %d, %d",
			name, tp.HeadSeq, tp.FirstSeq, tp.EventCount(), head, first, count)
	}
}

// sameEvent compares a stored event with what was appended: every field,
// payload byte for byte, times at microsecond precision, a nil and an empty
// payload or header map alike.
func sameEvent(t *testing.T, got herald.Event, want *herald.Event) {
	t.Helper()
	switch {
	case got.ID != want.ID, got.Topic != want.Topic, got.Seq != want.Seq:
		t.Fatalf("event identity: got %s/%s/%d, want %s/%s/%d", got.Topic, got.ID, got.Seq, want.Topic, want.ID, want.Seq)
	case got.Type != want.Type, got.Key != want.Key, got.IdempotencyKey != want.IdempotencyKey, got.ContentType != want.ContentType:
		t.Fatalf("event %s metadata: got type %q key %q idempotency key %q content type %q, want %q %q %q %q", want.ID,
			got.Type, got.Key, got.IdempotencyKey, got.ContentType, want.Type, want.Key, want.IdempotencyKey, want.ContentType)
	case !got.Time.Equal(want.Time):
		t.Fatalf("event %s time: got %v, want %v", want.ID, got.Time, want.Time)
	case got.Time.Location() != time.UTC:
		t.Fatalf("event %s time %v is not in UTC", want.ID, got.Time)
	case !bytes.Equal(got.Payload, want.Payload):
		t.Fatalf("event %s payload: got %d bytes, want %d bytes (or different content)", want.ID, len(got.Payload), len(want.Payload))
	case !maps.Equal(got.Headers, want.Headers):
		t.Fatalf("event %s headers: got %v, want %v", want.ID, got.Headers, want.Headers)
	}
}

// ctxCanceled returns a context that is already canceled.
func ctxCanceled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}
