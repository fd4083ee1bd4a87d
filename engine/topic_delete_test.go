package engine_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/webhook"
)

// idReceiver is a webhook endpoint that verifies every request and counts
// deliveries by event id: a topic deleted and created again reuses seqs,
// so seqs cannot tell its events from the old topic's.
type idReceiver struct {
	*httptest.Server
	secret string

	mu   sync.Mutex
	got  map[string]int // event id -> times accepted
	seqs map[string]int64
	bad  []string
}

func newIDReceiver(t *testing.T) *idReceiver {
	r := &idReceiver{got: map[string]int{}, seqs: map[string]int64{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := webhook.Verify(r.secret, req.Header, body, time.Now(), 0); err != nil {
			r.bad = append(r.bad, err.Error())
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := req.Header.Get("Webhook-Id")
		r.got[id]++
		r.seqs[id], _ = strconv.ParseInt(req.Header.Get("Herald-Seq"), 10, 64)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

// has reports whether every event was accepted at least once.
func (r *idReceiver) has(evs []herald.Event) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		if r.got[ev.ID] == 0 {
			return false
		}
	}
	return true
}

// wantEachOnce fails the test unless every event was accepted exactly once
// with its seq, and nothing else was accepted: no endpoint failed and no
// node crashed, so nothing may repeat.
func (r *idReceiver) wantEachOnce(t *testing.T, evs []herald.Event) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		t.Fatalf("%d requests failed signature checks: %v", len(r.bad), r.bad[0])
	}
	for _, ev := range evs {
		if n := r.got[ev.ID]; n != 1 || r.seqs[ev.ID] != ev.Seq {
			t.Errorf("event %s (%s seq %d) accepted %d times, last as seq %d; want once", ev.ID, ev.Topic, ev.Seq, n, r.seqs[ev.ID])
		}
	}
	if len(r.got) != len(evs) {
		t.Errorf("%d distinct events accepted, want %d", len(r.got), len(evs))
	}
}

// storedEvents returns the topic's events as the store has them now.
func storedEvents(t *testing.T, st herald.Store, topic string) []herald.Event {
	t.Helper()
	evs, err := st.ReadEvents(context.Background(), topic, 0, 10_000)
	if err != nil {
		t.Fatalf("ReadEvents(%s): %v", topic, err)
	}
	return evs
}

// waitCursor waits until the subscription's stored cursor in the topic is
// seq.
func waitCursor(t *testing.T, st herald.SubscriptionStore, id, topic string, seq int64) {
	t.Helper()
	waitFor(t, "cursor "+topic+" at "+strconv.FormatInt(seq, 10), 10*time.Second, func() bool {
		cs, err := st.Cursors(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(cs, herald.Cursor{Topic: topic, Seq: seq})
	})
}

// noRenewals makes the dispatcher re-read its subscriptions and renew its
// leases only when kicked: the renewal after a deletion would restart the
// topic's workers too (see herald.SubscriptionStore.AcquireLease), and the
// tests that use it check that OnTopicDeleted does, at once.
func noRenewals(c *engine.DispatcherConfig) { c.PollInterval = time.Hour }

// deleteTopic deletes the topic as the server does: in the store, then
// the feed is told.
func (e *env) deleteTopic(name string) {
	e.t.Helper()
	if err := e.store.DeleteTopic(context.Background(), name); err != nil {
		e.t.Fatal(err)
	}
	e.feed.TopicDeleted(name)
}

// A topic deleted and created again is delivered from its first event,
// though the subscription's worker had delivered the old topic up to a
// higher seq.
func testDispatchTopicCreatedAgainStartsAtItsFirstEvent(t *testing.T) {
	e := startEnv(t, dbPath(t), noRenewals)
	e.topic("orders")
	checkTopicCreatedAgain(t, e, e, 10*time.Second)
}

// checkTopicCreatedAgain subscribes to "orders" through sub, publishes 5
// events through pub and waits for them, deletes the topic through pub and
// creates it again, publishes 3 more, and checks that each of the 8 events
// arrived exactly once and the cursor ends at the new topic's seq 3.
func checkTopicCreatedAgain(t *testing.T, pub, sub *env, timeout time.Duration) {
	t.Helper()
	r := newIDReceiver(t)
	s := sub.subscribe(herald.Subscription{Topic: "orders", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)
	pub.publish("orders", 5, nil)
	old := storedEvents(t, pub.store, "orders")
	waitFor(t, "the old topic's 5 events", timeout, func() bool { return r.has(old) })

	pub.deleteTopic("orders")
	pub.topic("orders")
	pub.publish("orders", 3, nil)
	recreated := storedEvents(t, pub.store, "orders")
	if len(recreated) != 3 || recreated[0].Seq != 1 {
		t.Fatalf("the topic created again holds %d events from seq %d; want 3 from 1", len(recreated), recreated[0].Seq)
	}
	waitFor(t, "the new topic's 3 events", timeout, func() bool { return r.has(recreated) })
	waitCursor(t, sub.store, s.ID, "orders", 3)
	r.wantEachOnce(t, append(old, recreated...))
}

// A pattern subscription whose topics are deleted one at a time: the
// topic created again starts at its first event, and its other topic, still
// being published to while its worker restarts, loses and repeats nothing.
func testDispatchTopicDeletedUnderPattern(t *testing.T) {
	e := startEnv(t, dbPath(t), noRenewals)
	e.topic("orders.a")
	e.topic("orders.b")
	r := newIDReceiver(t)
	s := e.subscribe(herald.Subscription{Topic: "orders.*", Config: hookConfig(r.URL), MaxInFlight: 4})
	r.secret = secretOf(s)
	e.publish("orders.a", 4, nil)
	e.publish("orders.b", 4, nil)
	oldA := storedEvents(t, e.store, "orders.a")
	waitFor(t, "the first 8 events", 10*time.Second, func() bool {
		return r.has(oldA) && r.has(storedEvents(t, e.store, "orders.b"))
	})

	// orders.b's events in flight and unsettled while orders.a goes: the
	// restart writes their progress first.
	e.publish("orders.b", 20, nil)
	e.deleteTopic("orders.a")
	e.publish("orders.b", 10, nil)
	e.topic("orders.a")
	e.publish("orders.a", 3, nil)
	newA, b := storedEvents(t, e.store, "orders.a"), storedEvents(t, e.store, "orders.b")
	if len(newA) != 3 || newA[0].Seq != 1 || len(b) != 34 {
		t.Fatalf("orders.a holds %d events, orders.b %d; want 3 and 34", len(newA), len(b))
	}
	waitFor(t, "every event of both topics", 20*time.Second, func() bool { return r.has(newA) && r.has(b) })
	waitCursor(t, e.store, s.ID, "orders.a", 3)
	waitCursor(t, e.store, s.ID, "orders.b", 34)
	r.wantEachOnce(t, slices.Concat(oldA, newA, b))
}

// settleGate holds the dispatcher's settlements that move a cursor of one
// topic to a seq, until released: a settlement of the old topic in flight
// while the topic is deleted and created again.
type settleGate struct {
	engine.DispatchStore
	topic   string
	seq     int64
	held    chan struct{} // closed when a settlement is held
	release chan struct{}
	once    sync.Once
}

func (g *settleGate) Settle(ctx context.Context, items []herald.SettleItem) ([]error, error) {
	for _, it := range items {
		if slices.Contains(it.Cursors, herald.Cursor{Topic: g.topic, Seq: g.seq}) {
			g.once.Do(func() { close(g.held) })
			<-g.release
		}
	}
	return g.DispatchStore.Settle(ctx, items)
}

// A settlement of the old topic still being written when the topic is
// deleted and created again must not put the old cursor back: the new
// topic would skip its first events.
func testDispatchStaleSettlementAfterTopicDeleted(t *testing.T) {
	gate := &settleGate{topic: "orders", seq: 5, held: make(chan struct{}), release: make(chan struct{})}
	e := startEnvWrapped(t, dbPath(t), func(st engine.DispatchStore) engine.DispatchStore {
		gate.DispatchStore = st
		return gate
	}, noRenewals)
	e.topic("orders")
	r := newIDReceiver(t)
	s := e.subscribe(herald.Subscription{Topic: "orders", Config: hookConfig(r.URL)})
	r.secret = secretOf(s)
	e.publish("orders", 5, nil)
	old := storedEvents(t, e.store, "orders")
	select {
	case <-gate.held:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the settlement of cursor 5")
	}

	e.deleteTopic("orders")
	e.topic("orders")
	e.publish("orders", 7, nil) // past the stale cursor
	close(gate.release)
	recreated := storedEvents(t, e.store, "orders")
	waitFor(t, "the new topic's 7 events", 10*time.Second, func() bool { return r.has(recreated) })
	waitCursor(t, e.store, s.ID, "orders", 7)
	r.wantEachOnce(t, append(old, recreated...))
}

func TestDispatchTopicCreatedAgainStartsAtItsFirstEvent(t *testing.T) {
	runOnBackends(t, testDispatchTopicCreatedAgainStartsAtItsFirstEvent)
}

func TestDispatchTopicDeletedUnderPattern(t *testing.T) {
	runOnBackends(t, testDispatchTopicDeletedUnderPattern)
}

func TestDispatchStaleSettlementAfterTopicDeleted(t *testing.T) {
	runOnBackends(t, testDispatchStaleSettlementAfterTopicDeleted)
}

// A topic deleted through another node and created again there: the node
// dispatching its subscription hears of the deletion and restarts the
// worker; when the notification is lost, the worker's next lease renewal
// gets a new epoch (the deletion fenced the old one) and restarts it.
func TestTopicDeletedOnAnotherNode(t *testing.T) {
	for _, notified := range []bool{true, false} {
		name := "notified"
		if !notified {
			name = "notification lost"
		}
		t.Run(name, func(t *testing.T) {
			dsn := clusterDSN(t)
			tune := []func(*engine.DispatcherConfig){nodeID("node-a")}
			if notified {
				tune = append(tune, noRenewals) // the notification must do
			}
			a := startEnv(t, dsn, tune...)
			b := startEnv(t, dsn, nodeID("node-b"), func(c *engine.DispatcherConfig) {
				c.Owns = func(string) bool { return false } // a dispatches everything
			})
			// b first: a's view has both nodes from its start, so no
			// membership change kicks a's dispatcher (which would renew its
			// leases) once the test is under way.
			cb := joinHearingDeletions(t, b, "node-b", true)
			ca := joinHearingDeletions(t, a, "node-a", notified)
			waitFor(t, "both nodes to see each other", 10*time.Second, func() bool {
				return len(ca.Members()) == 2 && len(cb.Members()) == 2
			})
			b.topic("orders")
			checkTopicCreatedAgain(t, b, a, 20*time.Second) // published and deleted on b, delivered by a
		})
	}
}

// joinHearingDeletions is join, with the node's dispatcher told of the
// topics other nodes delete when hear is set.
func joinHearingDeletions(t *testing.T, e *env, id string, hear bool) *cluster.Cluster {
	t.Helper()
	c := cluster.New(e.store.(cluster.Store), e.store.(cluster.Bus), cluster.Config{
		NodeID: id, HeartbeatInterval: 100 * time.Millisecond, ResyncInterval: time.Hour,
	}, nil, nil)
	c.OnRemoteCommit(e.feed.RemoteCommitted)
	c.OnMembershipChange(e.feed.SubscriptionsChanged)
	if hear {
		c.OnTopicDeleted(e.feed.TopicDeleted)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}
