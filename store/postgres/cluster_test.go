package postgres

import (
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/cluster"
)

func TestNodesHeartbeatLiveLeave(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	beat := func(id, addr string, started, at time.Time) {
		t.Helper()
		if err := s.Heartbeat(ctx, cluster.Member{ID: id, Addr: addr, StartedAt: started}, at); err != nil {
			t.Fatalf("Heartbeat %s: %v", id, err)
		}
	}
	live := func(at time.Time, ttl time.Duration) []cluster.Member {
		t.Helper()
		ms, err := s.LiveNodes(ctx, at, ttl)
		if err != nil {
			t.Fatalf("LiveNodes: %v", err)
		}
		return ms
	}
	ids := func(ms []cluster.Member) []string {
		out := []string{}
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}

	beat("node-b", "10.0.0.2:8480", t0, t0.Add(time.Second))
	beat("node-a", "10.0.0.1:8480", t0, t0)
	got := live(t0.Add(2*time.Second), 5*time.Second)
	want := []cluster.Member{
		{ID: "node-a", Addr: "10.0.0.1:8480", StartedAt: t0, HeartbeatAt: t0},
		{ID: "node-b", Addr: "10.0.0.2:8480", StartedAt: t0, HeartbeatAt: t0.Add(time.Second)},
	}
	same := slices.EqualFunc(got, want, func(a, b cluster.Member) bool {
		return a.ID == b.ID && a.Addr == b.Addr && a.StartedAt.Equal(b.StartedAt) && a.HeartbeatAt.Equal(b.HeartbeatAt)
	})
	if !same {
		t.Fatalf("live nodes:\n got %+v\nwant %+v", got, want)
	}
	// A heartbeat ages out after ttl: at t0+5.5s only b (t0+1s) is live.
	if got := ids(live(t0.Add(5500*time.Millisecond), 5*time.Second)); !slices.Equal(got, []string{"node-b"}) {
		t.Fatalf("after node-a's ttl: %v, want [node-b]", got)
	}
	// A later heartbeat revives it, keeping its start time; the address
	// follows the latest heartbeat.
	beat("node-a", "10.0.0.9:8480", t0.Add(time.Hour), t0.Add(6*time.Second))
	got = live(t0.Add(6*time.Second), 10*time.Second)
	if len(got) != 2 || got[0].ID != "node-a" || !got[0].StartedAt.Equal(t0) || got[0].Addr != "10.0.0.9:8480" ||
		!got[0].HeartbeatAt.Equal(t0.Add(6*time.Second)) {
		t.Fatalf("after node-a's second heartbeat: %+v", got)
	}

	if err := s.Leave(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Leave(ctx, "node-a"); err != nil {
		t.Fatalf("leave twice: %v", err)
	}
	if got := ids(live(t0.Add(6*time.Second), 10*time.Second)); !slices.Equal(got, []string{"node-b"}) {
		t.Fatalf("after node-a left: %v, want [node-b]", got)
	}

	// Nodes silent for a day are removed by anyone's heartbeat.
	beat("node-c", "", time.Time{}, t0.Add(3*time.Second))
	beat("node-b", "", t0, t0.Add(25*time.Hour))
	if got := ids(live(t0.Add(25*time.Hour), 1000*time.Hour)); !slices.Equal(got, []string{"node-b"}) {
		t.Fatalf("a day later: %v, want [node-b]", got)
	}

	err := s.Heartbeat(ctx, cluster.Member{ID: ""}, t0)
	wantCode(t, "empty node id", err, herald.CodeInvalid)
	err = s.Heartbeat(ctx, cluster.Member{ID: "n"}, time.Time{})
	wantCode(t, "zero time", err, herald.CodeInvalid)
}

// notes listens on s and collects what it delivers.
type notes struct {
	ch        chan cluster.Commit
	listening chan struct{}
	done      chan error
}

func listenOn(t *testing.T, s *Store) *notes {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &notes{ch: make(chan cluster.Commit, 100), listening: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		n.done <- s.Listen(ctx,
			func(context.Context) error { close(n.listening); return nil },
			func(c cluster.Commit) error { n.ch <- c; return nil })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-n.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Listen ended with %v, want context.Canceled", err)
		}
	})
	select {
	case <-n.listening:
	case err := <-n.done:
		t.Fatalf("Listen: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Listen did not start listening")
	}
	return n
}

// next returns the next commit notification that is not the listener's
// own node's.
func (n *notes) next(t *testing.T) cluster.Commit {
	t.Helper()
	select {
	case c := <-n.ch:
		return c
	case err := <-n.done:
		t.Fatalf("Listen ended: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no commit notification within 20s")
	}
	return cluster.Commit{}
}

func heads(c cluster.Commit) map[string]int64 {
	m := map[string]int64{}
	for _, h := range c.Heads {
		m[h.Topic] = h.Seq
	}
	return m
}

func events(topic string, n int) []*herald.Event {
	now := time.Now().UTC()
	evs := make([]*herald.Event, n)
	for i := range evs {
		evs[i] = &herald.Event{ID: herald.NewID(now), Topic: topic, Time: now, Payload: []byte("x")}
	}
	return evs
}

// Two nodes on one schema: a committed Append reaches the other node's
// listener as one notification per batch with the topics' new heads; an
// Append that stores nothing, or rolls back, sends none.
func TestCommitNotify(t *testing.T) {
	dsn, _ := testDSN(t)
	a, b := openTest(t, dsn), openTest(t, dsn)
	ctx := t.Context()
	for _, s := range []*Store{a, b} {
		if err := s.Listen(ctx, nil, nil); !herald.IsCode(err, herald.CodeConflict) {
			t.Fatalf("Listen before EnableNotify: %v, want CodeConflict", err)
		}
	}
	if err := a.EnableNotify(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	if err := b.EnableNotify(ctx, "node-b"); err != nil {
		t.Fatal(err)
	}
	putTopic(t, a, "orders")
	putTopic(t, a, "audit")
	putTopic(t, a, "broken")
	n := listenOn(t, b)

	before := time.Now()
	batch := append(events("orders", 3), events("audit", 1)...)
	batch = append(batch, &herald.Event{ID: "x", Topic: "missing", Time: time.Now()})
	if _, err := a.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	c := n.next(t)
	if c.Node != "node-a" || c.Resync || !maps.Equal(heads(c), map[string]int64{"orders": 3, "audit": 1}) {
		t.Fatalf("first notification: %+v", c)
	}
	if c.Time.Before(before.Add(-time.Second)) || c.Time.After(time.Now()) {
		t.Errorf("commit time %v is not around now", c.Time)
	}

	// Nothing stored (a duplicate, an unknown topic): no notification.
	dup := events("orders", 1)
	dup[0].IdempotencyKey = "k"
	if _, err := a.Append(ctx, dup); err != nil {
		t.Fatal(err)
	}
	if c := n.next(t); !maps.Equal(heads(c), map[string]int64{"orders": 4}) {
		t.Fatalf("second notification: %+v", c)
	}
	again := events("orders", 1)
	again[0].IdempotencyKey = "k"
	if res, err := a.Append(ctx, append(again, &herald.Event{ID: "y", Topic: "missing", Time: time.Now()})); err != nil || !res[0].Duplicate {
		t.Fatalf("duplicate append: %+v %v", res, err)
	}

	// A rolled-back Append: with COPY, the notification is queued before
	// the rows are written, and the write fails on a row planted at the
	// seq it allocates. PostgreSQL must drop the notification.
	var brokenID int64
	if err := a.pool.QueryRow(ctx, `SELECT id FROM topics WHERE name = 'broken'`).Scan(&brokenID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.pool.Exec(ctx, `INSERT INTO events (topic_id, seq, id, time_ns, event_type, event_key, idem_key, content_type, payload)
		VALUES ($1, 1, 'planted', 1, '', '', '', '', '')`, brokenID); err != nil {
		t.Fatal(err)
	}
	a.copyFrom = 1
	if _, err := a.Append(ctx, events("broken", 2)); err == nil {
		t.Fatal("Append over a planted row succeeded")
	}
	a.copyFrom = defaultCopyFrom

	// B's own commits reach its listener too, tagged as its own; the
	// cluster skips them.
	if _, err := b.Append(ctx, events("audit", 2)); err != nil {
		t.Fatal(err)
	}
	// Notifications come in commit order: had the duplicate or the
	// rolled-back batch sent one, it would come before this.
	if c := n.next(t); c.Node != "node-b" || !maps.Equal(heads(c), map[string]int64{"audit": 3}) {
		t.Fatalf("notification after the empty and rolled-back appends: %+v", c)
	}
}

// A batch whose topics do not fit in a payload sends a resync instead.
func TestCommitNotifyOverflowResyncs(t *testing.T) {
	a, b := notifyingPair(t)
	ctx := t.Context()
	n := listenOn(t, b)
	var batch []*herald.Event
	for i := range 50 { // 50 names of 200 bytes: over 8000
		name := strings.Repeat("t", herald.MaxTopicNameLen-3) + string(rune('a'+i/26)) + string(rune('a'+i%26)) + "x"
		putTopic(t, a, name)
		batch = append(batch, events(name, 1)...)
	}
	if _, err := a.Append(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if c := n.next(t); !c.Resync || c.Node != "node-a" || len(c.Heads) != 0 {
		t.Fatalf("oversized batch: %+v, want a resync from node-a", c)
	}
	hs, err := b.TopicHeads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 50 {
		t.Fatalf("TopicHeads: %d topics, want 50", len(hs))
	}
	for _, h := range hs {
		if h.Seq != 1 {
			t.Fatalf("TopicHeads: %s at %d, want 1", h.Topic, h.Seq)
		}
	}
}

// The notification is sent after the append's COMMIT: when it fails, the
// append still succeeds (its events are stored), and the next one is
// announced as usual.
func TestCommitNotifyFailureKeepsAppend(t *testing.T) {
	a, b := notifyingPair(t)
	ctx := t.Context()
	putTopic(t, a, "orders")
	n := listenOn(t, b)
	good := a.notify.Load()
	a.notify.Store(&notifyTarget{node: good.node, channel: ""}) // pg_notify refuses an empty channel
	res, err := a.Append(ctx, events("orders", 2))
	if err != nil || res[1].Seq != 2 {
		t.Fatalf("append whose notification fails: %+v %v", res, err)
	}
	if got, err := a.ReadEvents(ctx, "orders", 0, 10); err != nil || len(got) != 2 {
		t.Fatalf("stored events: %d %v, want 2", len(got), err)
	}
	a.notify.Store(good)
	if _, err := a.Append(ctx, events("orders", 1)); err != nil {
		t.Fatal(err)
	}
	if c := n.next(t); !maps.Equal(heads(c), map[string]int64{"orders": 3}) {
		t.Fatalf("notification after the failed one: %+v", c)
	}
}

// Creating, changing and deleting a subscription tells the other nodes,
// once committed; a refused change tells no one.
func TestSubscriptionChangesNotify(t *testing.T) {
	a, b := notifyingPair(t)
	ctx := t.Context()
	putTopic(t, a, "orders")
	n := listenOn(t, b)
	subChange := func(what string) {
		t.Helper()
		if c := n.next(t); !c.Subscriptions || c.Node != "node-a" || c.Resync || len(c.Heads) != 0 ||
			!slices.Equal(c.SubscriptionIDs, []string{"sub_1"}) {
			t.Fatalf("after %s: %+v, want a change of sub_1 from node-a", what, c)
		}
	}

	now := time.Now().UTC()
	createSub(t, a, testSub("sub_1", "orders", now), herald.StartPosition{})
	subChange("create")
	sub, err := a.GetSubscription(ctx, "sub_1")
	if err != nil {
		t.Fatal(err)
	}
	sub.Description, sub.UpdatedAt = "moved", now.Add(time.Second)
	if err := a.UpdateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	subChange("update")
	if err := a.UpdateSubscription(ctx, sub); !herald.IsCode(err, herald.CodeConflict) {
		t.Fatalf("update of a stale copy: %v, want CodeConflict", err)
	}
	if err := a.CreateSubscription(ctx, testSub("sub_1", "orders", now), herald.StartPosition{}); !herald.IsCode(err, herald.CodeConflict) {
		t.Fatalf("second create: %v, want CodeConflict", err)
	}
	if err := a.DeleteSubscription(ctx, "sub_1"); err != nil {
		t.Fatal(err)
	}
	subChange("delete")
	if err := a.DeleteSubscription(ctx, "sub_1"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("second delete: %v, want CodeNotFound", err)
	}
	// Notifications come in commit order: had a refused change sent one,
	// it would come before this.
	if _, err := a.Append(ctx, events("orders", 1)); err != nil {
		t.Fatal(err)
	}
	if c := n.next(t); c.Subscriptions || !maps.Equal(heads(c), map[string]int64{"orders": 1}) {
		t.Fatalf("notification after the refused changes: %+v", c)
	}
}

// Deleting a topic tells the other nodes which topic, once committed; a
// refused deletion tells no one.
func TestTopicDeletionNotifies(t *testing.T) {
	a, b := notifyingPair(t)
	ctx := t.Context()
	putTopic(t, a, "orders")
	putTopic(t, a, "audit")
	n := listenOn(t, b)
	if _, err := a.Append(ctx, events("orders", 2)); err != nil {
		t.Fatal(err)
	}
	if c := n.next(t); !maps.Equal(heads(c), map[string]int64{"orders": 2}) || len(c.DeletedTopics) != 0 {
		t.Fatalf("append notification: %+v", c)
	}

	if err := a.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	c := n.next(t)
	if c.Node != "node-a" || !slices.Equal(c.DeletedTopics, []string{"orders"}) || c.Resync || c.Subscriptions || len(c.Heads) != 0 {
		t.Fatalf("after the deletion: %+v, want orders deleted by node-a", c)
	}
	if err := a.DeleteTopic(ctx, "orders"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("second delete: %v, want CodeNotFound", err)
	}
	// Notifications come in commit order: had the refused deletion sent
	// one, it would come before this.
	if _, err := a.Append(ctx, events("audit", 1)); err != nil {
		t.Fatal(err)
	}
	if c := n.next(t); len(c.DeletedTopics) != 0 || !maps.Equal(heads(c), map[string]int64{"audit": 1}) {
		t.Fatalf("notification after the refused deletion: %+v", c)
	}
}

func TestEncodeCommitLimit(t *testing.T) {
	at := time.Unix(0, 1712345678901234567)
	small := map[string]int64{"orders": 42, "audit": 7}
	p := encodeCommit("node-a", at, small)
	c, err := decodeCommit(p)
	if err != nil || c.Node != "node-a" || !c.Time.Equal(at) || c.Resync || !maps.Equal(heads(c), small) {
		t.Fatalf("round trip of %s: %+v %v", p, c, err)
	}
	// Grow the batch until it no longer fits: the payload stays under
	// PostgreSQL's limit and turns into a resync exactly then.
	big := map[string]int64{}
	for i := 0; ; i++ {
		big[strings.Repeat("x", 60)+string(rune('A'+i%26))+strings.Repeat("y", i/26)] = 1 << 40
		p := encodeCommit("node-a", at, big)
		if len(p) > maxNotifyPayload {
			t.Fatalf("payload of %d bytes", len(p))
		}
		c, err := decodeCommit(p)
		if err != nil {
			t.Fatal(err)
		}
		if c.Resync {
			if len(big) < 50 {
				t.Fatalf("resync already at %d topics", len(big))
			}
			break
		}
		if len(c.Heads) != len(big) {
			t.Fatalf("%d heads decoded, want %d", len(c.Heads), len(big))
		}
	}
	if _, err := decodeCommit("not json"); err == nil {
		t.Error("decodeCommit accepted garbage")
	}
	if ch := notifyChannel(strings.Repeat("s", 63)); len(ch) > 63 || !strings.HasPrefix(ch, "herald_commit:") {
		t.Errorf("channel for a long schema: %q", ch)
	}
}

// A listener whose connection is terminated ends with CodeUnavailable, so
// its owner reconnects.
func TestListenEndsWhenConnectionDies(t *testing.T) {
	dsn, schema := testDSN(t)
	s := openTest(t, dsn)
	ctx := t.Context()
	if err := s.EnableNotify(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(ctx, func(context.Context) error { close(listening); return nil }, func(cluster.Commit) error { return nil })
	}()
	<-listening
	var n int
	waitFor(t, "the listener's session to be terminated", func() (bool, error) {
		err := s.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = $1 AND query LIKE 'LISTEN%'`, schema).Scan(&n)
		return n > 0, err
	})
	select {
	case err := <-done:
		wantCode(t, "Listen after its session was terminated", err, herald.CodeUnavailable)
	case <-time.After(30 * time.Second):
		t.Fatal("Listen did not end after its session was terminated")
	}
}

// The fencing scenario across two nodes (two pools): node A's
// lease expires and node B takes it; A's cursor write under its old epoch
// is refused and changes nothing, and A cannot renew.
func TestFencingAcrossNodes(t *testing.T) {
	dsn, _ := testDSN(t)
	a, b := openTest(t, dsn), openTest(t, dsn)
	ctx := t.Context()
	now := time.Now().UTC()
	putTopic(t, a, "orders")
	createSub(t, a, testSub("sub_1", "orders", now), herald.StartPosition{})
	cursorAt := func(seq int64) herald.Settlement {
		return herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: seq}}}
	}

	e1, err := a.AcquireLease(ctx, "sub_1", "node-a", now, 5*time.Second)
	if err != nil || e1 != 1 {
		t.Fatalf("A acquires: %d %v, want epoch 1", e1, err)
	}
	settleOK(t, a, herald.SettleItem{SubscriptionID: "sub_1", Epoch: e1, Settlement: cursorAt(5)})

	// A stalls past its lease; B takes the subscription.
	e2, err := b.AcquireLease(ctx, "sub_1", "node-b", now.Add(6*time.Second), 5*time.Second)
	if err != nil || e2 != 2 {
		t.Fatalf("B acquires the expired lease: %d %v, want epoch 2", e2, err)
	}
	errs := settle(t, a, herald.SettleItem{SubscriptionID: "sub_1", Epoch: e1, Settlement: cursorAt(9)})
	wantCode(t, "A's stale cursor write", errs[0], herald.CodeConflict)
	if got := cursorsOf(t, b, "sub_1")["orders"]; got != 5 {
		t.Fatalf("cursor at %d after the fenced write, want 5", got)
	}
	_, err = a.AcquireLease(ctx, "sub_1", "node-a", now.Add(7*time.Second), 5*time.Second)
	wantCode(t, "A renews after B took over", err, herald.CodeConflict)
	settleOK(t, b, herald.SettleItem{SubscriptionID: "sub_1", Epoch: e2, Settlement: cursorAt(7)})
	if got := cursorsOf(t, a, "sub_1")["orders"]; got != 7 {
		t.Fatalf("cursor at %d after B's write, want 7", got)
	}
}

// Ping, behind /readyz, fails once the database cannot be reached and
// succeeds again when it can.
func TestPingFollowsReachability(t *testing.T) {
	dsn, _ := testDSN(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Skip("HERALD_TEST_POSTGRES is not a URL; this test needs one to route it through a proxy")
	}
	p := newProxy(t, u.Host)
	u.Host = p.addr
	s := openTest(t, u.String())
	ctx := t.Context()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping through the proxy: %v", err)
	}
	p.setUp(false)
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second) // as /readyz does
	err = s.Ping(pctx)
	cancel()
	if err == nil {
		t.Fatal("Ping succeeded with the database unreachable")
	}
	t.Logf("Ping with the database unreachable: %v (code %s)", err, herald.ErrorCode(err))
	p.setUp(true)
	waitFor(t, "Ping to succeed again", func() (bool, error) { return s.Ping(ctx) == nil, nil })
}

// proxy forwards TCP connections to a target while up; going down closes
// every connection and refuses new ones.
type proxy struct {
	addr   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	up    bool
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), target: target, ln: ln, up: true}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); p.setUp(false); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if !p.up {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.conns = append(p.conns, c, d)
			p.mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(d, c); _ = d.Close() })
			wg.Go(func() { _, _ = io.Copy(c, d); _ = c.Close() })
		}
	})
	return p
}

func (p *proxy) setUp(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
	if !up {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}

// notifyingPair opens two stores on one test database, as nodes "node-a"
// and "node-b" with commit notifications enabled.
func notifyingPair(t *testing.T) (a, b *Store) {
	t.Helper()
	dsn, _ := testDSN(t)
	a, b = openTest(t, dsn), openTest(t, dsn)
	for i, s := range []*Store{a, b} {
		if err := s.EnableNotify(t.Context(), []string{"node-a", "node-b"}[i]); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}
