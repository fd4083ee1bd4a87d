package engine_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/engine"
)

// clusterDSN returns a fresh schema's DSN, or skips without PostgreSQL:
// only a store shared by several processes has other nodes.
func clusterDSN(t *testing.T) string {
	t.Helper()
	return pgSchemaDSN(t)
}

func nodeID(id string) func(*engine.DispatcherConfig) {
	return func(c *engine.DispatcherConfig) { c.NodeID = id }
}

// join makes e a cluster member whose remote commits reach its dispatcher.
// Periodic resyncs are off: wake-ups must come from notifications.
func join(t *testing.T, e *env, id string) *cluster.Cluster {
	t.Helper()
	return joinHearingDeletions(t, e, id, false)
}

// Events committed by another node reach this node's workers through the
// commit notifications, though its tail cache holds only its own share of
// the topic.
func TestRemoteCommitsWakeDispatcher(t *testing.T) {
	dsn := clusterDSN(t)
	a := startEnv(t, dsn, nodeID("node-a"))
	b := startEnv(t, dsn, nodeID("node-b"), func(c *engine.DispatcherConfig) {
		c.Owns = func(string) bool { return false } // a dispatches everything
	})
	join(t, a, "node-a")
	join(t, b, "node-b")
	a.topic("orders")
	r := newReceiver(t, nil)
	s := a.subscribe(herald.Subscription{Topic: "orders", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)

	a.publish("orders", 5, nil) // a's tail: seqs 1-5
	waitFor(t, "a's own events", 20*time.Second, func() bool { d, _ := r.count(); return d == 5 })
	b.publish("orders", 20, nil) // seqs 6-25, which a's tail never sees
	waitFor(t, "b's events, delivered by a", 20*time.Second, func() bool { d, _ := r.count(); return d == 25 })
	for range 5 { // interleaved: a's tail keeps restarting at gaps
		a.publish("orders", 3, nil)
		b.publish("orders", 4, nil)
	}
	waitFor(t, "interleaved events", 20*time.Second, func() bool { d, _ := r.count(); return d == 60 })
	if d, total := r.count(); total != d {
		t.Fatalf("%d events accepted %d times: nothing failed, so nothing may repeat", d, total)
	}
	if b.dispatcher.Dispatching() != 0 {
		t.Error("b dispatches though it owns nothing")
	}
}

// When ownership moves (a node joined or left), the old owner stops,
// writes its progress and releases the lease; the new owner continues from
// there: every event once.
func TestOwnershipMovesWithoutLossOrRepeat(t *testing.T) {
	dsn := clusterDSN(t)
	var owner atomic.Value
	owner.Store("node-a")
	owns := func(id string) func(*engine.DispatcherConfig) {
		return func(c *engine.DispatcherConfig) {
			c.Owns = func(string) bool { return owner.Load() == id }
		}
	}
	a := startEnv(t, dsn, nodeID("node-a"), owns("node-a"))
	b := startEnv(t, dsn, nodeID("node-b"), owns("node-b"))
	a.topic("orders")
	r := newReceiver(t, nil)
	s := a.subscribe(herald.Subscription{Topic: "orders", Config: hookConfig(r.URL), MaxInFlight: 4})
	r.secret = secretOf(s)

	a.publish("orders", 100, nil)
	waitFor(t, "a to deliver some", 20*time.Second, func() bool { d, _ := r.count(); return d >= 20 })
	owner.Store("node-b")
	a.dispatcher.Rebalance()
	b.dispatcher.Rebalance()
	b.publish("orders", 100, nil)
	waitFor(t, "every event", 30*time.Second, func() bool { d, _ := r.count(); return d == 200 })
	if d, total := r.count(); total != d {
		t.Fatalf("%d events accepted %d times across a clean handover, want each once", d, total)
	}
	waitFor(t, "b to hold the subscription", 10*time.Second, func() bool {
		return a.dispatcher.Dispatching() == 0 && b.dispatcher.Dispatching() == 1
	})
}

// A dispatcher whose lease was taken (it stalled past its lease and
// another node acquired it) cannot write its stale progress: the delivery
// it finishes afterwards moves no cursor and logs no attempt.
func TestStaleLeaseCannotMoveCursor(t *testing.T) {
	dsn := clusterDSN(t)
	a := startEnv(t, dsn, nodeID("node-a"))
	a.topic("orders")
	r := newReceiver(t, nil)
	r.hold = make(chan struct{})
	s := a.subscribe(herald.Subscription{Topic: "orders", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)
	a.publish("orders", 1, nil)
	waitFor(t, "the delivery to be in flight", 20*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.inFlight == 1
	})

	// Node b takes the subscription over, as it would once a's lease had
	// expired: a new holder, the next epoch.
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// What AcquireLease does then: node b's lease, the next epoch, and
	// a's node lease ended, so that a's next renewal tells it.
	var epoch int64
	if err := conn.QueryRow(t.Context(), `WITH b AS (
			INSERT INTO dispatch_nodes (node, epoch, expires_at) VALUES ('node-b', 1, $2) RETURNING epoch),
		a AS (UPDATE dispatch_nodes SET epoch = epoch + 1 WHERE node = 'node-a')
		UPDATE subscriptions SET lease_node = 'node-b', lease_node_epoch = (SELECT epoch FROM b), lease_epoch = lease_epoch + 1,
		lease_expires_at = $2 WHERE id = $1 RETURNING lease_epoch`, s.ID, time.Now().Add(time.Hour).UnixNano()).Scan(&epoch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to notice it lost the lease", 20*time.Second, func() bool { return a.dispatcher.Dispatching() == 0 })
	close(r.hold) // the stalled delivery completes now; a tries to record it
	if err := a.dispatcher.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.count(); d != 1 {
		t.Fatalf("the held delivery was not accepted (%d)", d)
	}
	cs, err := a.store.Cursors(t.Context(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Seq != 0 {
			t.Fatalf("the fenced node moved the cursor of %s to %d", c.Topic, c.Seq)
		}
	}
	if as, err := a.store.ListAttempts(t.Context(), s.ID, herald.AttemptFilter{Limit: 10}); err != nil || len(as) != 0 {
		t.Fatalf("the fenced node logged %d attempts (%v)", len(as), err)
	}
	// The new holder's writes apply.
	if _, err := a.store.AcquireLease(t.Context(), s.ID, "node-b", time.Now(), time.Hour); err != nil {
		t.Fatalf("node-b renews its lease: %v", err)
	}
	errs, err := a.store.Settle(t.Context(), []herald.SettleItem{{SubscriptionID: s.ID, Epoch: epoch,
		Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 1}}}}})
	if err != nil || errs[0] != nil {
		t.Fatalf("node-b settles: %v %v", err, errs)
	}
}

// failedRelease is the store whose next lease releases fail, as they do
// when the database is busy or the worker's drain ran out of time.
type failedRelease struct {
	engine.DispatchStore
	fails atomic.Int32
}

func (s *failedRelease) ReleaseLease(ctx context.Context, id, node string, epoch int64) error {
	if s.fails.Add(-1) >= 0 {
		return errors.New("the database is busy")
	}
	return s.DispatchStore.ReleaseLease(ctx, id, node, epoch)
}

// When the old owner's release of a lease fails, it must not go on
// renewing that lease for as long as it lives (it renews every lease it
// holds in one call): it gives back a lease it holds with no worker, and
// the new owner takes the subscription within a few renewals instead of
// never.
func TestOwnershipMovesWhenTheReleaseFailed(t *testing.T) {
	dsn := clusterDSN(t)
	var owner atomic.Value
	owner.Store("node-a")
	owns := func(id string) func(*engine.DispatcherConfig) {
		return func(c *engine.DispatcherConfig) {
			c.Owns = func(string) bool { return owner.Load() == id }
			c.LeaseTTL = 3 * time.Second
		}
	}
	store := &failedRelease{}
	a := startEnvWrapped(t, dsn, func(st engine.DispatchStore) engine.DispatchStore {
		store.DispatchStore = st
		return store
	}, nodeID("node-a"), owns("node-a"))
	b := startEnv(t, dsn, nodeID("node-b"), owns("node-b"))
	a.topic("orders")
	r := newReceiver(t, nil)
	s := a.subscribe(herald.Subscription{Topic: "orders", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)
	a.publish("orders", 10, nil)
	waitFor(t, "a to deliver", 20*time.Second, func() bool { d, _ := r.count(); return d == 10 })

	store.fails.Store(1)
	owner.Store("node-b")
	a.dispatcher.Rebalance()
	b.dispatcher.Rebalance()
	waitFor(t, "a to stop", 20*time.Second, func() bool { return a.dispatcher.Dispatching() == 0 })
	// Without the orphan sweep a renews the lease every second forever;
	// the wait bounds a hang, not the speed of the handover.
	waitFor(t, "b to hold the subscription", 30*time.Second, func() bool { return b.dispatcher.Dispatching() == 1 })
	b.publish("orders", 10, nil)
	waitFor(t, "b to deliver", 20*time.Second, func() bool { d, _ := r.count(); return d == 20 })
	if d, total := r.count(); total != d {
		t.Fatalf("%d events accepted %d times across the handover; want each once", d, total)
	}
}
