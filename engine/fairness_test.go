package engine_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
)

// attempts waits until the subscription's attempt log (its failures) and
// its sample of successes hold at least n attempts and returns them all.
func (e *env) attempts(subID string, n int) []herald.Attempt {
	e.t.Helper()
	var as []herald.Attempt
	waitFor(e.t, "attempts of "+subID+" recorded", 20*time.Second, func() bool {
		var err error
		as, err = e.store.ListAttempts(context.Background(), subID, herald.AttemptFilter{Limit: 1000})
		if err != nil {
			e.t.Fatal(err)
		}
		st, err := e.store.DeliveryStats(context.Background(), subID)
		if err != nil {
			e.t.Fatal(err)
		}
		as = append(as, st.Sample...)
		return len(as) >= n
	})
	return as
}

// hang makes the receiver hold every request until the test ends.
func (r *receiver) hang(t *testing.T) {
	r.hold = make(chan struct{})
	t.Cleanup(func() { close(r.hold) }) // before the server closes: cleanups run last first
}

// inFlightNow is how many requests the receiver is handling now.
func (r *receiver) inFlightNow() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inFlight
}

// An endpoint that accepts requests and never answers, on a subscription
// whose max_in_flight is larger than the node's whole pool of send slots,
// holds only its share of them: a healthy subscription keeps delivering,
// and waiting for a slot never counts as a failed attempt (issue 12 a: the
// healthy endpoint collected dead letters for requests it never saw).
func TestDispatchHungEndpointDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	const pool = 8 // 2 per subscription, 4 per destination
	e := startEnv(t, filepath.Join(t.TempDir(), "h.db"), func(c *engine.DispatcherConfig) { c.MaxConcurrency = pool })
	e.topic("hung")
	e.topic("healthy")
	hung := newReceiver(t, nil)
	hung.hang(t)
	ok := newReceiver(t, nil)
	h := e.subscribe(herald.Subscription{ID: "sub_hung", Topic: "hung", Config: hookConfig(hung.URL), MaxInFlight: 2 * pool, Timeout: 10 * time.Second,
		Retry: herald.RetryPolicy{MaxAttempts: 1}})
	s := e.subscribe(herald.Subscription{ID: "sub_ok", Topic: "healthy", Config: hookConfig(ok.URL), Timeout: 300 * time.Millisecond,
		Retry: herald.RetryPolicy{MaxAttempts: 2, Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond}})
	hung.secret, ok.secret = secretOf(h), secretOf(s)

	e.publish("hung", 2*pool, nil)
	waitFor(t, "the hung endpoint to hold requests", 10*time.Second, func() bool { return hung.inFlightNow() > 0 })
	const n = 30
	e.publish("healthy", n, nil)
	waitFor(t, "every event at the healthy endpoint", 20*time.Second, func() bool { d, _ := ok.count(); return d == n })

	for _, a := range e.attempts(s.ID, n) {
		if a.Outcome != herald.OutcomeSuccess || a.Attempt != 1 {
			t.Errorf("healthy subscription: attempt %d of seq %d: %s %q; waiting for a slot must not be an attempt", a.Attempt, a.Seq, a.Outcome, a.Error)
		}
	}
	if dead, err := e.store.CountDeadLetters(context.Background(), s.ID); err != nil || dead != 0 {
		t.Fatalf("healthy subscription: %d dead letters (%v), want none", dead, err)
	}
	hung.mu.Lock()
	peak := hung.peak
	hung.mu.Unlock()
	if peak > pool/4 {
		t.Fatalf("the hung endpoint held %d requests at once; a subscription's share is %d of %d slots", peak, pool/4, pool)
	}
}

// The request timeout starts when the request is sent, not when the
// delivery starts waiting for a send slot, and the attempt log's latency is
// the request's (issue 12 b: a receiver answering in 2 s with a 5 s timeout
// was cut off, and "no response within 30s" came with a latency of 5.2 s).
// A slow receiver shares a small pool with a hung one and its own waiting
// deliveries: it is never cut off, each latency is at least its answer
// time, and each timeout's latency is at least the timeout it names.
func TestDispatchTimeoutStartsWhenTheRequestIsSent(t *testing.T) {
	t.Parallel()
	const pool = 4 // 1 per subscription, 2 per destination
	const answerIn = 150 * time.Millisecond
	e := startEnv(t, filepath.Join(t.TempDir(), "h.db"), func(c *engine.DispatcherConfig) { c.MaxConcurrency = pool })
	e.topic("hung")
	e.topic("slow")
	hung := newReceiver(t, nil)
	hung.hang(t)
	slow := newReceiver(t, func(int64, int) int {
		time.Sleep(answerIn) // the receiver's own pace, not the test waiting
		return 0
	})
	h := e.subscribe(herald.Subscription{ID: "sub_hung", Topic: "hung", Config: hookConfig(hung.URL), MaxInFlight: 4 * pool, Timeout: 2 * time.Second,
		Retry: herald.RetryPolicy{MaxAttempts: 1}})
	s := e.subscribe(herald.Subscription{ID: "sub_slow", Topic: "slow", Config: hookConfig(slow.URL), MaxInFlight: 8, Timeout: time.Second,
		Retry: herald.RetryPolicy{MaxAttempts: 1}})
	hung.secret, slow.secret = secretOf(h), secretOf(s)

	e.publish("hung", 4*pool, nil)
	waitFor(t, "the hung endpoint to hold requests", 10*time.Second, func() bool { return hung.inFlightNow() > 0 })
	const n = 10 // more than the slow subscription's share: its own deliveries wait for slots
	e.publish("slow", n, nil)
	waitFor(t, "every event at the slow endpoint", 30*time.Second, func() bool { d, _ := slow.count(); return d == n })

	for _, a := range e.attempts(s.ID, n) {
		if a.Outcome != herald.OutcomeSuccess {
			t.Errorf("slow subscription: seq %d cut off: %q after %v", a.Seq, a.Error, a.Latency)
		} else if a.Latency < answerIn {
			t.Errorf("slow subscription: seq %d logged a latency of %v; the receiver took %v to answer", a.Seq, a.Latency, answerIn)
		}
	}
	for _, a := range e.attempts(h.ID, 1) {
		if a.Outcome != herald.OutcomeFailure || !strings.Contains(a.Error, "no response within 2s") || a.Latency < 2*time.Second {
			t.Errorf("hung subscription: seq %d: %s %q after %v; want no response within the 2s timeout, after at least 2s", a.Seq, a.Outcome, a.Error, a.Latency)
		}
	}
}

// An event sent outside the workers (the API's test events) takes a send
// slot like every delivery: while none is free nothing is sent, and the
// caller hears why once its context ends.
func TestDispatchDeliverOutsideWorkersTakesASlot(t *testing.T) {
	t.Parallel()
	e := startEnv(t, filepath.Join(t.TempDir(), "h.db"), func(c *engine.DispatcherConfig) { c.MaxConcurrency = 1 })
	e.topic("hung")
	hung := newReceiver(t, nil)
	hung.hold = make(chan struct{})
	answer := sync.OnceFunc(func() { close(hung.hold) })
	t.Cleanup(answer)
	ok := newReceiver(t, nil)
	h := e.subscribe(herald.Subscription{ID: "sub_hung", Topic: "hung", Config: hookConfig(hung.URL), Timeout: 10 * time.Second})
	s := e.subscribe(herald.Subscription{ID: "sub_ok", Topic: "other", Config: hookConfig(ok.URL), State: herald.StatePaused})
	hung.secret, ok.secret = secretOf(h), secretOf(s)
	e.publish("hung", 1, nil)
	waitFor(t, "the only slot taken", 10*time.Second, func() bool { return hung.inFlightNow() == 1 })

	now := time.Now()
	ev := &herald.Event{ID: herald.NewID(now), Topic: "other", Type: "herald.test", ContentType: "application/json", Payload: []byte("{}"), Time: now}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	res := e.dispatcher.Deliver(ctx, &s, ev, 1)
	cancel()
	if res.Outcome != herald.Failed || res.Err != "no-send-slot" || !strings.Contains(res.Detail, "not sent") {
		t.Fatalf("a test event with no slot free = %+v, want a failure saying it was not sent", res)
	}
	if _, total := ok.count(); total != 0 {
		t.Fatalf("the endpoint got %d requests; no slot was free", total)
	}
	answer() // the hung request ends, its slot comes free
	if res := e.dispatcher.Deliver(context.Background(), &s, ev, 1); res.Outcome != herald.Delivered {
		t.Fatalf("a test event with a slot free = %+v", res)
	}
}
