package engine_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
)

// stalledLeases is the store with lease renewals that can be held up, as
// they are for a process that is paused or cannot reach its database: a
// call to AcquireLease made while stalled waits until resume.
type stalledLeases struct {
	engine.DispatchStore
	mu      sync.Mutex
	stalled chan struct{} // closed by resume; nil when not stalled
}

func (s *stalledLeases) AcquireLease(ctx context.Context, id, node string, now time.Time, ttl time.Duration) (int64, error) {
	s.mu.Lock()
	stalled := s.stalled
	s.mu.Unlock()
	if stalled != nil {
		select {
		case <-stalled:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return s.DispatchStore.AcquireLease(ctx, id, node, now, ttl)
}

func (s *stalledLeases) AcquireLeases(ctx context.Context, ids []string, node string, now time.Time, ttl time.Duration) ([]herald.Lease, error) {
	s.mu.Lock()
	stalled := s.stalled
	s.mu.Unlock()
	if stalled != nil {
		select {
		case <-stalled:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.DispatchStore.AcquireLeases(ctx, ids, node, now, ttl)
}

func (s *stalledLeases) RenewNodeLease(ctx context.Context, node string, now time.Time, ttl time.Duration) (herald.NodeLease, error) {
	s.mu.Lock()
	stalled := s.stalled
	s.mu.Unlock()
	if stalled != nil {
		select {
		case <-stalled:
		case <-ctx.Done():
			return herald.NodeLease{}, ctx.Err()
		}
	}
	return s.DispatchStore.RenewNodeLease(ctx, node, now, ttl)
}

func (s *stalledLeases) stall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled == nil {
		s.stalled = make(chan struct{})
	}
}

func (s *stalledLeases) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled != nil {
		close(s.stalled)
		s.stalled = nil
	}
}

// clock is a time source the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// A node whose lease renewals stop (a paused process, a database it cannot
// reach) stops sending once the lease may have lapsed by its own clock,
// before anyone tells it the lease is gone: the deliveries in flight finish,
// the ones it had queued are dropped, not sent (issue 12 c: a node resumed
// after SIGSTOP sent up to 90 queued deliveries per subscription that the
// new owner had made long before). What it dropped is delivered once it
// holds the lease again, once.
func TestDispatchStopsSendingWhenItsLeaseMayHaveLapsed(t *testing.T) {
	t.Parallel()
	clk := &clock{now: time.Now()}
	leases := &stalledLeases{}
	t.Cleanup(leases.resume)
	const ttl = 2 * time.Second
	e := startEnvWrapped(t, filepath.Join(t.TempDir(), "h.db"), func(st engine.DispatchStore) engine.DispatchStore {
		leases.DispatchStore = st
		return leases
	}, func(c *engine.DispatcherConfig) { c.Now, c.LeaseTTL = clk.Now, ttl })
	e.topic("paused")
	r := newReceiver(t, nil)
	r.hold = make(chan struct{})
	answer := sync.OnceFunc(func() { close(r.hold) })
	t.Cleanup(answer)
	const inFlight, n = 4, 20
	s := e.subscribe(herald.Subscription{Topic: "paused", Config: hookConfig(r.URL), MaxInFlight: inFlight})
	r.secret = secretOf(s)
	e.publish("paused", n, nil)
	waitFor(t, "a full window in flight", 10*time.Second, func() bool { return r.inFlightNow() == inFlight })

	// Renewals stop, and by the node's clock the lease runs out.
	leases.stall()
	clk.advance(ttl)
	answer() // the deliveries in flight are answered
	waitFor(t, "the worker to stop on its own", 10*time.Second, func() bool { return e.dispatcher.Dispatching() == 0 })
	if d, total := r.count(); d != inFlight || total != inFlight {
		t.Fatalf("after its lease lapsed the node made %d deliveries of %d events; want only the %d in flight", total, d, inFlight)
	}

	// Renewals work again: the node takes the lease back under a new
	// epoch and delivers the rest, nothing twice.
	leases.resume()
	waitFor(t, "every event delivered", 20*time.Second, func() bool { d, _ := r.count(); return d == n })
	if _, total := r.count(); total != n {
		t.Fatalf("%d events were delivered %d times; want once each", n, total)
	}
}

// A process killed while it dispatched leaves its leases in the store,
// live for a while. The next process takes them back at once, with new
// epochs, when it knows their holder is gone: they are held under its own
// node id, or no other process can use the store (Exclusive, SQLite under
// its lock). Otherwise its subscriptions would wait for the leases to run
// out (issue 12 d).
func TestDispatchTakesBackLeasesOfAPreviousProcess(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, holder, node string
		exclusive          bool
	}{
		{"under its own node id", "node-1", "node-1", false},
		{"exclusive", "a-gone-process", "node-2", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "h.db")
			r := newReceiver(t, nil)
			before := startEnv(t, path)
			before.topic("restarted")
			s := before.subscribe(herald.Subscription{Topic: "restarted", Config: hookConfig(r.URL)})
			r.secret = secretOf(s)
			before.stop()
			// What a kill -9 leaves: a lease that lasts an hour more.
			st, err := openSQLite(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			old, err := st.AcquireLease(context.Background(), s.ID, c.holder, time.Now(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()

			e := startEnv(t, path, func(cfg *engine.DispatcherConfig) { cfg.NodeID, cfg.Exclusive = c.node, c.exclusive })
			e.publish("restarted", 1, nil)
			waitFor(t, "the event delivered", 5*time.Second, func() bool { d, _ := r.count(); return d == 1 })
			// Under a new epoch: what the killed process may still have
			// had on its way to the store does not apply.
			errs, err := e.store.Settle(context.Background(), []herald.SettleItem{{SubscriptionID: s.ID, Epoch: old,
				Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "restarted", Seq: 1}}}}})
			if err != nil || !herald.IsCode(errs[0], herald.CodeConflict) {
				t.Fatalf("a settlement under the killed process's epoch: %v, %v; want a conflict", errs, err)
			}
		})
	}
}
