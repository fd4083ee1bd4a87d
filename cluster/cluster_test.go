package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/store/postgres/pgtest"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/cluster"
	"github.com/heraldhq/herald/store/postgres"
)

// schemaDSN makes a fresh schema in HERALD_TEST_POSTGRES, dropped when the
// test ends, and returns a DSN using it (application_name is the schema,
// so the test can find its sessions).
func schemaDSN(t *testing.T) (dsn, schema string) {
	t.Helper()
	return pgtest.Schema(t, "herald_cluster")
}

// node is one cluster member over its own store (its own pool), as a
// Herald process would have.
type node struct {
	store *postgres.Store
	c     *cluster.Cluster
	reg   *prometheus.Registry

	mu      sync.Mutex
	seen    map[string]int64 // topic -> highest head announced
	calls   []string         // "topic@seq" in call order
	changes int
	deleted []string // topics, in OnTopicDeleted call order
	subs    []string // subscription ids, in OnSubscriptionChanged call order
}

func newNode(t *testing.T, dsn, id string) *node {
	t.Helper()
	st, err := postgres.Open(context.Background(), dsn, postgres.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	n := &node{store: st, reg: prometheus.NewRegistry(), seen: map[string]int64{}}
	n.c = cluster.New(st, st, cluster.Config{
		NodeID: id, Addr: "127.0.0.1:0",
		HeartbeatInterval: 100 * time.Millisecond, NodeTTL: 500 * time.Millisecond,
		ResyncInterval: time.Hour, // only the resyncs the test causes
		Leases:         func() int { return 7 },
	}, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})), n.reg)
	n.c.OnRemoteCommit(func(topic string, seq int64) {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.seen[topic] = max(n.seen[topic], seq)
		n.calls = append(n.calls, fmt.Sprintf("%s@%d", topic, seq))
	})
	n.c.OnMembershipChange(func() {
		n.mu.Lock()
		n.changes++
		n.mu.Unlock()
	})
	n.c.OnSubscriptionChanged(func(id string) {
		n.mu.Lock()
		n.subs = append(n.subs, id)
		n.mu.Unlock()
	})
	n.c.OnTopicDeleted(func(topic string) {
		n.mu.Lock()
		n.deleted = append(n.deleted, topic)
		n.mu.Unlock()
	})
	return n
}

func (n *node) start(t *testing.T) {
	t.Helper()
	if err := n.c.Start(t.Context()); err != nil {
		t.Fatalf("Start %s: %v", n.c.NodeID(), err)
	}
	t.Cleanup(func() { _ = n.c.Stop(context.Background()) })
}

// startListening starts a (which commits) and b (which listens) with the
// topics, and waits until b hears a commit of one event to the first
// topic made through a: then b's listener is up.
func startListening(t *testing.T, a, b *node, topics ...string) {
	t.Helper()
	for _, topic := range topics {
		putTopic(t, a.store, topic)
	}
	a.start(t)
	b.start(t)
	appendTo(t, a.store, topics[0], 1)
	waitUntil(t, "b to hear of "+topics[0]+"@1", func() bool { return b.head(topics[0]) == 1 })
}

func (n *node) head(topic string) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seen[topic]
}

func (n *node) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func memberIDs(c *cluster.Cluster) []string {
	var ids []string
	for _, m := range c.Members() {
		ids = append(ids, m.ID)
	}
	return ids
}

// waitUntil polls cond until it holds or 20 seconds pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func appendTo(t *testing.T, s *postgres.Store, topic string, n int) {
	t.Helper()
	now := time.Now().UTC()
	evs := make([]*herald.Event, n)
	for i := range evs {
		evs[i] = &herald.Event{ID: herald.NewID(now), Topic: topic, Time: now, Payload: []byte("x")}
	}
	if _, err := s.Append(t.Context(), evs); err != nil {
		t.Fatal(err)
	}
}

func putTopic(t *testing.T, s *postgres.Store, name string) {
	t.Helper()
	if _, _, err := s.PutTopic(t.Context(), herald.Topic{Name: name}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
}

// Members see each other, split the keys between them with no overlap and
// no gap, wake each other on commits, and rebalance when one leaves or
// one stops heartbeating.
func TestClusterMembershipAndWakeups(t *testing.T) {
	dsn, _ := schemaDSN(t)
	a, b := newNode(t, dsn, "node-a"), newNode(t, dsn, "node-b")
	putTopic(t, a.store, "orders")
	a.start(t)
	b.start(t)
	waitUntil(t, "both nodes to see both", func() bool {
		return slices.Equal(memberIDs(a.c), []string{"node-a", "node-b"}) && slices.Equal(memberIDs(b.c), []string{"node-a", "node-b"})
	})
	ownedBy := func(ns ...*node) map[string]int {
		count := map[string]int{}
		for i := range 300 {
			id := fmt.Sprintf("sub_%d", i)
			var owners []string
			for _, n := range ns {
				if n.c.Owns(id) {
					owners = append(owners, n.c.NodeID())
				}
			}
			if len(owners) != 1 {
				t.Fatalf("%s is owned by %v, want exactly one node", id, owners)
			}
			count[owners[0]]++
		}
		return count
	}
	if c := ownedBy(a, b); c["node-a"] < 100 || c["node-b"] < 100 {
		t.Fatalf("unbalanced split of 300 keys: %v", c)
	}

	// A commit on a reaches b's callbacks with the topic's head; a skips
	// its own. First a hears a commit of b's, so a's listener is up: a
	// listener that connects later starts with a resync, which reports
	// every head, a's own included. Notifications arrive in commit order,
	// so once a sees b's later commit it has also seen (and skipped) its
	// own two.
	appendTo(t, b.store, "orders", 1)
	waitUntil(t, "a to hear of head 1", func() bool { return a.head("orders") == 1 })
	appendTo(t, a.store, "orders", 3)
	appendTo(t, a.store, "orders", 2)
	waitUntil(t, "b to hear of head 6", func() bool { return b.head("orders") == 6 })
	appendTo(t, b.store, "orders", 1)
	waitUntil(t, "a to hear of head 7", func() bool { return a.head("orders") == 7 })
	a.mu.Lock()
	if slices.Contains(a.calls, "orders@4") || slices.Contains(a.calls, "orders@6") {
		t.Errorf("a was told of its own commits: %v", a.calls)
	}
	a.mu.Unlock()
	if a.metric(t, "herald_cluster_notify_lag_seconds") < 1 {
		t.Error("no notify lag observed on a")
	}
	if got := a.metric(t, "herald_cluster_leases_held"); got != 7 {
		t.Errorf("herald_cluster_leases_held = %v, want 7", got)
	}

	// A node that stops heartbeating without leaving (a crash) drops out
	// of the view after NodeTTL.
	if err := a.store.Heartbeat(t.Context(), cluster.Member{ID: "node-ghost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the ghost to join a's view", func() bool { return len(memberIDs(a.c)) == 3 })
	waitUntil(t, "the ghost to age out of a's view", func() bool { return len(memberIDs(a.c)) == 2 })
	if r := a.metric(t, "herald_cluster_rebalances_total"); r < 2 {
		t.Errorf("herald_cluster_rebalances_total = %v after a join and a death, want 2", r)
	}

	// b stops: it leaves at once, and a owns every key.
	a.mu.Lock()
	before := a.changes
	a.mu.Unlock()
	if err := b.c.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := b.c.Stop(t.Context()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	waitUntil(t, "a to see b leave", func() bool { return slices.Equal(memberIDs(a.c), []string{"node-a"}) })
	if c := ownedBy(a); c["node-a"] != 300 {
		t.Fatalf("a alone owns %d of 300 keys", c["node-a"])
	}
	a.mu.Lock()
	if a.changes == before {
		t.Error("no membership change callback when b left")
	}
	a.mu.Unlock()
}

// When the listener's session dies, the cluster reconnects, resyncs every
// topic's head (commits made meanwhile were not notified to anyone), calls
// the membership hooks (subscription changes made meanwhile were not
// either: the dispatcher reads them all), and hears later commits again.
func TestClusterListenerReconnects(t *testing.T) {
	dsn, schema := schemaDSN(t)
	a, b := newNode(t, dsn, "node-a"), newNode(t, dsn, "node-b")
	startListening(t, b, a, "orders", "audit")

	admin, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	// Kill every listener of the schema; b's commits between now and a's
	// reconnect reach nobody, so only a resync can tell a about them.
	a.mu.Lock()
	changes := a.changes
	a.mu.Unlock()
	var killed int
	if err := admin.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE 'LISTEN%'`, schema).Scan(&killed); err != nil || killed != 2 {
		t.Fatalf("terminated %d listeners (%v), want 2", killed, err)
	}
	appendTo(t, b.store, "audit", 4)
	waitUntil(t, "a to learn audit@4", func() bool { return a.head("audit") == 4 })
	waitUntil(t, "a to count the reconnect", func() bool { return a.metric(t, "herald_cluster_listener_reconnects_total") >= 1 })
	if a.metric(t, "herald_cluster_resyncs_total") < 2 {
		t.Error("no resync after the reconnect")
	}
	a.mu.Lock()
	if a.changes == changes {
		t.Error("no membership hook after the reconnect: subscription changes made meanwhile would wait for the periodic sync")
	}
	a.mu.Unlock()
	appendTo(t, b.store, "orders", 2)
	waitUntil(t, "a to hear of orders@3 after reconnecting", func() bool { return a.head("orders") == 3 })
}

func TestClusterStartFailsWithoutDatabase(t *testing.T) {
	dsn, _ := schemaDSN(t)
	st, err := postgres.Open(t.Context(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	c := cluster.New(st, st, cluster.Config{NodeID: "n"}, nil, nil)
	if err := c.Start(t.Context()); err == nil {
		t.Fatal("Start on a closed store succeeded")
	}
	if err := c.Stop(t.Context()); err != nil {
		t.Fatalf("Stop after a failed Start: %v", err)
	}
	if c.Owns("sub_1") {
		t.Error("a node that never joined owns a key")
	}
}

// A subscription created, changed or deleted through one node calls the
// other node's OnSubscriptionChanged hooks with its id (its dispatcher may
// own it), not the node's own, and no membership hook: a change costs the
// other nodes that subscription, not a look at all of them.
func TestClusterSubscriptionChangesWakeOtherNodes(t *testing.T) {
	dsn, _ := schemaDSN(t)
	a, b := newNode(t, dsn, "node-a"), newNode(t, dsn, "node-b")
	startListening(t, a, b, "orders")
	// Hook calls that are not membership changes: the first view, then
	// one per rebalance.
	wakeups := func(n *node) int {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.changes - 1 - int(n.metric(t, "herald_cluster_rebalances_total"))
	}
	now := time.Now().UTC()
	sub := herald.Subscription{
		ID: "sub_1", Topic: "orders", State: herald.StateActive,
		Retry:   herald.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Minute},
		Timeout: 10 * time.Second, MaxInFlight: 1, CreatedAt: now, UpdatedAt: now,
	}
	if err := a.store.CreateSubscription(t.Context(), sub, herald.StartPosition{}); err != nil {
		t.Fatal(err)
	}
	subs := func(n *node) []string {
		n.mu.Lock()
		defer n.mu.Unlock()
		return slices.Clone(n.subs)
	}
	waitUntil(t, "b to hear of the new subscription", func() bool { return slices.Equal(subs(b), []string{"sub_1"}) })
	if err := a.store.DeleteSubscription(t.Context(), "sub_1"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to hear of the deletion", func() bool { return slices.Equal(subs(b), []string{"sub_1", "sub_1"}) })
	if w := wakeups(b); w != 0 {
		t.Errorf("b's membership hooks ran %d times for two named subscription changes", w)
	}
	// Notifications come in commit order: once b hears of this commit of
	// a's, a has heard of (and skipped) its own subscription changes.
	appendTo(t, b.store, "orders", 1)
	waitUntil(t, "a to hear of orders@2", func() bool { return a.head("orders") == 2 })
	if w, s := wakeups(a), subs(a); w != 0 || len(s) != 0 {
		t.Errorf("a was woken by its own subscription changes: %d membership calls, subscriptions %v", w, s)
	}
}

func (n *node) deletedTopics() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.deleted)
}

// A topic deleted through one node calls the other node's OnTopicDeleted
// hooks with its name, not the node's own.
func TestClusterTopicDeletionReachesOtherNodes(t *testing.T) {
	dsn, _ := schemaDSN(t)
	a, b := newNode(t, dsn, "node-a"), newNode(t, dsn, "node-b")
	startListening(t, a, b, "orders", "audit")

	if err := a.store.DeleteTopic(t.Context(), "orders"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to hear of the deletion", func() bool { return len(b.deletedTopics()) > 0 })
	if got := b.deletedTopics(); !slices.Equal(got, []string{"orders"}) {
		t.Errorf("b was told of deleted topics %q, want [orders]", got)
	}
	// Notifications come in commit order: once a hears of this commit of
	// b's, it has heard of (and skipped) its own deletion.
	appendTo(t, b.store, "audit", 1)
	waitUntil(t, "a to hear of audit@1", func() bool { return a.head("audit") == 1 })
	if got := a.deletedTopics(); len(got) != 0 {
		t.Errorf("a was told of its own deletion of %q", got)
	}
}

// memberStore is a membership table of one node, in memory.
type memberStore struct{}

func (memberStore) Heartbeat(context.Context, cluster.Member, time.Time) error { return nil }
func (memberStore) LiveNodes(_ context.Context, now time.Time, _ time.Duration) ([]cluster.Member, error) {
	return []cluster.Member{{ID: "node-b", HeartbeatAt: now}}, nil
}
func (memberStore) Leave(context.Context, string) error { return nil }

// racingBus delivers another node's deletion of "orders" while the first
// resync reads the heads, and then returns the deleted topic's head.
type racingBus struct {
	mu      sync.Mutex
	deliver func(cluster.Commit) error
}

func (b *racingBus) EnableNotify(context.Context, string) error { return nil }

func (b *racingBus) Listen(ctx context.Context, listening func(context.Context) error, deliver func(cluster.Commit) error) error {
	b.mu.Lock()
	b.deliver = deliver
	b.mu.Unlock()
	if err := listening(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func (b *racingBus) TopicHeads(context.Context) ([]cluster.Head, error) {
	b.mu.Lock()
	deliver := b.deliver
	b.deliver = nil // only the first resync races
	b.mu.Unlock()
	if deliver != nil {
		if err := deliver(cluster.Commit{Node: "node-a", DeletedTopics: []string{"orders"}}); err != nil {
			return nil, err
		}
	}
	return []cluster.Head{{Topic: "orders", Seq: 100}, {Topic: "audit", Seq: 5}}, nil
}

// A resync that read the heads before a deletion it heard of meanwhile
// does not announce the deleted topic's head: the callbacks would take a
// topic created again under the name for further along than it is.
func TestClusterResyncSkipsTopicsDeletedMeanwhile(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	c := cluster.New(memberStore{}, &racingBus{}, cluster.Config{NodeID: "node-b", ResyncInterval: time.Hour}, nil, nil)
	c.OnRemoteCommit(func(topic string, seq int64) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, fmt.Sprintf("%s@%d", topic, seq))
	})
	c.OnTopicDeleted(func(topic string) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, "deleted "+topic)
	})
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	waitUntil(t, "the first resync", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"deleted orders", "audit@5"}; !slices.Equal(calls, want) {
		t.Errorf("hook calls %q, want %q", calls, want)
	}
}
