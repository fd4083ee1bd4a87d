package stream_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/stream"
)

// readCounter counts the hub's store reads per topic ("" for listings).
type readCounter struct {
	stream.Store
	mu    sync.Mutex
	reads map[string]int
}

func (r *readCounter) count(topic string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reads == nil {
		r.reads = make(map[string]int)
	}
	r.reads[topic]++
}

func (r *readCounter) of(topic string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reads[topic]
}

func (r *readCounter) GetTopic(ctx context.Context, name string) (herald.Topic, error) {
	r.count(name)
	return r.Store.GetTopic(ctx, name)
}

func (r *readCounter) ListTopics(ctx context.Context, after string, limit int) ([]herald.Topic, error) {
	r.count("")
	return r.Store.ListTopics(ctx, after, limit)
}

func (r *readCounter) ReadEvents(ctx context.Context, topic string, afterSeq int64, limit int) ([]herald.Event, error) {
	r.count(topic)
	return r.Store.ReadEvents(ctx, topic, afterSeq, limit)
}

func (r *readCounter) SeqAtTime(ctx context.Context, topic string, at time.Time) (int64, error) {
	r.count(topic)
	return r.Store.SeqAtTime(ctx, topic, at)
}

// elsewhere returns a function that commits count events to a topic as
// another node would (its own store handle and committer, no hub) and
// returns the new head.
func elsewhere(t *testing.T, n *node) func(topic string, count int) int64 {
	t.Helper()
	st, err := sqlite.Open(t.Context(), n.path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	c := engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return func(topic string, count int) (head int64) {
		t.Helper()
		for range count {
			now := time.Now().UTC()
			res, err := c.Append(t.Context(), []*herald.Event{{ID: herald.NewID(now), Topic: topic,
				ContentType: "application/json", Payload: []byte(`{}`), Time: now}})
			if err != nil || res[0].Err != nil {
				t.Fatal(err, res)
			}
			head = res[0].Seq
		}
		return head
	}
}

// Another node's commits to a topic no stream on this node covers cost no
// store read. A stream that starts later still gets every event of the
// topic once and in order: a replay from seq 0 gets the skipped events
// from the store, then the rest live; a live subscription (to the topic,
// or a pattern) gets exactly the events committed after it started.
func TestNotifySkipsTopicsNobodyStreams(t *testing.T) {
	reads := &readCounter{}
	n := startNode(t, nodeOptions{wrapStore: func(s stream.Store) stream.Store {
		reads.Store = s
		return reads
	}})
	n.createTopic("orders.eu", 0)
	n.createTopic("orders.sync", 0)
	commitElsewhere := elsewhere(t, n)

	// A barrier: once the second of two notified events of another topic
	// has arrived, the hub's loop has finished every notification given
	// before (the first may share a round with them, the second cannot).
	syncWS := n.dialWS("reader", "")
	syncWS.subscribe(map[string]any{"id": "sync", "topic": "orders.sync"})
	barrier := func() {
		t.Helper()
		for range 2 {
			head := commitElsewhere("orders.sync", 1)
			n.hub.Notify("orders.sync", head)
			if f := syncWS.events(1)[0]; f.Seq != head {
				t.Fatalf("barrier event %d, want %d", f.Seq, head)
			}
		}
	}

	for range 3 {
		n.hub.Notify("orders.eu", commitElsewhere("orders.eu", 2))
	}
	barrier()
	if r := reads.of("orders.eu"); r != 0 {
		t.Fatalf("the hub read orders.eu %d times with no stream of it", r)
	}
	if r := reads.of(""); r != 0 {
		t.Fatalf("the hub listed topics %d times", r)
	}

	replay := n.dialWS("reader", "")
	replay.subscribe(map[string]any{"id": "r", "topic": "orders.eu", "since": 0})
	live := n.dialWS("reader", "")
	live.subscribe(map[string]any{"id": "l", "topic": "orders.eu"})
	pattern := n.dialWS("admin", "")
	pattern.subscribe(map[string]any{"id": "p", "topic": "*.eu"})

	// Notified commits elsewhere, a local commit, then one elsewhere not
	// yet notified followed by a local one (the hub reads the gap first),
	// and its late notification.
	n.hub.Notify("orders.eu", commitElsewhere("orders.eu", 2)) // 7, 8
	n.publishN("orders.eu", 9, 1)                              // 9
	late := commitElsewhere("orders.eu", 1)                    // 10
	n.publishN("orders.eu", 11, 1)                             // 11
	n.hub.Notify("orders.eu", late)

	if got := fmt.Sprint(seqsOf(replay.events(11))); got != fmt.Sprint(span(1, 11)) {
		t.Errorf("replaying subscription got %s, want 1..11", got)
	}
	for name, c := range map[string]*wsClient{"live": live, "pattern": pattern} {
		if got := fmt.Sprint(seqsOf(c.events(5))); got != fmt.Sprint(span(7, 11)) {
			t.Errorf("%s subscription got %s, want 7..11", name, got)
		}
	}
	// Nothing twice: the next event each gets is the next one committed.
	n.publishN("orders.eu", 12, 1)
	for name, c := range map[string]*wsClient{"replaying": replay, "live": live, "pattern": pattern} {
		if f := c.events(1)[0]; f.Seq != 12 {
			t.Errorf("%s subscription: next event %d, want 12", name, f.Seq)
		}
	}
}
