package engine_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
)

// readGate is the dispatcher's store with its event reads watched: it
// records the seq after which each ReadEvents began (and, in done, those
// that returned), and can hold the reads past a seq until their context
// ends, as a slow disk would.
type readGate struct {
	engine.DispatchStore
	mu        sync.Mutex
	began     []int64
	done      []int64
	holdAbove int64 // reads with afterSeq at or above it wait for ctx (0: none)
	failing   bool  // reads answer an error, as a store that is down does
}

func (g *readGate) ReadEvents(ctx context.Context, topic string, afterSeq int64, limit int) ([]herald.Event, error) {
	g.mu.Lock()
	g.began = append(g.began, afterSeq)
	hold := g.holdAbove > 0 && afterSeq >= g.holdAbove
	failing := g.failing
	g.mu.Unlock()
	if failing {
		return nil, errors.New("the store is down")
	}
	if hold {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	evs, err := g.DispatchStore.ReadEvents(ctx, topic, afterSeq, limit)
	g.mu.Lock()
	g.done = append(g.done, afterSeq)
	g.mu.Unlock()
	return evs, err
}

// read reports whether a read of the seqs after afterSeq began, and
// whether one returned.
func (g *readGate) read(afterSeq int64) (began, done bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.began, afterSeq), slices.Contains(g.done, afterSeq)
}

// appendStored writes n events to the topic's store only, past the
// committer and so past the tail cache, as events of a backlog older than
// the cache are: the worker has to read them from the store.
func (e *env) appendStored(topic string, n int, key func(i int) string) {
	e.t.Helper()
	now := time.Now().UTC()
	evs := make([]*herald.Event, n)
	for i := range evs {
		evs[i] = &herald.Event{ID: herald.NewID(now), Topic: topic, Payload: []byte(`{}`), ContentType: "application/json", Time: now}
		if key != nil {
			evs[i].Key = key(i)
		}
	}
	if _, err := e.store.Append(context.Background(), evs); err != nil {
		e.t.Fatal(err)
	}
}

// deliveredOnce checks that each of the n events was delivered, once.
func deliveredOnce(t *testing.T, ch *batchChannel, n int) {
	t.Helper()
	_, delivered, _ := ch.snapshot()
	if len(delivered) != n {
		t.Errorf("%d distinct events delivered; want %d", len(delivered), n)
	}
	for id, k := range delivered {
		if k != 1 {
			t.Errorf("event %s delivered %d times; want once", id, k)
		}
	}
}

// A worker draining a backlog from the store reads the next chunk while
// the batch before it is out at the channel, instead of after it returns;
// the events still go out in seq order, each once, across the chunks. (The
// held calls have a minute before they time out, longer than any wait
// here.)
func TestWorkerReadsAheadWhileABatchIsOut(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 100})
	ch.hold = make(chan struct{})
	release := sync.OnceFunc(func() { close(ch.hold) })
	gate := &readGate{}
	e := startEnvWith(t, dbPath(t), func(st engine.DispatchStore) engine.DispatchStore { gate.DispatchStore = st; return gate },
		[]channel.Channel{ch})
	t.Cleanup(release) // before the env stops
	const n = 1000
	e.topic("backlog")
	e.appendStored("backlog", n, nil)
	s := e.subscribe(herald.Subscription{Topic: "backlog", Channel: "batchtest", MaxInFlight: 1, Timeout: time.Minute})

	// The first read takes 256 events; the first batch of 100 goes out
	// and is held there. The worker reads the events after those 256
	// meanwhile.
	waitFor(t, "the first batch out", 10*time.Second, func() bool { c, _, _ := ch.snapshot(); return len(c) == 1 })
	waitFor(t, "the next chunk read while the first batch is out", 40*time.Second, func() bool {
		_, done := gate.read(256)
		return done
	})
	if c, d, _ := ch.snapshot(); len(c) != 1 || len(d) != 0 {
		t.Fatalf("%d calls, %d delivered while the first was held; want 1 and none", len(c), len(d))
	}
	release()
	waitFor(t, "every event delivered", 30*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == n })
	deliveredOnce(t, ch, n)
	calls, _, _ := ch.snapshot()
	var got []int64
	for _, c := range calls {
		got = append(got, seqs(c)...)
	}
	for i, seq := range got {
		if seq != int64(i+1) {
			t.Fatalf("the %dth event sent was seq %d; want the backlog in seq order, one call at a time", i+1, seq)
		}
	}
	waitFor(t, "the cursor at the last event", 10*time.Second, func() bool {
		cs, err := e.store.Cursors(context.Background(), s.ID)
		return err == nil && len(cs) == 1 && cs[0].Seq == n
	})
}

// An ordered subscription draining a backlog larger than many reads keeps
// each key's order, with failures retried in between: what a key's
// consumer gets is in seq order, and nothing is lost.
func TestReadAheadKeepsPerKeyOrder(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 50})
	for seq := int64(7); seq <= 3000; seq += 97 {
		ch.fail[seq] = 1 // fails once: its key's successors wait for it
	}
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	const n = 3000
	keys := []string{"a", "b", "c", "d", "e", "f", "g"}
	e.topic("ledger")
	e.appendStored("ledger", n, func(i int) string { return keys[i%len(keys)] })
	e.subscribe(herald.Subscription{Topic: "ledger", Channel: "batchtest", MaxInFlight: 4, Ordered: true,
		Retry: herald.RetryPolicy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	waitFor(t, "every event delivered", 3*time.Minute, func() bool { _, d, _ := ch.snapshot(); return len(d) == n })
	deliveredOnce(t, ch, n)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for key, got := range ch.order {
		if !slices.IsSorted(got) {
			t.Errorf("key %q delivered out of seq order: %v", key, got)
		}
	}
	if len(ch.order) != len(keys) {
		t.Errorf("deliveries of %d keys recorded; want %d", len(ch.order), len(keys))
	}
}

// A subscription paused, or a node whose lease may have lapsed, while a
// chunk read ahead is in hand drops that chunk unsent: only the batch out
// at the time completes, and once dispatched again every event arrives,
// once.
func TestReadAheadChunkDroppedOnPauseAndLeaseLoss(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"pause", "lease"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			clk := &clock{now: time.Now()}
			leases := &stalledLeases{}
			t.Cleanup(leases.resume)
			const ttl = 2 * time.Second
			gate := &readGate{DispatchStore: leases}
			ch := newBatchChannel(channel.BatchLimits{MaxEvents: 100})
			ch.hold = make(chan struct{})
			release := sync.OnceFunc(func() { close(ch.hold) })
			e := startEnvWith(t, filepath.Join(t.TempDir(), "h.db"), func(st engine.DispatchStore) engine.DispatchStore {
				leases.DispatchStore = st
				return gate
			}, []channel.Channel{ch}, func(c *engine.DispatcherConfig) {
				if how == "lease" {
					c.Now, c.LeaseTTL = clk.Now, ttl
				}
			})
			t.Cleanup(release)
			const n = 1000
			e.topic("held")
			e.appendStored("held", n, nil)
			s := e.subscribe(herald.Subscription{Topic: "held", Channel: "batchtest", MaxInFlight: 1, Timeout: time.Minute})
			waitFor(t, "the next chunk read while the first batch is out", 40*time.Second, func() bool {
				_, done := gate.read(256)
				return done
			})

			if how == "pause" {
				e.change(s.ID, func(s *herald.Subscription) { s.State = herald.StatePaused })
			} else {
				leases.stall()
				clk.advance(ttl)
			}
			release() // the batch out is answered
			waitFor(t, "the worker to stop", 10*time.Second, func() bool { return e.dispatcher.Dispatching() == 0 })
			// By its own clock the node stops sending at once; a pause
			// reaches the worker a moment later, and what it sent
			// meanwhile was delivered and settled, as any delivery is.
			if c, d, _ := ch.snapshot(); how == "lease" && (len(d) != 100 || len(c) != 1) {
				t.Fatalf("after the lease lapsed: %d calls, %d events delivered; want only the batch out then (1, 100)", len(c), len(d))
			}

			if how == "pause" {
				e.change(s.ID, func(s *herald.Subscription) { s.State = herald.StateActive })
			} else {
				leases.resume()
			}
			waitFor(t, "every event delivered", 30*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == n })
			deliveredOnce(t, ch, n)
		})
	}
}

// A dispatcher stopping while a worker's read ahead is under way (a slow
// disk) ends the read and stops in time, and the next process delivers
// every event the first did not, nothing twice.
func TestReadAheadUnderWayAtShutdown(t *testing.T) {
	t.Parallel()
	path := dbPath(t)
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 100})
	ch.hold = make(chan struct{})
	release := sync.OnceFunc(func() { close(ch.hold) })
	gate := &readGate{holdAbove: 256}
	e := startEnvWith(t, path, func(st engine.DispatchStore) engine.DispatchStore { gate.DispatchStore = st; return gate },
		[]channel.Channel{ch}, func(c *engine.DispatcherConfig) { c.DrainTimeout = time.Minute })
	t.Cleanup(release)
	const n = 1000
	e.topic("slow")
	e.appendStored("slow", n, nil)
	e.subscribe(herald.Subscription{Topic: "slow", Channel: "batchtest", MaxInFlight: 1, Timeout: time.Minute})
	waitFor(t, "the read ahead under way", 40*time.Second, func() bool {
		began, _ := gate.read(256)
		return began
	})
	release()
	// Of the first chunk of 256, two full batches go out; the other 56
	// wait for the read to fill their batch.
	waitFor(t, "two batches delivered", 20*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == 200 })
	// The read ahead never returns by itself: the stop must end it, well
	// before the drain timeout of a minute.
	stopped := time.Now()
	e.stop()
	if took := time.Since(stopped); took > 30*time.Second {
		t.Errorf("the dispatcher took %v to stop with a read under way", took)
	}

	startEnvWith(t, path, nil, []channel.Channel{ch})
	waitFor(t, "every event delivered", 30*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == n })
	deliveredOnce(t, ch, n)
}

// Draining a backlog from the store, the batches go out full: a partial
// one without a linger waits for the read under way instead of going out
// at the end of each chunk read.
func TestReadAheadKeepsBatchesFull(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 100})
	e := startEnvWith(t, dbPath(t), nil, []channel.Channel{ch})
	const n = 2000
	e.topic("full")
	e.appendStored("full", n, nil)
	e.subscribe(herald.Subscription{Topic: "full", Channel: "batchtest", MaxInFlight: 4})
	waitFor(t, "every event delivered", 30*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == n })
	deliveredOnce(t, ch, n)
	calls, _, _ := ch.snapshot()
	if sizes := callSizes(calls); len(calls) != n/100 {
		t.Errorf("calls of %v events; want %d full batches of 100", sizes, n/100)
	}
}

// A store that answers every read with an error is asked again at a
// bounded pace, not in a loop that burns a core and floods the log, and
// once it answers again every event arrives, once.
func TestReadAheadBacksOffWhileTheStoreFails(t *testing.T) {
	t.Parallel()
	ch := newBatchChannel(channel.BatchLimits{MaxEvents: 100})
	gate := &readGate{failing: true}
	e := startEnvWith(t, dbPath(t), func(st engine.DispatchStore) engine.DispatchStore { gate.DispatchStore = st; return gate },
		[]channel.Channel{ch})
	const n = 500
	e.topic("down")
	e.appendStored("down", n, nil)
	e.subscribe(herald.Subscription{Topic: "down", Channel: "batchtest", MaxInFlight: 1})
	waitFor(t, "a read tried", 20*time.Second, func() bool {
		gate.mu.Lock()
		defer gate.mu.Unlock()
		return len(gate.began) > 0
	})
	gate.mu.Lock()
	before := len(gate.began)
	gate.mu.Unlock()
	const watch = 2 * time.Second
	time.Sleep(watch) // counting what happens in a span of time: the span is the measurement
	gate.mu.Lock()
	tries := len(gate.began) - before
	gate.failing = false
	gate.mu.Unlock()
	// Twice a second for two seconds is 4 tries; a loop makes thousands.
	if tries > 20 {
		t.Errorf("%d reads of a failing store in %v; want a few (one per %v)", tries, watch, 500*time.Millisecond)
	}
	waitFor(t, "every event delivered once the store answers", 30*time.Second, func() bool { _, d, _ := ch.snapshot(); return len(d) == n })
	deliveredOnce(t, ch, n)
}
