package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/webhook"
)

// env is a running engine over a real SQLite file: committer, tail cache,
// dispatcher and the real webhook deliverer sending to loopback receivers.
type env struct {
	t          *testing.T
	path       string
	store      engine.DispatchStore
	committer  *engine.Committer
	dispatcher *engine.Dispatcher
	sender     *webhook.Sender
	feed       *engine.Feed // wired as the server wires it
}

// startEnv opens the store at path: a postgres:// DSN or a SQLite file.
func startEnv(t *testing.T, path string, tune ...func(*engine.DispatcherConfig)) *env {
	t.Helper()
	return startEnvWrapped(t, path, nil, tune...)
}

// startEnvWrapped is startEnv with the dispatcher's store wrapped by wrap
// (when not nil), to watch or change what the dispatcher writes.
func startEnvWrapped(t *testing.T, path string, wrap func(engine.DispatchStore) engine.DispatchStore,
	tune ...func(*engine.DispatcherConfig)) *env {
	t.Helper()
	return startEnvWith(t, path, wrap, nil, tune...)
}

// startEnvWith is startEnvWrapped with channels besides webhooks.
func startEnvWith(t *testing.T, path string, wrap func(engine.DispatchStore) engine.DispatchStore,
	channels []channel.Channel, tune ...func(*engine.DispatcherConfig)) *env {
	t.Helper()
	ctx := context.Background()
	var st engine.DispatchStore
	var err error
	if strings.HasPrefix(path, "postgres") {
		st, err = postgres.Open(ctx, path, postgres.Options{})
	} else {
		st, err = openSQLite(ctx, path)
	}
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, path: path, store: st}
	e.committer = engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	e.feed = engine.NewFeed()
	e.committer.OnCommit(e.feed.Committed)
	tail := engine.NewTail(engine.TailConfig{})
	e.feed.Listen(engine.StageCache, tail.Listener())
	e.sender = webhook.NewSender(webhook.SenderConfig{AllowPrivate: true})
	cfg := engine.DispatcherConfig{
		PollInterval:   50 * time.Millisecond,
		SettleInterval: 5 * time.Millisecond,
		LeaseTTL:       2 * time.Second,
	}
	for _, f := range tune {
		f(&cfg)
	}
	dst := st
	if wrap != nil {
		dst = wrap(st)
	}
	e.dispatcher = engine.NewDispatcher(engine.DispatcherDeps{
		Store: dst, Tail: tail,
		Publisher: engine.NewPublisher(engine.NewTopics(st, engine.TopicsConfig{}), e.committer, engine.PublisherConfig{}, nil, nil),
		Channels:  channel.NewRegistry(append(channels, webhook.NewChannel(e.sender, webhook.ChannelConfig{AllowPrivate: true}))...),
	}, cfg)
	e.feed.Listen(engine.StageConsumer, e.dispatcher.Listener())
	if err := e.committer.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.dispatcher.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if e.dispatcher != nil {
		if err := e.dispatcher.Stop(ctx); err != nil {
			e.t.Errorf("dispatcher stop: %v", err)
		}
		e.dispatcher = nil
		_ = e.committer.Stop(ctx)
		e.sender.Close()
		_ = e.store.Close()
	}
}

func (e *env) topic(name string) {
	e.t.Helper()
	now := time.Now().UTC()
	if _, _, err := e.store.PutTopic(context.Background(), herald.Topic{Name: name, CreatedAt: now, UpdatedAt: now}.WithDefaults()); err != nil {
		e.t.Fatal(err)
	}
}

// publish commits n events; key(i) gives each one's key.
func (e *env) publish(topic string, n int, key func(i int) string) {
	e.t.Helper()
	for i := 0; i < n; i++ {
		now := time.Now().UTC()
		ev := &herald.Event{
			ID: herald.NewID(now), Topic: topic, Type: "test.event", ContentType: "application/json",
			Payload: fmt.Appendf(nil, `{"i":%d,"amount":%d}`, i, i*10), Time: now,
		}
		if key != nil {
			ev.Key = key(i)
		}
		if _, err := e.committer.Append(context.Background(), []*herald.Event{ev}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// hookConfig is the webhook config of a subscription to url, with a fresh
// signing secret.
func hookConfig(url string) json.RawMessage {
	return webhook.Config{URL: url, Secret: webhook.NewSecret()}.Encode()
}

// secretOf returns the signing secret of a webhook subscription.
func secretOf(s herald.Subscription) string {
	c, err := webhook.ParseConfig(s.Config)
	if err != nil {
		panic(err)
	}
	return c.Secret
}

// urlOf returns the URL of a webhook subscription.
func urlOf(s herald.Subscription) string {
	c, err := webhook.ParseConfig(s.Config)
	if err != nil {
		panic(err)
	}
	return c.URL
}

// subscribe stores an active subscription with a fast retry schedule.
func (e *env) subscribe(s herald.Subscription) herald.Subscription {
	e.t.Helper()
	now := time.Now().UTC()
	if s.ID == "" {
		s.ID = "sub_" + strconv.FormatInt(now.UnixNano(), 36)
	}
	if s.State == "" {
		s.State = herald.StateActive
	}
	if s.Retry.MaxAttempts == 0 {
		s.Retry = herald.RetryPolicy{MaxAttempts: 6, Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond}
	}
	if s.Timeout == 0 {
		s.Timeout = 3 * time.Second
	}
	if s.MaxInFlight == 0 {
		s.MaxInFlight = 8
	}
	s.CreatedAt, s.UpdatedAt, s.LastActivityAt = now, now, now
	if err := e.store.CreateSubscription(context.Background(), s, herald.StartPosition{Earliest: true}); err != nil {
		e.t.Fatal(err)
	}
	e.dispatcher.Changed(s.ID)
	return s
}

// change changes the stored subscription as the API does: read it, change
// the copy, write it, and read again when a dispatcher's write got there
// first (CodeConflict). Then it tells the dispatcher.
func (e *env) change(id string, f func(*herald.Subscription)) {
	e.t.Helper()
	waitFor(e.t, "subscription "+id+" changed", 10*time.Second, func() bool {
		sub, err := e.store.GetSubscription(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		f(&sub)
		err = e.store.UpdateSubscription(context.Background(), sub)
		if err != nil && !herald.IsCode(err, herald.CodeConflict) {
			e.t.Fatal(err)
		}
		return err == nil
	})
	e.dispatcher.Changed(id)
}

// receiver is a webhook endpoint that verifies every request and records
// what it got. fail decides the answer status for a request (0 = 204).
type receiver struct {
	*httptest.Server
	secret string
	fail   func(seq int64, attempt int) int

	mu        sync.Mutex
	delivered map[int64]int // seq -> times answered 2xx
	attempts  int
	order     map[string][]int64 // key -> seqs in the order they were accepted
	bad       []string
	inFlight  int
	peak      int
	hold      chan struct{} // if set, each request waits for it (or for Herald to give up)
}

func newReceiver(t *testing.T, fail func(seq int64, attempt int) int) *receiver {
	r := &receiver{fail: fail, delivered: map[int64]int{}, order: map[string][]int64{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.inFlight++
	r.peak = max(r.peak, r.inFlight)
	hold := r.hold
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.inFlight--; r.mu.Unlock() }()
	if hold != nil {
		select {
		case <-hold:
		case <-req.Context().Done(): // Herald gave up (timeout): not in flight any more
			return
		}
	}
	if err := webhook.Verify(r.secret, req.Header, body, time.Now(), 0); err != nil {
		r.mu.Lock()
		r.bad = append(r.bad, err.Error())
		r.mu.Unlock()
		w.WriteHeader(401)
		return
	}
	seq, _ := strconv.ParseInt(req.Header.Get("Herald-Seq"), 10, 64)
	attempt, _ := strconv.Atoi(req.Header.Get("Herald-Attempt"))
	status := 204
	if r.fail != nil {
		if s := r.fail(seq, attempt); s != 0 {
			status = s
		}
	}
	r.mu.Lock()
	r.attempts++
	if status < 300 {
		r.delivered[seq]++
		k := req.Header.Get("Herald-Event-Key")
		r.order[k] = append(r.order[k], seq)
	}
	r.mu.Unlock()
	w.WriteHeader(status)
}

func (r *receiver) count() (distinct, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.delivered {
		total += n
	}
	return len(r.delivered), total
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func testDispatchDeliversEverySignedEvent(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("orders")
	r := newReceiver(t, nil)
	s := e.subscribe(herald.Subscription{Topic: "orders", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)
	e.publish("orders", 200, nil)
	waitFor(t, "200 deliveries", 20*time.Second, func() bool { d, _ := r.count(); return d == 200 })
	if len(r.bad) > 0 {
		t.Fatalf("%d requests failed signature checks: %v", len(r.bad), r.bad[0])
	}
	if r.peak > s.MaxInFlight {
		t.Fatalf("peak concurrency %d exceeds max_in_flight %d", r.peak, s.MaxInFlight)
	}
}

func testDispatchRetriesUntilEveryEventArrives(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("flaky")
	// Fail 30% of first attempts and some second ones, deterministically.
	r := newReceiver(t, func(seq int64, attempt int) int {
		if (seq*7+int64(attempt)*3)%10 < 3 && attempt < 3 {
			return 500
		}
		return 0
	})
	s := e.subscribe(herald.Subscription{Topic: "flaky", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)
	e.publish("flaky", 300, nil)
	waitFor(t, "every event delivered", 30*time.Second, func() bool { d, _ := r.count(); return d == 300 })
	_, total := r.count()
	if total != 300 {
		t.Fatalf("300 events were accepted %d times: no crash happened, so there must be no duplicate", total)
	}
	waitFor(t, "empty retry set", 10*time.Second, func() bool {
		n, err := e.store.CountRetries(context.Background(), s.ID)
		return err == nil && n == 0
	})
}

func testDispatchDeadLettersAndRedrive(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("dl")
	var mu sync.Mutex
	down := true
	r := newReceiver(t, func(seq int64, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if down && seq%2 == 0 {
			return 503
		}
		return 0
	})
	s := e.subscribe(herald.Subscription{Topic: "dl", Config: hookConfig(r.URL), Retry: herald.RetryPolicy{MaxAttempts: 3, Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}})
	r.secret = secretOf(s)
	e.publish("dl", 20, nil)
	ctx := context.Background()
	waitFor(t, "10 dead letters", 20*time.Second, func() bool {
		n, err := e.store.CountDeadLetters(ctx, s.ID)
		return err == nil && n == 10
	})
	if d, _ := r.count(); d != 10 {
		t.Fatalf("delivered %d, want the 10 odd seqs", d)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	n, err := e.store.RedriveDeadLetters(ctx, s.ID, nil, time.Now())
	if err != nil || n != 10 {
		t.Fatalf("redrive = %d, %v", n, err)
	}
	e.dispatcher.Changed(s.ID)
	waitFor(t, "redriven events delivered", 20*time.Second, func() bool { d, _ := r.count(); return d == 20 })
}

func testDispatchOrderedPerKeyUnderFailures(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("ledger")
	// Every third event's first two attempts fail.
	r := newReceiver(t, func(seq int64, attempt int) int {
		if seq%3 == 0 && attempt <= 2 {
			return 500
		}
		return 0
	})
	s := e.subscribe(herald.Subscription{Topic: "ledger", Config: hookConfig(r.URL), Ordered: true, MaxInFlight: 16})
	r.secret = secretOf(s)
	keys := []string{"acct-a", "acct-b", "acct-c", "acct-d"}
	e.publish("ledger", 120, func(i int) string { return keys[i%len(keys)] })
	waitFor(t, "120 ordered deliveries", 30*time.Second, func() bool { d, _ := r.count(); return d == 120 })
	if _, total := r.count(); total != 120 {
		t.Fatalf("120 events were accepted %d times; want no duplicate", total)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, seqs := range r.order {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] < seqs[i-1] {
				t.Fatalf("key %s: seq %d delivered after %d: %v", k, seqs[i], seqs[i-1], seqs)
			}
		}
	}
}

func testDispatchRestartInTheMiddleOfRetriesLosesNothing(t *testing.T) {
	path := dbPath(t)
	e := startEnv(t, path)
	e.topic("restart")
	var mu sync.Mutex
	healthy := false
	r := newReceiver(t, func(seq int64, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if !healthy && seq%4 == 0 {
			return 500
		}
		return 0
	})
	s := e.subscribe(herald.Subscription{Topic: "restart", Config: hookConfig(r.URL), Retry: herald.RetryPolicy{MaxAttempts: 50, Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}})
	r.secret = secretOf(s)
	e.publish("restart", 100, nil)
	waitFor(t, "the healthy three quarters", 20*time.Second, func() bool { d, _ := r.count(); return d == 75 })
	e.stop()

	mu.Lock()
	healthy = true
	mu.Unlock()
	startEnv(t, path)
	waitFor(t, "all 100 after the restart", 20*time.Second, func() bool { d, _ := r.count(); return d == 100 })
}

func testDispatchGoneDisablesAndAnnounces(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("gone")
	r := newReceiver(t, func(int64, int) int { return 410 })
	s := e.subscribe(herald.Subscription{Topic: "gone", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)
	e.publish("gone", 3, nil)
	ctx := context.Background()
	waitFor(t, "subscription disabled", 10*time.Second, func() bool {
		got, err := e.store.GetSubscription(ctx, s.ID)
		return err == nil && got.State == herald.StateDisabled
	})
	var evs []herald.Event
	waitFor(t, "the system event", 10*time.Second, func() bool {
		evs, _ = e.store.ReadEvents(ctx, herald.SubscriptionsTopic, 0, 10)
		return len(evs) > 0
	})
	if evs[0].Type != herald.EventSubscriptionDisabled || evs[0].Key != s.ID {
		t.Fatalf("system event = %s %s %s", evs[0].Type, evs[0].Key, evs[0].Payload)
	}
}

// A 410 Gone that arrives after the owner paused the subscription or moved
// it to a new URL is the old endpoint's answer: it disables nothing, and
// the owner's change stays.
func testDispatchLateGoneKeepsTheOwnersChange(t *testing.T) {
	cases := []struct {
		name  string
		moves bool // to the new endpoint; otherwise pauses
		want  herald.SubscriptionState
	}{
		{"pause", false, herald.StatePaused},
		{"new url", true, herald.StateActive},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := startEnv(t, dbPath(t))
			e.topic("moving")
			old := newReceiver(t, func(int64, int) int { return 410 })
			old.hold = make(chan struct{})
			next := newReceiver(t, nil)
			s := e.subscribe(herald.Subscription{Topic: "moving", Config: hookConfig(old.URL)})
			old.secret, next.secret = secretOf(s), secretOf(s)
			e.publish("moving", 1, nil)
			waitFor(t, "the delivery to the old endpoint in flight", 10*time.Second, func() bool {
				old.mu.Lock()
				defer old.mu.Unlock()
				return old.inFlight == 1
			})

			wantURL := old.URL
			e.change(s.ID, func(sub *herald.Subscription) {
				if c.moves {
					sub.Config, sub.FailingSince = webhook.Config{URL: next.URL, Secret: secretOf(*sub)}.Encode(), time.Time{}
					wantURL = next.URL
				} else {
					sub.State, sub.StateReason = herald.StatePaused, "paused by its owner"
				}
				sub.UpdatedAt = time.Now().UTC()
			})
			close(old.hold) // now the old endpoint answers 410
			ctx := context.Background()
			waitFor(t, "the 410 recorded", 10*time.Second, func() bool {
				as, err := e.store.ListAttempts(ctx, s.ID, herald.AttemptFilter{Limit: 10})
				return err == nil && slices.ContainsFunc(as, func(a herald.Attempt) bool { return a.StatusCode == 410 })
			})
			// The worker handled the 410 (and disabled, or not) before its
			// attempt was written.
			got, err := e.store.GetSubscription(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if gotURL := urlOf(got); got.State != c.want || gotURL != wantURL {
				t.Fatalf("after a late 410: state %s (%s), url %s; want %s, url %s", got.State, got.StateReason, gotURL, c.want, wantURL)
			}
			if c.want == herald.StateActive {
				waitFor(t, "the event at the new endpoint", 10*time.Second, func() bool { d, _ := next.count(); return d == 1 })
			}
		})
	}
}

// systemEvent waits for a system event of the type about the subscription.
func (e *env) systemEvent(typ, subID string) herald.Event {
	e.t.Helper()
	var found herald.Event
	waitFor(e.t, typ+" on "+herald.SubscriptionsTopic, 10*time.Second, func() bool {
		evs, _ := e.store.ReadEvents(context.Background(), herald.SubscriptionsTopic, 0, 100)
		for _, ev := range evs {
			if ev.Type == typ && ev.Key == subID {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

func testDispatchDisablesAfterFailingTooLong(t *testing.T) {
	e := startEnv(t, dbPath(t), func(c *engine.DispatcherConfig) { c.DisableAfter = 300 * time.Millisecond })
	e.topic("down")
	r := newReceiver(t, func(int64, int) int { return 500 })
	s := e.subscribe(herald.Subscription{Topic: "down", Config: hookConfig(r.URL), Retry: herald.RetryPolicy{MaxAttempts: 100, Initial: 20 * time.Millisecond, Max: 50 * time.Millisecond}})
	r.secret = secretOf(s)
	e.publish("down", 3, nil)
	ev := e.systemEvent(herald.EventSubscriptionDisabled, s.ID)
	got, err := e.store.GetSubscription(context.Background(), s.ID)
	if err != nil || got.State != herald.StateDisabled || !strings.Contains(got.StateReason, "failed for") {
		t.Fatalf("subscription = %s %q, %v", got.State, got.StateReason, err)
	}
	var body map[string]any
	if err := json.Unmarshal(ev.Payload, &body); err != nil || body["subscription_id"] != s.ID || body["reason"] == "" {
		t.Fatalf("system event body = %s", ev.Payload)
	}
	// Nothing is lost: the undelivered events wait in the retry set.
	if n, _ := e.store.CountRetries(context.Background(), s.ID); n != 3 {
		t.Fatalf("retry set holds %d events, want the 3 undelivered", n)
	}
}

func testDispatchRemovesIdleSubscriptions(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := startEnv(t, dbPath(t), func(c *engine.DispatcherConfig) { c.Now = clock })
	e.topic("quiet")
	r := newReceiver(t, nil)
	s := e.subscribe(herald.Subscription{Topic: "quiet", Config: hookConfig(r.URL), ExpiresAfterIdle: time.Hour})
	r.secret = secretOf(s)
	keep := e.subscribe(herald.Subscription{ID: "sub_keep", Topic: "quiet", Config: hookConfig(r.URL)})
	mu.Lock()
	now = now.Add(61 * time.Minute)
	mu.Unlock()
	e.dispatcher.Changed(s.ID)
	e.systemEvent(herald.EventSubscriptionExpired, s.ID)
	if _, err := e.store.GetSubscription(context.Background(), s.ID); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("idle subscription still there: %v", err)
	}
	if _, err := e.store.GetSubscription(context.Background(), keep.ID); err != nil {
		t.Fatalf("a subscription without expires_after_idle was removed: %v", err)
	}
}

func testDispatchFailsUnverifiedAfterDeadline(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("never")
	r := newReceiver(t, func(int64, int) int { return 404 })
	now := time.Now()
	s := e.subscribe(herald.Subscription{
		Topic: "never", Config: hookConfig(r.URL), State: herald.StatePending, Challenge: "tok",
		VerifyDeadline: now.Add(time.Second), NextChallengeAt: now, // the next retry falls after the deadline
	})
	e.systemEvent(herald.EventSubscriptionFailed, s.ID)
	got, err := e.store.GetSubscription(context.Background(), s.ID)
	if err != nil || got.State != herald.StateFailed || !strings.Contains(got.StateReason, "did not answer") {
		t.Fatalf("subscription = %s %q, %v", got.State, got.StateReason, err)
	}
}

func testDispatchHonoursRateLimit(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("limited")
	var mu sync.Mutex
	var first, last time.Time
	r := newReceiver(t, func(int64, int) int {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		last = now
		return 0
	})
	// 50 requests/s with a burst of 5: 40 events cannot all arrive in less
	// than (40-5)/50 = 0.7s. (A lower bound only: a slow machine makes it
	// longer, never shorter, so this cannot flake.)
	s := e.subscribe(herald.Subscription{Topic: "limited", Config: hookConfig(r.URL), RateLimit: 50, MaxInFlight: 16})
	r.secret = secretOf(s)
	e.publish("limited", 40, nil)
	waitFor(t, "40 rate-limited deliveries", 20*time.Second, func() bool { d, _ := r.count(); return d == 40 })
	mu.Lock()
	span := last.Sub(first)
	mu.Unlock()
	if span < 650*time.Millisecond {
		t.Fatalf("40 deliveries at 50/s arrived within %v; the rate limit was not applied", span)
	}
}

func testDispatchSlowEndpointDoesNotDelayAnother(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("shared")
	slow := newReceiver(t, nil)
	slow.hold = make(chan struct{})
	t.Cleanup(func() { close(slow.hold) })
	fast := newReceiver(t, nil)
	s1 := e.subscribe(herald.Subscription{ID: "sub_slow", Topic: "shared", Config: hookConfig(slow.URL), MaxInFlight: 2})
	s2 := e.subscribe(herald.Subscription{ID: "sub_fast", Topic: "shared", Config: hookConfig(fast.URL)})
	slow.secret, fast.secret = secretOf(s1), secretOf(s2)
	e.publish("shared", 100, nil)
	waitFor(t, "the fast endpoint gets all 100 while the slow one hangs", 20*time.Second, func() bool {
		d, _ := fast.count()
		return d == 100
	})
	if d, _ := slow.count(); d != 0 {
		t.Fatalf("the slow endpoint answered %d; it should still hang", d)
	}
}

func testDispatchPendingGetsNothingUntilVerified(t *testing.T) {
	e := startEnv(t, dbPath(t))
	e.topic("verify")
	var mu sync.Mutex
	answer := false
	var challenges int
	r := newReceiver(t, nil)
	r.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Herald-Event-Type") == webhook.VerificationType {
			body, _ := io.ReadAll(req.Body)
			var c struct{ Challenge string }
			_ = json.Unmarshal(body, &c)
			mu.Lock()
			challenges++
			ok := answer
			mu.Unlock()
			if ok {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"challenge":%q}`, c.Challenge)
			} else {
				w.WriteHeader(200) // 2xx without the echo is not agreement
			}
			return
		}
		r.serve(w, req)
	})
	now := time.Now()
	s := e.subscribe(herald.Subscription{
		Topic: "verify", Config: hookConfig(r.URL), State: herald.StatePending, Challenge: "tok-123",
		VerifyDeadline: now.Add(time.Hour), NextChallengeAt: now,
	})
	r.secret = secretOf(s)
	e.publish("verify", 5, nil)
	waitFor(t, "a challenge", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return challenges >= 1 })
	if d, _ := r.count(); d != 0 {
		t.Fatalf("a pending subscription got %d events", d)
	}
	got, _ := e.store.GetSubscription(context.Background(), s.ID)
	if got.State != herald.StatePending {
		t.Fatalf("state after an unechoed challenge = %s", got.State)
	}
	// Now answer: make the next challenge due at once.
	mu.Lock()
	answer = true
	mu.Unlock()
	e.change(s.ID, func(sub *herald.Subscription) {
		sub.NextChallengeAt = time.Now()
		sub.UpdatedAt = time.Now().UTC()
	})
	waitFor(t, "the 5 events kept while pending", 10*time.Second, func() bool { d, _ := r.count(); return d == 5 })
}

// backends lists the stores the dispatcher tests run on: SQLite always,
// PostgreSQL when HERALD_TEST_POSTGRES is set.
func backends(t *testing.T) []string {
	out := []string{"sqlite"}
	if os.Getenv("HERALD_TEST_POSTGRES") != "" {
		out = append(out, "postgres")
	} else {
		t.Log("HERALD_TEST_POSTGRES is not set: dispatcher tests run on SQLite only")
	}
	return out
}

var dbPathFor sync.Map // *testing.T -> path

func dbPath(t *testing.T) string {
	if p, ok := dbPathFor.Load(t); ok {
		return p.(string)
	}
	var p string
	if strings.Contains(t.Name(), "/postgres") {
		p = pgSchemaDSN(t)
	} else {
		p = filepath.Join(t.TempDir(), "h.db")
	}
	dbPathFor.Store(t, p)
	return p
}

func runOnBackends(t *testing.T, f func(*testing.T)) {
	for _, b := range backends(t) {
		t.Run(b, f)
	}
}

func TestDispatchDeliversEverySignedEvent(t *testing.T) {
	runOnBackends(t, testDispatchDeliversEverySignedEvent)
}

func TestDispatchRetriesUntilEveryEventArrives(t *testing.T) {
	runOnBackends(t, testDispatchRetriesUntilEveryEventArrives)
}

func TestDispatchDeadLettersAndRedrive(t *testing.T) {
	runOnBackends(t, testDispatchDeadLettersAndRedrive)
}

func TestDispatchOrderedPerKeyUnderFailures(t *testing.T) {
	runOnBackends(t, testDispatchOrderedPerKeyUnderFailures)
}

func TestDispatchRestartInTheMiddleOfRetriesLosesNothing(t *testing.T) {
	runOnBackends(t, testDispatchRestartInTheMiddleOfRetriesLosesNothing)
}

func TestDispatchGoneDisablesAndAnnounces(t *testing.T) {
	runOnBackends(t, testDispatchGoneDisablesAndAnnounces)
}

func TestDispatchLateGoneKeepsTheOwnersChange(t *testing.T) {
	runOnBackends(t, testDispatchLateGoneKeepsTheOwnersChange)
}

func TestDispatchSlowEndpointDoesNotDelayAnother(t *testing.T) {
	runOnBackends(t, testDispatchSlowEndpointDoesNotDelayAnother)
}

func TestDispatchPendingGetsNothingUntilVerified(t *testing.T) {
	runOnBackends(t, testDispatchPendingGetsNothingUntilVerified)
}

func TestDispatchDisablesAfterFailingTooLong(t *testing.T) {
	runOnBackends(t, testDispatchDisablesAfterFailingTooLong)
}

func TestDispatchRemovesIdleSubscriptions(t *testing.T) {
	runOnBackends(t, testDispatchRemovesIdleSubscriptions)
}

func TestDispatchFailsUnverifiedAfterDeadline(t *testing.T) {
	runOnBackends(t, testDispatchFailsUnverifiedAfterDeadline)
}

func TestDispatchHonoursRateLimit(t *testing.T) { runOnBackends(t, testDispatchHonoursRateLimit) }

// timesCounter counts the settlements that carry a subscription's times
// (last success, activity): each rewrites the subscription's row.
type timesCounter struct {
	engine.DispatchStore
	mu    sync.Mutex
	times []time.Time // LastSuccess of each settlement that carried times
}

func (c *timesCounter) Settle(ctx context.Context, items []herald.SettleItem) ([]error, error) {
	c.mu.Lock()
	for _, it := range items {
		if !it.LastSuccess.IsZero() || !it.Activity.IsZero() {
			c.times = append(c.times, it.LastSuccess)
		}
	}
	c.mu.Unlock()
	return c.DispatchStore.Settle(ctx, items)
}

func (c *timesCounter) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.times)
}

// Under steady delivery the subscription's last success and activity are
// written when they first change, then at most about once a second, and
// the newest at a graceful stop: a busy subscription does not rewrite its
// row with every settlement, yet what the API shows is at most a second old.
func TestDispatchWritesSubscriptionTimesAtMostOnceASecond(t *testing.T) {
	counter := &timesCounter{}
	e := startEnvWrapped(t, dbPath(t), func(st engine.DispatchStore) engine.DispatchStore {
		counter.DispatchStore = st
		return counter
	})
	e.topic("steady")
	r := newReceiver(t, nil)
	s := e.subscribe(herald.Subscription{Topic: "steady", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)
	ctx := context.Background()

	e.publish("steady", 1, nil)
	waitFor(t, "the first success recorded", 10*time.Second, func() bool {
		got, err := e.store.GetSubscription(ctx, s.ID)
		return err == nil && !got.LastSuccessAt.IsZero()
	})

	// 1.5 s of deliveries, one every 10 ms: about 150 settlements at the
	// 5 ms settle interval, and at most three that carry times.
	start := time.Now()
	n := 1
	for time.Since(start) < 1500*time.Millisecond {
		e.publish("steady", 1, nil)
		n++
		time.Sleep(10 * time.Millisecond) // pacing the publisher, not waiting for a result
	}
	waitFor(t, "every delivery", 10*time.Second, func() bool { d, _ := r.count(); return d == n })
	if w := counter.writes(); w > 4 {
		t.Fatalf("%d settlements carried the subscription's times during 1.5 s of deliveries; want at most 4 (once a second)", w)
	}
	lastDelivery := time.Now()
	e.stop()

	st, err := openSQLite(ctx, e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.GetSubscription(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if age := lastDelivery.Sub(got.LastSuccessAt); age > 250*time.Millisecond {
		t.Fatalf("after a graceful stop last_success_at is %v old; want the last delivery's time", age)
	}
}
