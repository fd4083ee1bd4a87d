package engine_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// batchChannel is an in-process channel whose sinks take batches: it
// records every call, can fail chosen events, and can hold calls until
// released, so tests see what the engine hands a Batcher.
type batchChannel struct {
	limits channel.BatchLimits

	mu        sync.Mutex
	calls     [][]channel.Delivery
	delivered map[string]int     // event id -> times delivered
	order     map[string][]int64 // key -> seqs delivered, in the order delivered
	fail      map[int64]int      // seq -> how many more attempts fail
	inFlight  int                // calls in flight now
	maxFlight int                // the most calls in flight at once
	hold      chan struct{}      // when set, a call waits for it to close
}

func newBatchChannel(limits channel.BatchLimits) *batchChannel {
	return &batchChannel{limits: limits, delivered: map[string]int{}, order: map[string][]int64{}, fail: map[int64]int{}}
}

func (c *batchChannel) Name() string { return "batchtest" }
func (c *batchChannel) Validate(_ context.Context, p channel.ValidateParams) (json.RawMessage, error) {
	return p.Config, nil
}
func (c *batchChannel) Public(config json.RawMessage) json.RawMessage { return config }
func (c *batchChannel) Destination(json.RawMessage) string            { return "" }
func (c *batchChannel) Open(context.Context, *herald.Subscription) (channel.Sink, error) {
	return batchSink{c}, nil
}

type batchSink struct{ c *batchChannel }

func (s batchSink) Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	return s.DeliverBatch(ctx, []channel.Delivery{{Event: ev, Attempt: attempt}})[0]
}
func (s batchSink) Close(context.Context) error      { return nil }
func (s batchSink) BatchLimits() channel.BatchLimits { return s.c.limits }
func (s batchSink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	c := s.c
	c.mu.Lock()
	c.inFlight++
	c.maxFlight = max(c.maxFlight, c.inFlight)
	c.calls = append(c.calls, slices.Clone(batch))
	hold := c.hold
	c.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight--
	out := make([]herald.DeliveryResult, len(batch))
	for i, d := range batch {
		if c.fail[d.Event.Seq] > 0 {
			c.fail[d.Event.Seq]--
			out[i] = herald.DeliveryResult{Outcome: herald.Failed, Err: "refused by the test"}
			continue
		}
		c.delivered[d.Event.ID]++
		c.order[d.Event.Key] = append(c.order[d.Event.Key], d.Event.Seq)
		out[i] = herald.DeliveryResult{Outcome: herald.Delivered}
	}
	return out
}

func (c *batchChannel) snapshot() (calls [][]channel.Delivery, delivered map[string]int, maxFlight int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls), maxClone(c.delivered), c.maxFlight
}

func maxClone(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// publishBatch commits n events of the topic in one transaction.
func (e *env) publishBatch(topic string, n int, key func(i int) string) {
	e.t.Helper()
	now := time.Now().UTC()
	evs := make([]*herald.Event, n)
	for i := range evs {
		evs[i] = &herald.Event{ID: herald.NewID(now), Topic: topic, Payload: []byte(`{}`), ContentType: "application/json", Time: now}
		if key != nil {
			evs[i].Key = key(i)
		}
	}
	if _, err := e.committer.Append(context.Background(), evs); err != nil {
		e.t.Fatal(err)
	}
}

// A Batcher gets the events in calls of at most MaxEvents, every event
// once, and the cursor moves past all of them.
func TestBatcherGetsFullBatches(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 4})
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	e.topic("orders")
	s := e.subscribe(herald.Subscription{Topic: "orders", Channel: "batchtest", MaxInFlight: 2})
	e.publishBatch("orders", 10, nil)
	waitFor(t, "ten events delivered", 10*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == 10 })
	calls, delivered, _ := ch.snapshot()
	total, full := 0, 0
	for _, c := range calls {
		if len(c) > 4 {
			t.Errorf("a call of %d events, over MaxEvents 4", len(c))
		}
		if len(c) == 4 {
			full++
		}
		total += len(c)
	}
	if total != 10 || full < 2 {
		t.Errorf("calls %v: %d events in all (want 10), %d full (want at least 2)", callSizes(calls), total, full)
	}
	for id, n := range delivered {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	waitFor(t, "the cursor past the ten", 10*time.Second, func() bool {
		cs, err := e.store.Cursors(context.Background(), s.ID)
		return err == nil && len(cs) == 1 && cs[0].Seq == 10
	})
}

// Each event of a batch has its own outcome: those that failed are
// retried on their own schedule, those delivered are not sent again.
func TestBatcherPartialFailure(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 8})
	ch.fail[2], ch.fail[5] = 1, 2
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	e.topic("orders")
	s := e.subscribe(herald.Subscription{Topic: "orders", Channel: "batchtest"})
	e.publishBatch("orders", 6, nil)
	waitFor(t, "all six delivered", 10*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == 6 })
	_, delivered, _ := ch.snapshot()
	for id, n := range delivered {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	waitFor(t, "the failures in the attempt log", 10*time.Second, func() bool {
		as, err := e.store.ListAttempts(context.Background(), s.ID, herald.AttemptFilter{Outcome: herald.OutcomeFailure, Limit: 10})
		return err == nil && len(as) == 3
	})
	waitFor(t, "the retry set empty", 10*time.Second, func() bool {
		n, err := e.store.CountRetries(context.Background(), s.ID)
		return err == nil && n == 0
	})
}

// max_in_flight bounds the calls out at once; events gathered meanwhile
// wait and go out once a call returns.
func TestBatcherCallsInFlightBounded(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 2})
	ch.hold = make(chan struct{})
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	e.topic("orders")
	e.subscribe(herald.Subscription{Topic: "orders", Channel: "batchtest", MaxInFlight: 3})
	e.publishBatch("orders", 20, nil)
	waitFor(t, "three calls out", 10*time.Second, func() bool { c, _, _ := ch.snapshot(); return len(c) == 3 })
	if c, _, m := ch.snapshot(); len(c) != 3 || m != 3 {
		t.Fatalf("with calls held: %d calls made, %d at once; want 3 and 3", len(c), m)
	}
	close(ch.hold)
	waitFor(t, "all twenty delivered", 10*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == 20 })
	if _, _, m := ch.snapshot(); m > 3 {
		t.Errorf("%d calls in flight at once, over max_in_flight 3", m)
	}
}

// A partial batch waits up to its Linger for more events, then goes out.
func TestBatcherLinger(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 100, Linger: 300 * time.Millisecond})
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	e.topic("orders")
	e.subscribe(herald.Subscription{Topic: "orders", Channel: "batchtest"})
	start := time.Now()
	e.publishBatch("orders", 3, nil)
	e.publishBatch("orders", 2, nil)
	waitFor(t, "five delivered", 10*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == 5 })
	calls, _, _ := ch.snapshot()
	if len(calls) != 1 {
		t.Errorf("calls %v; want the two commits in one batch held by the linger", callSizes(calls))
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("the batch went out after %v, before its linger of 300ms", waited)
	}
}

// In an ordered subscription a batch holds at most one event of a key,
// and a key's events go out in seq order.
func TestBatcherKeepsPerKeyOrder(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 16})
	ch.fail[3] = 1 // the first event of key "b" fails once: its successors wait
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	e.topic("ledger")
	e.subscribe(herald.Subscription{Topic: "ledger", Channel: "batchtest", Ordered: true})
	keys := []string{"a", "a", "b", "b", "a", "b", "c", "c"}
	e.publishBatch("ledger", len(keys), func(i int) string { return keys[i] })
	waitFor(t, "all delivered", 10*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == len(keys) })
	calls, _, _ := ch.snapshot()
	last := map[string]int64{}
	for _, c := range calls {
		inBatch := map[string]bool{}
		for _, d := range c {
			if inBatch[d.Event.Key] {
				t.Errorf("a batch %v holds two events of key %q", seqs(c), d.Event.Key)
			}
			inBatch[d.Event.Key] = true
		}
	}
	// Successful deliveries per key, in the order made.
	for _, c := range calls {
		for _, d := range c {
			if d.Event.Seq < last[d.Event.Key] {
				t.Errorf("key %q: seq %d sent after %d", d.Event.Key, d.Event.Seq, last[d.Event.Key])
			}
			last[d.Event.Key] = d.Event.Seq
		}
	}
}

func callSizes(calls [][]channel.Delivery) []int {
	out := make([]int, len(calls))
	for i, c := range calls {
		out[i] = len(c)
	}
	return out
}

func seqs(c []channel.Delivery) []int64 {
	out := make([]int64, len(c))
	for i, d := range c {
		out[i] = d.Event.Seq
	}
	return out
}

var _ channel.Batcher = batchSink{}

// progressSink is a batchSink that is a channel.ProgressBatcher: it
// records the progress handed with each call.
type progressSink struct {
	batchSink
	mu    *sync.Mutex
	calls *[]progressCall
}

type progressCall struct {
	seqs []int64
	p    channel.Progress
}

func (s progressSink) DeliverBatchAt(ctx context.Context, batch []channel.Delivery, p channel.Progress) []herald.DeliveryResult {
	call := progressCall{p: p}
	for _, d := range batch {
		call.seqs = append(call.seqs, d.Event.Seq)
	}
	s.mu.Lock()
	*s.calls = append(*s.calls, call)
	s.mu.Unlock()
	return s.DeliverBatch(ctx, batch)
}

type progressChannel struct {
	*batchChannel
	mu    sync.Mutex
	calls []progressCall
}

func (c *progressChannel) Name() string { return "progresstest" }
func (c *progressChannel) Open(context.Context, *herald.Subscription) (channel.Sink, error) {
	return progressSink{batchSink: batchSink{c.batchChannel}, mu: &c.mu, calls: &c.calls}, nil
}

// A ProgressBatcher is told, with each batch, the lease epoch and where
// the cursor stands once the batch is delivered: never past an event not
// delivered by then (one held behind its key in an ordered subscription),
// and at the last event once the last batch is.
func TestProgressBatcherCursors(t *testing.T) {
	t.Parallel()
	ch := &progressChannel{batchChannel: newBatchChannel(channel.BatchLimits{MaxEvents: 4})}
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	e.topic("orders")
	s := e.subscribe(herald.Subscription{Topic: "orders", Channel: "progresstest", MaxInFlight: 1, Ordered: true})
	keys := "aabacbbdae"
	e.publishBatch("orders", len(keys), func(i int) string { return keys[i : i+1] })
	waitFor(t, "all delivered", 10*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == len(keys) })
	ch.mu.Lock()
	calls := slices.Clone(ch.calls)
	ch.mu.Unlock()
	delivered := map[int64]bool{}
	var last int64
	for _, c := range calls {
		for _, seq := range c.seqs {
			delivered[seq] = true
		}
		if c.p.SubscriptionID != s.ID || c.p.Epoch < 1 {
			t.Errorf("progress %+v: want subscription %s and its epoch", c.p, s.ID)
		}
		for _, cur := range c.p.Cursors {
			for seq := int64(1); seq <= cur.Seq; seq++ {
				if !delivered[seq] {
					t.Errorf("batch %v: cursor %d passes event %d, not delivered yet", c.seqs, cur.Seq, seq)
				}
			}
			last = max(last, cur.Seq)
		}
	}
	if last != int64(len(keys)) {
		t.Errorf("the cursors handed reached %d, want %d (calls %+v)", last, len(keys), calls)
	}
}
