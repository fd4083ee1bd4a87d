package api

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// interleaved is the real store with writes slipped in between a
// handler's read of a subscription and its write: what a dispatcher does
// when it disables the subscription or records a failure run at that
// moment.
type interleaved struct {
	herald.SubscriptionStore
	mu     sync.Mutex
	before func() // runs before each of the next times UpdateSubscription calls
	times  int
}

func (s *interleaved) UpdateSubscription(ctx context.Context, sub herald.Subscription) error {
	s.mu.Lock()
	f := s.before
	if s.times--; s.times <= 0 {
		s.before = nil
	}
	s.mu.Unlock()
	if f != nil {
		f()
	}
	return s.SubscriptionStore.UpdateSubscription(ctx, sub)
}

// slipIn makes f run before each of the API's next n writes of a
// subscription.
func (s *interleaved) slipIn(n int, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before, s.times = f, n
}

// interleave puts an interleaved store between the API and e's store.
func interleave(e *subEnv) *interleaved {
	in := &interleaved{SubscriptionStore: e.subs}
	e.api.subs = in
	return in
}

// disableNow disables the subscription as the dispatcher does: it reads
// the stored one and writes it back disabled.
func (e *subEnv) disableNow(id string) {
	e.t.Helper()
	sub := e.stored(id)
	sub.State, sub.StateReason, sub.UpdatedAt = herald.StateDisabled, "the endpoint answered 410 Gone", time.Now().UTC()
	if err := e.subs.UpdateSubscription(context.Background(), sub); err != nil {
		e.t.Fatalf("disable: %v", err)
	}
}

// A PATCH whose subscription the dispatcher disables between the PATCH's
// read and its write keeps both changes: the settings are the owner's,
// the state the dispatcher's.
func TestSubscriptionPatchKeepsAConcurrentDisable(t *testing.T) {
	e := newSubEnv(t, Config{})
	in := interleave(e)
	s := e.create("", `{"topic":"orders","url":"https://example.com/x","verification":"none"}`)
	in.slipIn(1, func() { e.disableNow(s.ID) })

	got := e.patch("", s.ID, `{"description":"moved to the billing team"}`)
	if got.State != "disabled" || got.Description != "moved to the billing team" {
		t.Fatalf("PATCH answered state %s, description %q; want disabled and the new description", got.State, got.Description)
	}
	if st := e.stored(s.ID); st.State != herald.StateDisabled || st.StateReason != "the endpoint answered 410 Gone" || st.Description != "moved to the billing team" {
		t.Fatalf("stored state %s (%s), description %q; want disabled by the dispatcher and the new description", st.State, st.StateReason, st.Description)
	}

	// Pausing checks the state the subscription has when written: a
	// disabled subscription cannot be paused, though the request read it
	// active.
	s2 := e.create("", `{"topic":"orders","url":"https://example.com/y","verification":"none"}`)
	in.slipIn(1, func() { e.disableNow(s2.ID) })
	e.problem(herald.CodeConflict, "", req{method: "POST", path: "/v1/subscriptions/" + s2.ID + "/pause"})
	if st := e.stored(s2.ID); st.State != herald.StateDisabled {
		t.Fatalf("stored state %s after a refused pause; want disabled", st.State)
	}
}

// Reading a subscription records API activity with a write; a failure run
// the dispatcher starts meanwhile survives it.
func TestSubscriptionReadKeepsAConcurrentFailureRun(t *testing.T) {
	e := newSubEnv(t, Config{})
	in := interleave(e)
	s := e.create("", `{"topic":"orders","url":"https://example.com/x","verification":"none"}`)
	e.api.now = func() time.Time { return time.Now().Add(2 * activityResolution) } // the GET writes activity
	failing := time.Now().UTC().Truncate(time.Millisecond)
	in.slipIn(1, func() { e.settle(s.ID, herald.Settlement{FailingSince: failing}) })

	got := e.get(s.ID)
	if got.FailingSince == "" || !near(t, got.FailingSince, failing) {
		t.Fatalf("GET answered failing_since %q; want the dispatcher's %s", got.FailingSince, failing)
	}
	if st := e.stored(s.ID); !st.FailingSince.Equal(failing) {
		t.Fatalf("stored failing since %v; want %v", st.FailingSince, failing)
	}
}

// A request that keeps losing to other writers gives up with 409 instead
// of retrying forever, and writes nothing of its own.
func TestSubscriptionPatchGivesUpAfterRepeatedConflicts(t *testing.T) {
	e := newSubEnv(t, Config{})
	in := interleave(e)
	s := e.create("", `{"topic":"orders","url":"https://example.com/x","verification":"none"}`)
	in.slipIn(maxSaveTries, func() { // a failure run starts and ends before every write
		e.settle(s.ID, herald.Settlement{FailingSince: time.Now()})
		e.settle(s.ID, herald.Settlement{LastSuccess: time.Now()})
	})

	e.problem(herald.CodeConflict, "", req{method: "PATCH", path: "/v1/subscriptions/" + s.ID, body: []byte(`{"description":"never"}`)})
	if st := e.stored(s.ID); st.Description == "never" {
		t.Fatal("a refused PATCH changed the subscription")
	}
}
