package engine_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// holdChannel answers Deferred (a second later) the first time it sees an
// event, as quiet hours do, then Delivered; it records the attempt number
// of every call.
type holdChannel struct {
	mu       sync.Mutex
	seen     map[string][]int // event id -> attempt numbers
	released map[string]bool
}

func (c *holdChannel) Name() string { return "holdtest" }
func (c *holdChannel) Validate(_ context.Context, p channel.ValidateParams) (json.RawMessage, error) {
	return p.Config, nil
}
func (c *holdChannel) Public(config json.RawMessage) json.RawMessage { return config }
func (c *holdChannel) Destination(json.RawMessage) string            { return "" }
func (c *holdChannel) Open(context.Context, *herald.Subscription) (channel.Sink, error) {
	return holdSink{c}, nil
}

type holdSink struct{ c *holdChannel }

func (s holdSink) Close(context.Context) error { return nil }
func (s holdSink) Deliver(_ context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.c.seen[ev.ID] = append(s.c.seen[ev.ID], attempt)
	if len(s.c.seen[ev.ID]) == 1 {
		return herald.DeliveryResult{Outcome: herald.Deferred, Err: "quiet-hours", RetryAfter: time.Second}
	}
	s.c.released[ev.ID] = true
	return herald.DeliveryResult{Outcome: herald.Delivered}
}

// A Deferred event waits in the retry set until RetryAfter and goes again
// as the same attempt: with a single attempt allowed it is delivered, not
// dead-lettered, and no failed attempt is logged.
func TestDeferredIsNoAttempt(t *testing.T) {
	t.Parallel()
	ch := &holdChannel{seen: map[string][]int{}, released: map[string]bool{}}
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	e.topic("night")
	s := e.subscribe(herald.Subscription{Topic: "night", Channel: "holdtest",
		Retry: herald.RetryPolicy{MaxAttempts: 1, Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond}})
	e.publishBatch("night", 3, nil)
	waitFor(t, "three released", 60*time.Second, func() bool {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return len(ch.released) == 3
	})
	ch.mu.Lock()
	for id, attempts := range ch.seen {
		if len(attempts) != 2 || attempts[0] != 1 || attempts[1] != 1 {
			t.Errorf("event %s: attempts %v, want [1 1] (the hold is no attempt)", id, attempts)
		}
	}
	ch.mu.Unlock()
	failed, err := e.store.ListAttempts(context.Background(), s.ID, herald.AttemptFilter{Outcome: herald.OutcomeFailure, Limit: 10})
	if err != nil || len(failed) != 0 {
		t.Fatalf("failed attempts %v, %v; want none", failed, err)
	}
	dead, err := e.store.ListDeadLetters(context.Background(), s.ID, herald.Cursor{}, 10)
	if err != nil || len(dead) != 0 {
		t.Fatalf("dead letters %v, %v; want none", dead, err)
	}
}
