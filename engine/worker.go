package engine

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/filter"
)

// worker dispatches one active subscription while its node holds the
// subscription's lease. It reads each matching topic from its cursor (tail
// cache first, then the store), sends up to MaxInFlight events at once,
// moves failures to the durable retry set so the cursor keeps moving, and
// writes cursors, retries, dead letters and attempts in settlements shared
// with every other worker.
//
// A worker is small at rest: what it needs while it runs (the
// subscription, its sink, filter, positions, pending settlement) is its
// live state, which a caught-up worker drops when it parks cold (see
// goCold), keeping only its cursors, and builds again when something
// wakes it (warm). A node with 100,000 idle subscriptions holds 100,000 of
// these records, not 100,000 workers (issue 21).
//
// The live state is owned by the run goroutine; send goroutines only
// deliver and report on results.
type worker struct {
	d         *Dispatcher
	id        string // the subscription's
	topic     string // its topic or pattern
	epoch     int64
	updatedAt time.Time // the subscription's UpdatedAt when it started: a change restarts it

	// wake (cap 1) says there may be new events or due retries. nil while
	// cold: warm makes it again, and what a poke announces meanwhile (new
	// heads, a recheck, a stop) is in place before the worker's loop
	// looks. Written under parkMu.
	wake    chan struct{}
	headMu  sync.Mutex
	heads   map[string]int64 // topic -> newest committed seq, from the commit hook
	noted   int64            // the newest seq of its own topic it was told of, or started cold at
	notedIn map[string]int64 // a pattern's: the same per topic
	gone    map[string]bool  // topics deleted, from the dispatcher (under headMu)
	anyGone atomic.Bool      // gone is not empty: spares the loop the lock
	exited  atomic.Bool      // the worker has ended for good

	// A caught-up worker parks: its goroutine ends and its state waits
	// here, costing no stack, until a poke resumes it in a new goroutine
	// (Dispatcher.resumeWorker; not when the dispatcher is stopping,
	// which then ends parked workers itself). Dispatcher.workerExited
	// runs once, when the worker has ended for good. parkMu also guards
	// live and its cancel against stop.
	parkMu  sync.Mutex
	parked  bool
	cooling bool        // parked warm since the last coolDown
	stopReq atomic.Bool // stop was called
	reason  string      // why the worker ended on its own, for logs

	// nodeEpoch is the epoch of the node lease the worker's lease rests
	// on (see leaseHeld): the lease lives as long as that node lease.
	nodeEpoch int64

	lag atomic.Int64 // events read-behind over all topics, for the metrics

	// recheck asks the worker to read its retry set again: the API
	// changed it (a replay), which the worker would not otherwise poll.
	recheck atomic.Bool

	rejects int // Rejected results since the last delivery (see DisableAfterRejects)

	// coldAt holds the cursors of a worker parked cold (live is nil): at
	// rest each topic is settled and written up to its head. One of a
	// single topic keeps its cursor in coldSeq instead (-1: none).
	coldAt  []herald.Cursor
	coldSeq int64

	*live // nil while parked cold
}

// live is a worker's state while it runs (or is parked warm). Its fields
// are the worker's through the embedding.
type live struct {
	sub     herald.Subscription // fixed for the worker's life; a change restarts it
	channel channel.Channel
	sink    channel.Sink // opened by run once the worker starts, closed when it ends or parks cold
	batch   batcher      // when the sink takes batches: see batch.go
	filter  *filter.Filter
	log     *slog.Logger

	// ctx is the run's context, for sends started from handle; cancel
	// (under parkMu) ends it. A child of the dispatcher's, made by
	// setContext for each live state: a parked cold worker holds none.
	ctx    context.Context
	cancel context.CancelFunc

	results chan sendResult

	topics map[string]*topicPos
	// reading is the store read under way on a goroutine of its own (nil:
	// none), at most one per worker; its chunk comes back on readDone
	// (cap 1, so the reader never blocks). See readAhead.
	reading  *chunkRead
	readDone chan *chunkRead
	// readRetryAt is when a store read may be tried again after one
	// failed (zero: at once): a store that answers every read with an
	// error is asked again twice a second, not in a loop.
	readRetryAt time.Time
	names       []string        // topic names, for round robin
	deleted     map[string]bool // topics deleted since the worker started: see dropDeleted
	rr          int
	inflight    int
	sends       sync.WaitGroup

	// retrying holds retries in flight, and retries whose outcome is in the
	// pending settlement: the store still shows those rows as due until
	// the settlement commits, and they must not be sent again meanwhile.
	retrying    map[evRef]struct{}
	settling    []evRef   // retries to forget once the pending settlement commits
	nextRetryAt time.Time // when to look at the retry set again

	// Ordered subscriptions: per (topic, key), how many retries the key has
	// in the store (chain) and the fresh events held in memory behind one
	// in flight (held). startRows are retry rows above the cursor at start:
	// events read again after a restart that are already in the retry set.
	chain     map[herald.RetryKey]int
	keyBusy   map[herald.RetryKey]bool
	held      map[herald.RetryKey][]*herald.Event
	startRows map[evRef]struct{}

	limiter      *rate.Limiter
	rateWaitTill time.Time

	slot slotKey // whose share of the dispatcher's send slots a send takes

	lapsed bool // a send found the lease may have lapsed

	flushStarted time.Time // when the last settlement write began

	pending      herald.Settlement
	flushing     bool              // a settlement write is under way
	flushDone    chan *flushResult // its outcome (cap 1)
	failingSince time.Time
	lastSuccess  time.Time
	stopped      bool // the subscription was disabled by this worker

	// timesWrittenAt is when a settlement last carried the subscription's
	// times (last success, activity); failingStored is whether the store
	// holds a failing_since for it. See startFlush.
	timesWrittenAt time.Time
	failingStored  bool
	statsWrittenAt time.Time // when a settlement last carried delivery stats
}

type evRef struct {
	topic string
	seq   int64
}

type sendResult struct {
	ev        *herald.Event
	attempt   int
	fromRetry bool
	at        time.Time
	res       herald.DeliveryResult
	// skipped: nothing was sent and there is no attempt to record, because
	// the worker stopped while the send waited for a slot, or the lease
	// may have lapsed (lapsed). The worker is ending either way.
	skipped bool
	lapsed  bool
}

// topicPos tracks one topic: everything at or below settled is settled in
// memory, durable is what the store has, open holds the read events above
// settled in seq order (consecutive seqs) with whether each is settled.
type topicPos struct {
	durable int64
	settled int64
	next    int64 // next seq to dispatch
	head    int64 // newest seq known to exist
	open    []bool
	buf     []*herald.Event // read ahead, not dispatched yet: seqs from next on
	// ahead is the chunk after buf (seqs above buf's last, or from next
	// on when buf is empty), read from the store while buf's events were
	// out at the channel; buf takes it once empty. One chunk in hand
	// (buf), one more in hand or in flight (ahead, reading).
	ahead []*herald.Event
}

// chunkRead is one read of a topic's events from the store, made on a
// goroutine of its own while the worker sends what it read before.
type chunkRead struct {
	topic string
	pos   *topicPos // the position it was read for: a deleted topic's is gone
	after int64     // the seqs above after
	limit int
	head  int64 // the position's head when the read began
	evs   []*herald.Event
	err   error
}

func (p *topicPos) settle(seq int64) {
	i := int(seq - p.settled - 1)
	if i < 0 || i >= len(p.open) {
		return
	}
	p.open[i] = true
	n := 0
	for n < len(p.open) && p.open[n] {
		n++
	}
	if n > 0 {
		p.settled += int64(n)
		p.open = append(p.open[:0], p.open[n:]...)
	}
}

func newWorker(d *Dispatcher, sub herald.Subscription, ch channel.Channel, f *filter.Filter, epoch int64) *worker {
	w := &worker{
		coldSeq:   -1,
		d:         d,
		id:        sub.ID,
		topic:     sub.Topic,
		updatedAt: sub.UpdatedAt,
		epoch:     epoch,
		wake:      make(chan struct{}, 1),
	}
	w.live = newLive(d, sub, ch, f)
	return w
}

// newLive returns the live state of a worker of sub, with no topics yet.
func newLive(d *Dispatcher, sub herald.Subscription, ch channel.Channel, f *filter.Filter) *live {
	l := &live{
		sub:       sub,
		filter:    f,
		log:       d.log.With("subscription_id", sub.ID),
		topics:    make(map[string]*topicPos),
		retrying:  make(map[evRef]struct{}),
		flushDone: make(chan *flushResult, 1),
		readDone:  make(chan *chunkRead, 1),
		channel:   ch,
		slot:      subSlot(sub.ID, ch.Destination(sub.Config)),
	}
	if sub.Ordered {
		l.chain = make(map[herald.RetryKey]int)
		l.keyBusy = make(map[herald.RetryKey]bool)
		l.held = make(map[herald.RetryKey][]*herald.Event)
		l.startRows = make(map[evRef]struct{})
	}
	if sub.RateLimit > 0 {
		l.limiter = rate.NewLimiter(rate.Limit(sub.RateLimit), max(1, int(sub.RateLimit/10)))
	}
	l.failingSince = sub.FailingSince
	l.failingStored = !sub.FailingSince.IsZero()
	return l
}

// poke wakes the worker without blocking, resuming it if it is parked.
func (w *worker) poke() {
	w.parkMu.Lock()
	if w.parked {
		w.parked = false
		w.parkMu.Unlock()
		if !w.d.resumeWorker(w) {
			w.parkMu.Lock()
			w.parked = true // the dispatcher is stopping: Stop ends it
			w.parkMu.Unlock()
		}
		return
	}
	if w.wake != nil {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	w.parkMu.Unlock()
}

// stop ends the worker: a running one at its next turn, a parked one
// once resumed to end.
func (w *worker) stop() {
	w.stopReq.Store(true)
	var cancel context.CancelFunc
	w.parkMu.Lock()
	if w.live != nil {
		cancel = w.live.cancel
	}
	w.parkMu.Unlock()
	if cancel != nil {
		cancel()
	}
	w.poke()
}

// setContext gives the live state its context, a child of parent (the
// dispatcher's), ended at once if the worker was told to stop.
func (w *worker) setContext(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	w.parkMu.Lock()
	w.live.ctx, w.live.cancel = ctx, cancel
	w.parkMu.Unlock()
	if w.stopReq.Load() {
		cancel()
	}
}

// tryPark parks the worker unless a poke is waiting or it is stopping.
// It parks warm, with its live state: one that stays parked long enough
// goes cold (see coolDown).
func (w *worker) tryPark(ctx context.Context) bool {
	w.parkMu.Lock()
	defer w.parkMu.Unlock()
	if len(w.wake) > 0 || ctx.Err() != nil {
		return false
	}
	w.parked = true
	w.cooling = false
	// Nothing is in flight: the result channel (max-in-flight results) is
	// made again by the next send. A parked worker keeps its state only.
	w.results = nil
	return true
}

// coolDown drops the live state of a worker parked warm since the last
// call, if it may go cold (see mayGoCold), and closes its sink: warm
// builds them again when the worker is woken. A worker that parks between
// events a second apart stays warm, so a busy subscription is not read
// again from the store at every event; an idle one goes cold within two
// ColdAfter periods. It reports whether the worker went cold.
func (w *worker) coolDown() bool {
	w.parkMu.Lock()
	if !w.parked || w.live == nil {
		w.parkMu.Unlock()
		return false
	}
	if !w.cooling || !w.mayGoCold() {
		w.cooling = true
		w.parkMu.Unlock()
		return false
	}
	sink, log, cancel := w.sink, w.log, w.cancel
	w.setColdCursors(w.restingCursors())
	w.live = nil
	w.wake = nil
	w.d.cold.Add(1)
	w.parkMu.Unlock()
	cancel() // nothing runs under it any more
	if sink != nil {
		// Another goroutine may be warming the worker already: only the
		// old sink is touched here.
		closeSink(sink, log, w.d.cfg.DrainTimeout)
	}
	return true
}

// mayGoCold reports whether the worker may drop its live state when it
// parks: its sink is Parkable and nothing else in its state outlives a
// restart unchanged (an ordered subscription's chains, a rate limiter's
// tokens, topics deleted under it), so that warm makes the same worker
// again from the store's copy of the subscription and the cursors.
func (w *worker) mayGoCold() bool {
	if w.sub.Ordered || w.limiter != nil || len(w.deleted) > 0 || w.batching() {
		return false
	}
	_, ok := w.sink.(channel.Parkable)
	return ok
}

// restingCursors are the worker's positions at rest: settled and written
// up to each topic's head.
func (w *worker) restingCursors() []herald.Cursor {
	if len(w.topics) == 0 {
		return nil
	}
	cs := make([]herald.Cursor, 0, len(w.topics))
	for _, name := range w.names {
		if p := w.topics[name]; p != nil {
			cs = append(cs, herald.Cursor{Topic: name, Seq: p.durable})
		}
	}
	return cs
}

// setColdCursors keeps the cursors of a worker going cold: one of its own
// topic in coldSeq, without an allocation; others in coldAt.
func (w *worker) setColdCursors(cs []herald.Cursor) {
	w.coldAt, w.coldSeq = nil, -1
	if len(cs) == 1 && cs[0].Topic == w.topic {
		w.coldSeq = cs[0].Seq
		return
	}
	w.coldAt = cs
}

// coldCursors returns what setColdCursors kept. The worker's own
// goroutine changes them as it warms: others hold parkMu (see
// coldCursorsLocked).
func (w *worker) coldCursors() []herald.Cursor {
	if w.coldSeq >= 0 {
		return []herald.Cursor{{Topic: w.topic, Seq: w.coldSeq}}
	}
	return w.coldAt
}

// coldCursorsLocked is coldCursors for goroutines other than the
// worker's own.
func (w *worker) coldCursorsLocked() []herald.Cursor {
	w.parkMu.Lock()
	defer w.parkMu.Unlock()
	return w.coldCursors()
}

// warm builds the live state of a worker parked cold, as it resumes: the
// subscription as stored (unchanged since the worker started, or it ends
// to be restarted), its filter, a new sink and the cursors it parked at.
// It returns false when the worker must end instead, with w.reason set
// when the subscription should be tried again shortly.
func (w *worker) warm(ctx context.Context) bool {
	d := w.d
	if w.stopReq.Load() {
		return false
	}
	s, err := d.store.GetSubscription(ctx, w.id)
	switch {
	case ctx.Err() != nil:
		return false
	case herald.IsCode(err, herald.CodeNotFound):
		return false // deleted: the dispatcher looks at it as the worker exits
	case err != nil:
		w.reason = "the subscription could not be read"
		d.log.Warn("dispatcher could not resume the subscription; trying again at the next poll", "subscription_id", w.id, "err", err)
		return false
	case s.State != herald.StateActive || !s.UpdatedAt.Equal(w.updatedAt):
		return false // changed: its new worker starts once this one has exited
	}
	f, err := filter.Parse(s.Filter)
	if err != nil {
		w.reason = "the stored filter did not parse"
		d.log.Error("dispatcher could not resume the subscription", "subscription_id", w.id, "err", err)
		return false
	}
	ch, err := d.channels.Get(cmp.Or(s.Channel, herald.ChannelWebhook))
	if err != nil {
		w.reason = "the channel is not offered"
		d.log.Error("dispatcher could not resume the subscription", "subscription_id", w.id, "err", err)
		return false
	}
	l := newLive(d, s, ch, f)
	if l.sink, err = ch.Open(ctx, &l.sub); err != nil {
		if ctx.Err() == nil {
			w.reason = "the channel could not open"
			l.log.Error("dispatcher could not open the subscription's channel; trying again at the next poll", "channel", ch.Name(), "err", err)
		}
		return false
	}
	w.parkMu.Lock()
	w.live = l
	w.wake = make(chan struct{}, 1)
	w.d.cold.Add(-1)
	cursors := w.coldCursors()
	w.coldAt, w.coldSeq = nil, -1
	w.parkMu.Unlock()
	w.setContext(ctx)
	for _, c := range cursors {
		w.addTopic(c.Topic, c.Seq)
	}
	w.useBatches()
	return true
}

// endCold ends a worker parked cold, or one that could not warm: it has
// nothing in flight or pending and no sink; its lease is released.
func (w *worker) endCold() {
	w.d.cold.Add(-1)
	ctx, cancel := context.WithTimeout(context.Background(), w.d.cfg.DrainTimeout)
	w.d.releaseLease(ctx, w)
	cancel()
	w.exited.Store(true)
	w.d.workerExited(w)
}

// isParked reports whether the worker is parked.
func (w *worker) isParked() bool {
	w.parkMu.Lock()
	defer w.parkMu.Unlock()
	return w.parked
}

// atRest reports whether the worker has nothing in hand: no send, batch or
// settlement under way or pending, no retry in flight, every topic read
// and settled up to its head. Only then may it park.
func (w *worker) atRest() bool {
	if w.inflight > 0 || w.flushing || w.stopped || w.lapsed || w.reading != nil || len(w.retrying) > 0 || len(w.held) > 0 ||
		w.batch.calls > 0 || len(w.batch.gathered) > 0 || !w.pending.Empty() || w.anyGone.Load() {
		return false
	}
	for _, p := range w.topics {
		if len(p.buf) > 0 || len(p.ahead) > 0 || len(p.open) > 0 || p.next <= p.head || p.settled > p.durable {
			return false
		}
	}
	return true
}

// window bounds the events read ahead of the cursor in one topic.
func (w *worker) window() int { return max(1024, 64*w.sub.MaxInFlight, 2*w.capacity()) }

// run starts the worker: it loads its state, opens its sink and runs
// until it parks or ends.
func (w *worker) run(parent context.Context) {
	w.setContext(parent)
	ctx := w.ctx
	if err := w.load(ctx); err != nil {
		if ctx.Err() == nil {
			w.log.Error("dispatcher could not start", "err", err)
		}
		w.end()
		return
	}
	sink, err := w.channel.Open(ctx, &w.sub)
	if err != nil {
		if ctx.Err() == nil {
			w.reason = "the channel could not open"
			w.log.Error("dispatcher could not open the subscription's channel; trying again at the next poll", "channel", w.channel.Name(), "err", err)
		}
		w.end()
		return
	}
	w.sink = sink
	w.useBatches()
	w.proceed(parent)
}

// proceed runs the worker's loop, in a new goroutine each time it resumes
// from parking, and ends the worker when the loop ends other than parked.
func (w *worker) proceed(parent context.Context) {
	if w.live == nil && !w.warm(parent) {
		w.endCold()
		return
	}
	if w.loop(w.ctx) {
		return // parked: a poke resumes it
	}
	w.end()
}

// end ends the worker for good. Ending on its own (disabled, lease
// lapsed), it drops the sends still waiting for a slot; those in flight
// finish in finish, which writes the last settlement; the sink closes
// after it, when no send is in flight any more.
func (w *worker) end() {
	w.cancel()
	w.finish()
	w.closeSink()
	w.exited.Store(true)
	w.d.workerExited(w)
}

// endParked ends a parked worker as the dispatcher stops: it has nothing
// in flight or pending, so it only closes its sink; its lease is released
// with the node's others (see Dispatcher.Stop).
func (w *worker) endParked() {
	if w.live != nil {
		w.cancel()
		w.closeSink()
	} else {
		w.d.cold.Add(-1)
	}
	w.exited.Store(true)
}

// loop is the worker's loop; it returns true when the worker parked.
func (w *worker) loop(ctx context.Context) bool {
	// One timer, armed only for something due: a retry, the rate limit,
	// a batch's linger, a settlement. A caught-up worker holds none, so an
	// idle subscription costs no wake-ups at all.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		w.d.wakeups.Add(1)
		if w.recheck.Swap(false) {
			w.wantRetryAt(w.d.cfg.Now()) // told its retry set may have changed
		}
		if w.lapsed || !w.leaseHeld() {
			// Paused (a stopped process, a long GC pause) or cut off
			// from the store past the lease: another node may own the
			// subscription now. Nothing more goes out under this lease.
			w.reason = "dispatch lease may have lapsed"
			w.log.Warn("dispatch lease may have lapsed; dropping queued deliveries", "in_flight", w.inflight)
			return false
		}
		if !w.readRetryAt.IsZero() && !w.d.cfg.Now().Before(w.readRetryAt) {
			w.readRetryAt = time.Time{}
		}
		w.fill(ctx)
		if w.stopped {
			return false
		}
		if w.batching() {
			w.sendBatches(ctx)
		}
		w.lag.Store(w.currentLag())
		if w.pendingSize() >= 512 {
			w.startFlush(ctx, false)
		}
		if w.flushing && w.pendingSize() >= maxPending {
			// The store is slower than delivery: wait for it rather
			// than let the pending settlement grow without bound.
			if !w.flushed(<-w.flushDone) {
				return false
			}
			continue
		}
		if due := w.flushDue(); !due.IsZero() && !w.d.cfg.Now().Before(due) {
			w.startFlush(ctx, false)
		}
		var wakeAt <-chan time.Time
		if d, ok := w.sleepFor(); ok {
			timer.Reset(d)
			wakeAt = timer.C
		} else if w.atRest() && w.tryPark(ctx) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case r := <-w.results:
			w.handle(r)
		case rs := <-w.batch.done:
			w.batchReturned(ctx, rs)
		case f := <-w.flushDone:
			if !w.flushed(f) {
				return false
			}
		case rd := <-w.readDone:
			w.readReturned(rd)
		case <-w.wake:
		case <-wakeAt:
		}
		if wakeAt != nil && !timer.Stop() {
			select { // fired but not taken: drain it before the next Reset
			case <-timer.C:
			default:
			}
		}
	}
}

// flushDue is when the pending settlement should be written: SettleInterval
// after the last write began, when there is anything to write; zero when
// there is nothing, or a write is under way (its end wakes the worker).
func (w *worker) flushDue() time.Time {
	if w.flushing {
		return time.Time{}
	}
	dirty := !w.pending.Empty()
	for _, p := range w.topics {
		if dirty {
			break
		}
		dirty = p.settled > p.durable
	}
	if !dirty {
		return time.Time{}
	}
	return w.flushStarted.Add(w.d.cfg.SettleInterval)
}

// maxPending bounds the results a worker holds while a settlement is
// being written.
const maxPending = 8192

// finish lets in-flight sends complete (they are cut off at the drain
// deadline by their context), records their results and writes the final
// settlement, so a graceful stop loses no progress.
func (w *worker) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), w.d.cfg.DrainTimeout)
	defer cancel()
	w.dropDeleted()
	done := make(chan struct{})
	go func() { w.sends.Wait(); close(done) }()
	w.batch.gathered = nil // not sent: whoever dispatches next sends them
	for waiting := true; waiting; {
		select {
		case r := <-w.results:
			w.handle(r)
		case rs := <-w.batch.done:
			w.batch.calls--
			for _, r := range rs {
				w.handle(r)
			}
		case <-done:
			waiting = false
		case <-ctx.Done():
			waiting = false
		}
	}
	for {
		select {
		case r := <-w.results:
			w.handle(r)
			continue
		case rs := <-w.batch.done:
			for _, r := range rs {
				w.handle(r)
			}
			continue
		default:
		}
		break
	}
	if w.reading != nil {
		// The run's context is done: the read ends soon. What it read
		// was never dispatched, so whoever dispatches next reads it again.
		select {
		case <-w.readDone:
		case <-ctx.Done():
		}
		w.reading = nil
	}
	if w.tenantLimited() {
		// Sends not handled by now (cut off at the drain deadline, or
		// gathered and never sent) give their tenant's places back.
		w.d.tenants.release(w.sub.Tenant, w.inflight)
	}
	if w.flushing {
		w.flushed(<-w.flushDone)
	}
	w.startFlush(ctx, true)
	if w.flushing {
		w.flushed(<-w.flushDone)
	}
	w.d.releaseLease(ctx, w)
}

// sleepFor is how long the worker may wait for a message before it has
// something of its own to do; false when it has nothing (it then waits
// without a timer).
func (w *worker) sleepFor() (time.Duration, bool) {
	var next time.Time
	for _, t := range []time.Time{w.nextRetryAt, w.rateWaitTill, w.batchDue(), w.flushDue(), w.readRetryAt} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		return 0, false
	}
	return max(next.Sub(w.d.cfg.Now()), time.Millisecond), true
}

// load reads the cursors, the topics the subscription matches and, for
// ordered subscriptions, the retry chains.
func (w *worker) load(ctx context.Context) error {
	cursors, err := w.d.store.Cursors(ctx, w.sub.ID)
	if err != nil {
		return fmt.Errorf("read cursors: %w", err)
	}
	for _, c := range cursors {
		w.addTopic(c.Topic, c.Seq)
	}
	if herald.IsPattern(w.sub.Topic) {
		after := ""
		for {
			ts, err := w.d.store.ListTopics(ctx, after, 1000)
			if err != nil {
				return fmt.Errorf("list topics: %w", err)
			}
			for _, t := range ts {
				if herald.MatchTopic(w.sub.Topic, t.Name) {
					w.addTopic(t.Name, 0).head = t.HeadSeq
				}
			}
			if len(ts) < 1000 {
				break
			}
			after = ts[len(ts)-1].Name
		}
	} else if t, err := w.d.store.GetTopic(ctx, w.sub.Topic); err == nil {
		w.addTopic(t.Name, 0).head = t.HeadSeq
	} else if !herald.IsCode(err, herald.CodeNotFound) {
		return fmt.Errorf("read topic: %w", err)
	}
	w.nextRetryAt = w.d.cfg.Now() // look at the retry set at once
	if w.sub.Ordered {
		rows, err := w.d.store.RetryKeys(ctx, w.sub.ID)
		if err != nil {
			return fmt.Errorf("read retry chains: %w", err)
		}
		for _, r := range rows {
			w.chain[herald.RetryKey{Topic: r.Topic, Key: r.Key}]++
			if p := w.topics[r.Topic]; p != nil && r.Seq > p.settled {
				w.startRows[evRef{r.Topic, r.Seq}] = struct{}{}
			}
		}
	}
	return nil
}

// addTopic returns the topic's position, creating it at cursor seq.
func (w *worker) addTopic(name string, seq int64) *topicPos {
	if p := w.topics[name]; p != nil {
		return p
	}
	p := &topicPos{durable: seq, settled: seq, next: seq + 1, head: seq}
	w.topics[name] = p
	w.names = append(w.names, name)
	return p
}

// currentLag is how many events of its topics the subscription has not
// settled yet.
func (w *worker) currentLag() int64 {
	var n int64
	for _, p := range w.topics {
		n += max(p.head-p.settled, 0)
	}
	return n
}

// noteCommit records that a topic the subscription matches has events up to
// seq, and wakes the worker. The committer calls it; it never blocks.
func (w *worker) noteCommit(topic string, seq int64) {
	w.headMu.Lock()
	// The cluster announces every topic's head again every 10 s: a head
	// the worker was told of (or started at) already would only wake it,
	// and a cold one would be rebuilt from the store for nothing, every
	// 10 s for every subscription.
	if topic == w.topic {
		if seq <= w.noted {
			w.headMu.Unlock()
			return
		}
		w.noted = seq
	} else { // a pattern's topic
		if seq <= w.notedIn[topic] {
			w.headMu.Unlock()
			return
		}
		if w.notedIn == nil {
			w.notedIn = make(map[string]int64)
		}
		w.notedIn[topic] = seq
	}
	if w.heads == nil {
		w.heads = make(map[string]int64)
	}
	w.heads[topic] = max(w.heads[topic], seq)
	w.headMu.Unlock()
	w.poke()
}

func (w *worker) takeHeads() map[string]int64 {
	w.headMu.Lock()
	defer w.headMu.Unlock()
	h := w.heads
	w.heads = nil
	return h
}

// topicDeleted tells the worker that the topic was deleted: it drops its
// state of the topic (see dropDeleted) before it next dispatches or
// settles. The dispatcher calls it before stopping the worker; it never
// blocks.
func (w *worker) topicDeleted(topic string) {
	w.headMu.Lock()
	if w.gone == nil {
		w.gone = make(map[string]bool)
	}
	w.gone[topic] = true
	w.anyGone.Store(true)
	delete(w.heads, topic)
	w.headMu.Unlock()
	w.poke()
}

// dropDeleted forgets the topics deleted since it last ran: their
// positions, read-ahead, ordered chains and held events, and their rows in
// the pending settlement. What the worker learns about them afterwards is
// ignored: results of sends still in flight record their attempts only
// (see handle), and commits of a topic created again under the name wait
// for the worker that replaces this one, which reads the store as the
// deletion left it and so starts the new topic from its first event. (A
// settlement already under way may still carry the topic's rows; the
// store leaves them out, see herald.SubscriptionStore.Settle.)
func (w *worker) dropDeleted() {
	if !w.anyGone.Load() {
		return // the usual case, checked on every turn of the loop
	}
	w.headMu.Lock()
	gone := w.gone
	w.gone = nil
	w.anyGone.Store(false)
	w.headMu.Unlock()
	if len(gone) == 0 {
		return
	}
	if w.deleted == nil {
		w.deleted = make(map[string]bool)
	}
	for topic := range gone {
		w.deleted[topic] = true
		delete(w.topics, topic)
	}
	w.names = slices.DeleteFunc(w.names, func(name string) bool { return gone[name] })
	maps.DeleteFunc(w.chain, func(k herald.RetryKey, _ int) bool { return gone[k.Topic] })
	maps.DeleteFunc(w.keyBusy, func(k herald.RetryKey, _ bool) bool { return gone[k.Topic] })
	maps.DeleteFunc(w.held, func(k herald.RetryKey, _ []*herald.Event) bool { return gone[k.Topic] })
	maps.DeleteFunc(w.startRows, func(ref evRef, _ struct{}) bool { return gone[ref.topic] })
	w.pending = w.pending.WithoutTopics(w.deleted)
}

func (w *worker) noteHead(topic string, seq int64) {
	if w.deleted[topic] {
		return
	}
	p := w.topics[topic]
	if p == nil {
		p = w.addTopic(topic, 0)
	}
	p.head = max(p.head, seq)
}

// fill starts sends while there is capacity: due retries first, then new
// events from each topic in turn.
func (w *worker) fill(ctx context.Context) {
	w.dropDeleted()
	for topic, seq := range w.takeHeads() {
		w.noteHead(topic, seq)
	}
	now := w.d.cfg.Now()
	if !w.nextRetryAt.IsZero() && !now.Before(w.nextRetryAt) && w.room() > 0 {
		w.fillRetries(ctx, now)
	}
	for range len(w.names) {
		if w.room() <= 0 || w.stopped {
			return
		}
		name := w.names[w.rr%len(w.names)]
		w.rr++
		w.fillTopic(ctx, name, w.topics[name])
	}
}

// room is how many sends may start now: free in-flight slots, capped by the
// rate limiter's tokens.
func (w *worker) room() int {
	n := w.capacity() - w.inflight
	if (w.limiter == nil && !w.tenantLimited()) || n <= 0 {
		return n
	}
	now := w.d.cfg.Now()
	if w.limiter != nil {
		tokens := int(w.limiter.TokensAt(now))
		if tokens < 1 {
			w.rateWaitTill = now.Add(time.Duration(float64(time.Second) / w.sub.RateLimit))
			return 0
		}
		n = min(n, tokens)
	}
	w.rateWaitTill = time.Time{}
	if w.tenantLimited() {
		var wait time.Duration
		// Its tenant's limits: a full tenant pokes the worker when a
		// place frees; a used-up rate wakes it when a token comes.
		if n, wait = w.d.tenants.room(w, n, now); wait > 0 {
			w.rateWaitTill = now.Add(wait)
		}
	}
	return n
}

// tenantLimited reports whether the subscription's tenant's limits apply.
func (w *worker) tenantLimited() bool { return w.sub.Tenant != "" && w.d.tenants != nil }

func (w *worker) fillRetries(ctx context.Context, now time.Time) {
	rows, next, err := w.d.store.DueRetries(ctx, w.sub.ID, now, w.room()+len(w.retrying))
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("read due retries", "err", err)
		}
		w.nextRetryAt = now.Add(w.d.cfg.PollInterval)
		return
	}
	// None due later: the set is empty but for what is due now, and only
	// this worker adds to it (or the API, which then says so: recheck),
	// so there is nothing to poll for.
	w.nextRetryAt = next
	taken := 0
	for _, r := range rows {
		ref := evRef{r.Topic, r.Seq}
		if _, busy := w.retrying[ref]; busy || w.deleted[r.Topic] {
			continue
		}
		if w.room() <= 0 {
			w.nextRetryAt = now // more are due
			break
		}
		ev, err := w.readOne(ctx, r.Topic, r.Seq)
		if err != nil {
			w.log.Warn("read event for retry", "topic", r.Topic, "seq", r.Seq, "err", err)
			w.nextRetryAt = now.Add(w.d.cfg.PollInterval)
			return
		}
		if ev == nil || ev.ID != r.EventID && r.EventID != "" {
			// Pruned by retention (or its topic was recreated) before it
			// could be delivered: dead, visibly.
			w.pending.DeadLetters = append(w.pending.DeadLetters, herald.DeadLetter{
				SubscriptionID: w.sub.ID, Topic: r.Topic, Seq: r.Seq, EventID: r.EventID, Key: r.Key,
				Attempts: r.Attempt, LastError: "the event left retention before it could be delivered", DeadAt: now,
			})
			w.release(r.Topic, r.Key, true)
			continue
		}
		w.retrying[ref] = struct{}{}
		taken++
		w.send(ctx, ev, r.Attempt+1, true)
	}
	if taken == 0 && len(rows) > 0 && len(rows) == len(w.retrying) && (w.nextRetryAt.IsZero() || !w.nextRetryAt.After(now)) {
		// Everything due is already in flight: its results (flushed) make
		// the worker look again.
		w.nextRetryAt = time.Time{}
	}
}

func (w *worker) readOne(ctx context.Context, topic string, seq int64) (*herald.Event, error) {
	if evs, ok := w.d.tail.Read(topic, seq-1, 1); ok && len(evs) == 1 {
		return evs[0], nil
	}
	evs, err := w.d.store.ReadEvents(ctx, topic, seq-1, 1)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 || evs[0].Seq != seq {
		return nil, nil
	}
	return &evs[0], nil
}

func (w *worker) fillTopic(ctx context.Context, name string, p *topicPos) {
	for len(p.open) < w.window() && w.room() > 0 {
		if len(p.buf) == 0 && !w.nextChunk(ctx, name, p) {
			break
		}
		ev := p.buf[0]
		p.buf[0] = nil
		p.buf = p.buf[1:]
		p.open = append(p.open, false)
		p.next = ev.Seq + 1
		p.head = max(p.head, ev.Seq)
		w.dispatch(ctx, p, ev)
		if w.stopped {
			return
		}
	}
	w.readAhead(ctx, name, p)
}

// readAheadMax bounds the events a worker reads from the store in one go.
const readAheadMax = 256

// readRetryDelay is how long a worker waits to read again after a store
// read failed.
const readRetryDelay = 500 * time.Millisecond

// chunkSize is how many events one read asks for: readAheadMax, or a
// batching sink's whole batch when that is larger, so one read fills a
// batch; at most what the window has room for.
func (w *worker) chunkSize(p *topicPos) int {
	n := readAheadMax
	if w.batching() {
		n = max(n, min(w.batch.limits.MaxEvents, 4*readAheadMax))
	}
	return max(1, min(n, w.window()-len(p.open)))
}

// nextChunk refills the topic's empty buffer: with the chunk read ahead,
// else from the tail cache. Events only the store has are read by
// readAhead on a goroutine of its own: nextChunk starts that read and
// returns false, and the loop takes the chunk when it comes (readReturned).
// It returns false when there is nothing to dispatch now.
func (w *worker) nextChunk(ctx context.Context, name string, p *topicPos) bool {
	if len(p.ahead) == 0 {
		if p.next > p.head || w.reading != nil && w.reading.pos == p {
			return false
		}
		evs, ok := w.d.tail.Read(name, p.next-1, w.chunkSize(p))
		if !ok || len(evs) == 0 {
			// The cache does not have them (or has not seen them yet:
			// events committed by another node): the store does.
			w.readAhead(ctx, name, p)
			return false
		}
		p.ahead = evs
	}
	evs := p.ahead
	if first := evs[0].Seq; first > p.next {
		// Retention removed events this subscription never got.
		if len(p.open) > 0 {
			return false // let what is open settle first, then jump
		}
		w.d.metrics.gap.Add(float64(first - p.next))
		w.log.Warn("subscription fell behind retention", "topic", name, "missed", first-p.next)
		p.settled, p.next = first-1, first
	}
	p.buf, p.ahead = evs, nil
	return true
}

// readAhead starts reading the topic's next chunk from the store, after
// what the worker holds of it, on a goroutine of its own, so the worker
// sends and settles meanwhile instead of waiting for each read between
// batches. At most one read is under way per worker and one chunk waits
// in hand per topic, so what a worker holds stays bounded; the events are
// read in seq order and dispatched in seq order (see readReturned). A read
// neither settles nor sends anything: the worker ending meanwhile (a
// pause, a lost lease, shutdown) drops its chunk, and whoever dispatches
// the subscription next reads those events again.
func (w *worker) readAhead(ctx context.Context, name string, p *topicPos) {
	if w.reading != nil || len(p.ahead) > 0 || w.stopped || ctx.Err() != nil || !w.readRetryAt.IsZero() {
		return
	}
	after := p.next - 1
	if n := len(p.buf); n > 0 {
		after = p.buf[n-1].Seq
	}
	if after >= p.head {
		return // nothing more known to read
	}
	rd := &chunkRead{topic: name, pos: p, after: after, limit: w.chunkSize(p), head: p.head}
	w.reading = rd
	store, tail, done := w.d.store, w.d.tail, w.readDone
	go func() {
		// The tail cache first: between the worker's look and now it may
		// have caught up (events committed since).
		if evs, ok := tail.Read(rd.topic, rd.after, rd.limit); ok && len(evs) > 0 {
			rd.evs = evs
		} else if stored, err := store.ReadEvents(ctx, rd.topic, rd.after, rd.limit); err != nil {
			rd.err = err
		} else {
			rd.evs = make([]*herald.Event, len(stored))
			for i := range stored {
				rd.evs[i] = &stored[i]
			}
		}
		done <- rd
	}()
}

// readReturned takes the chunk readAhead read: it becomes the topic's
// ahead, and the next fill dispatches it, unless the topic was deleted
// meanwhile or the worker's position moved past it.
func (w *worker) readReturned(rd *chunkRead) {
	w.reading = nil
	p := w.topics[rd.topic]
	if p == nil || p != rd.pos || w.deleted[rd.topic] {
		return
	}
	if rd.err != nil {
		if w.ctx.Err() == nil {
			w.log.Warn("read events", "topic", rd.topic, "err", rd.err)
			w.readRetryAt = w.d.cfg.Now().Add(readRetryDelay)
		}
		return
	}
	at := p.next - 1
	if n := len(p.buf); n > 0 {
		at = p.buf[n-1].Seq
	}
	if at != rd.after || len(p.ahead) > 0 {
		return // read for a position the worker has left: read again
	}
	if len(rd.evs) == 0 {
		if p.head == rd.head {
			p.head = rd.after // nothing more for now
		}
		return
	}
	p.ahead = rd.evs
}

// dispatch decides what happens to one fresh event.
func (w *worker) dispatch(ctx context.Context, p *topicPos, ev *herald.Event) {
	now := w.d.cfg.Now()
	if !w.filter.MatchEvent(ctx, ev, w.d.decoder) {
		w.d.metrics.filtered.Inc()
		p.settle(ev.Seq)
		return
	}
	w.pending.Activity = now
	if w.sub.Ordered && ev.Key != "" {
		k := herald.RetryKey{Topic: ev.Topic, Key: ev.Key}
		if _, ok := w.startRows[evRef{ev.Topic, ev.Seq}]; ok {
			delete(w.startRows, evRef{ev.Topic, ev.Seq}) // already in the retry set
			p.settle(ev.Seq)
			return
		}
		switch {
		case w.chain[k] > 0:
			w.block(ev)
			p.settle(ev.Seq)
			return
		case w.keyBusy[k]:
			w.held[k] = append(w.held[k], ev)
			return
		}
		w.keyBusy[k] = true
	}
	w.send(ctx, ev, 1, false)
}

// block puts an ordered event behind its key's retry chain.
func (w *worker) block(ev *herald.Event) {
	k := herald.RetryKey{Topic: ev.Topic, Key: ev.Key}
	w.chain[k]++
	w.pending.AddRetries = append(w.pending.AddRetries, herald.Retry{
		SubscriptionID: w.sub.ID, Topic: ev.Topic, Seq: ev.Seq, EventID: ev.ID, Key: ev.Key,
	})
	w.pending.UnblockKeys = append(w.pending.UnblockKeys, k)
	w.pending.UnblockAt = w.d.cfg.Now()
}

func (w *worker) wantRetryAt(t time.Time) {
	if w.nextRetryAt.IsZero() || t.Before(w.nextRetryAt) {
		w.nextRetryAt = t
	}
}

func (w *worker) send(ctx context.Context, ev *herald.Event, attempt int, fromRetry bool) {
	w.inflight++
	if w.limiter != nil {
		w.limiter.AllowN(w.d.cfg.Now(), 1) // room() checked there is a token
	}
	if w.tenantLimited() {
		w.d.tenants.take(w.sub.Tenant, w.d.cfg.Now())
	}
	if w.batching() {
		w.gather(ctx, sendResult{ev: ev, attempt: attempt, fromRetry: fromRetry})
		return
	}
	if w.results == nil { // dropped while parked: made again when needed
		w.results = make(chan sendResult, max(w.sub.MaxInFlight, 1))
	}
	results := w.results
	// The worker may park cold and drop its live state as soon as it has
	// the result: what runs after the send names the state it began with.
	l := w.live
	l.sends.Add(1)
	w.d.senders.Go(func() {
		defer l.sends.Done()
		results <- w.deliver(ctx, ev, attempt, fromRetry)
	})
}

// deliver makes one attempt, on a send goroutine. The attempt starts once
// it holds a send slot: waiting for one is no part of it (its timeout and
// latency start after), and a send whose worker stops meanwhile, or whose
// lease may have lapsed by then, is skipped: no request, no attempt.
func (w *worker) deliver(ctx context.Context, ev *herald.Event, attempt int, fromRetry bool) sendResult {
	r := sendResult{ev: ev, attempt: attempt, fromRetry: fromRetry}
	if w.d.slots.acquire(ctx, w.slot) != nil {
		r.skipped = true
		return r
	}
	defer w.d.slots.release(w.slot)
	if !w.leaseHeld() {
		r.skipped, r.lapsed = true, true
		return r
	}
	// The send outlives a stopping worker, bounded by the subscription's
	// timeout: the sink's own when it keeps to it (channel.SelfTimed), else
	// a deadline set here a little after it, so the sink reports its own
	// timeout first.
	sendCtx := context.WithoutCancel(ctx)
	if _, ok := w.sink.(channel.SelfTimed); !ok {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithTimeout(sendCtx, w.sub.Timeout+5*time.Second)
		defer cancel()
	}
	r.res = w.sink.Deliver(sendCtx, ev, attempt)
	r.at = w.d.cfg.Now()
	return r
}

// closeSink closes the channel's sink, if run opened one.
func (w *worker) closeSink() {
	if w.sink != nil {
		closeSink(w.sink, w.log, w.d.cfg.DrainTimeout)
	}
}

func closeSink(sink channel.Sink, log *slog.Logger, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := sink.Close(ctx); err != nil {
		log.Warn("close the subscription's channel", "err", err)
	}
}

// leaseMargin is the part of the lease TTL a node does not count on: it
// covers the clocks of the nodes disagreeing by that much. See leaseHeld.
func leaseMargin(ttl time.Duration) time.Duration { return ttl / 5 }

// leaseHeld reports whether the lease is surely still this node's. It is
// checked before each send, not only when a settlement is committed: a
// process paused past its lease (SIGSTOP, a VM freeze) must not send what
// it had queued once it runs again, since another node has delivered it
// meanwhile. time.Now carries the monotonic clock, so a wall clock step
// does not fool it.
func (w *worker) leaseHeld() bool {
	return w.d.nodeLeaseHeld(w.nodeEpoch)
}

// handle records one delivery result.
func (w *worker) handle(r sendResult) {
	w.inflight--
	if w.tenantLimited() {
		w.d.tenants.release(w.sub.Tenant, 1)
	}
	if r.skipped {
		w.lapsed = w.lapsed || r.lapsed
		return // not sent: the event stays unsettled for whoever runs next
	}
	ev, now := r.ev, r.at
	if r.fromRetry {
		w.settling = append(w.settling, evRef{ev.Topic, ev.Seq})
	}
	if r.res.Outcome == herald.Deferred {
		// Kept back on purpose (quiet hours): due again when the hold
		// ends, as the same attempt, and no failure.
		if !w.deleted[ev.Topic] {
			r.attempt--
			w.retryLater(ev, r, now.Add(max(r.res.RetryAfter, time.Second)))
		}
		return
	}
	w.d.metrics.observe(w.sub.Channel, r.res)
	if w.d.usage != nil {
		w.d.usage.Delivery(w.sub.Tenant, r.res.Outcome == herald.Delivered, len(ev.Payload))
	}
	a := herald.Attempt{
		SubscriptionID: w.sub.ID, Topic: ev.Topic, Seq: ev.Seq, EventID: ev.ID, Attempt: r.attempt, Time: now,
		Outcome: herald.OutcomeSuccess, StatusCode: r.res.StatusCode, Latency: r.res.Latency, Error: herald.JoinReason(r.res.Err, r.res.Detail),
		Response: string(r.res.Response),
	}
	// A success is counted and sampled, not logged (ADR 0009); every
	// failure is logged in full, and counted.
	if w.pending.Stats == nil {
		w.pending.Stats = &herald.StatsDelta{}
	}
	if r.res.Outcome == herald.Delivered {
		w.pending.Stats.Success(a, w.d.cfg.SuccessSample)
	} else {
		a.Outcome = herald.OutcomeFailure
		w.pending.Attempts = append(w.pending.Attempts, a)
		w.pending.Stats.Failed++
	}
	// The event's topic was deleted while it was in flight: it has no
	// place to settle, retry or dead-letter in any more, but what the
	// endpoint answered still tells how the endpoint is doing.
	gone := w.deleted[ev.Topic]

	switch r.res.Outcome {
	case herald.Delivered:
		switch {
		case gone:
		case r.fromRetry:
			w.pending.DoneRetries = append(w.pending.DoneRetries, herald.Cursor{Topic: ev.Topic, Seq: ev.Seq})
		default:
			w.topics[ev.Topic].settle(ev.Seq)
		}
		w.pending.LastSuccess = now
		w.pending.FailingSince = time.Time{} // the success came last
		w.rejects = 0
		w.failingSince = time.Time{}
		w.lastSuccess = now
		if !gone {
			w.release(ev.Topic, ev.Key, r.fromRetry)
		}
		return
	case herald.Gone:
		if !gone {
			w.retryLater(ev, r, now.Add(w.d.cfg.PollInterval))
		}
		w.disable(now, fmt.Sprintf("the endpoint answered %d Gone", r.res.StatusCode))
		return
	}
	if r.res.Outcome == herald.Rejected {
		w.rejects++
		if w.rejects >= w.d.cfg.DisableAfterRejects {
			w.disable(now, herald.JoinReason(fmt.Sprintf("the destination refused %d deliveries in a row for good (last: %s)", w.rejects, failure(r.res)), r.res.Detail))
		}
	}
	if gone {
		return
	}
	if r.attempt >= w.sub.Retry.MaxAttempts || r.res.Outcome == herald.Rejected {
		w.pending.DeadLetters = append(w.pending.DeadLetters, herald.DeadLetter{
			SubscriptionID: w.sub.ID, Topic: ev.Topic, Seq: ev.Seq, EventID: ev.ID, Key: ev.Key,
			Attempts: r.attempt, LastError: lastError(r.res), DeadAt: now,
		})
		w.d.metrics.dead.Inc()
		if w.d.usage != nil {
			w.d.usage.DeadLettered(w.sub.Tenant)
		}
		if !r.fromRetry {
			w.topics[ev.Topic].settle(ev.Seq)
		}
		w.release(ev.Topic, ev.Key, r.fromRetry)
	} else {
		delay := w.sub.Retry.Delay(r.attempt, w.d.rand())
		delay = max(delay, r.res.RetryAfter)
		w.retryLater(ev, r, now.Add(delay))
	}
	if w.failingSince.IsZero() {
		w.failingSince = now
		w.pending.FailingSince = now
	}
	if now.Sub(w.failingSince) >= w.d.cfg.DisableAfter {
		w.disable(now, herald.JoinReason(fmt.Sprintf("every delivery failed for %s (last: %s)", herald.FormatDuration(now.Sub(w.failingSince).Round(time.Minute)), failure(r.res)), r.res.Detail))
	}
}

// retryLater puts a failed event in the retry set, due at the given time.
// For an ordered subscription the event keeps its key's place: it becomes
// the head of the key's chain, and events held behind it join the chain.
func (w *worker) retryLater(ev *herald.Event, r sendResult, due time.Time) {
	w.pending.AddRetries = append(w.pending.AddRetries, herald.Retry{
		SubscriptionID: w.sub.ID, Topic: ev.Topic, Seq: ev.Seq, EventID: ev.ID, Key: ev.Key,
		Attempt: r.attempt, DueAt: due, LastError: lastError(r.res),
	})
	w.wantRetryAt(due)
	if !r.fromRetry {
		w.topics[ev.Topic].settle(ev.Seq)
		if w.sub.Ordered && ev.Key != "" {
			k := herald.RetryKey{Topic: ev.Topic, Key: ev.Key}
			w.chain[k]++
			w.keyBusy[k] = false
			for _, h := range w.held[k] {
				w.block(h)
				w.topics[h.Topic].settle(h.Seq)
			}
			delete(w.held, k)
		}
	}
}

// release ends an ordered key's turn after an event of it was delivered or
// dead-lettered: the next held event goes out, or the chain moves on.
func (w *worker) release(topic, key string, fromRetry bool) {
	if !w.sub.Ordered || key == "" {
		return
	}
	k := herald.RetryKey{Topic: topic, Key: key}
	if fromRetry {
		if w.chain[k]--; w.chain[k] <= 0 {
			delete(w.chain, k)
		}
		// Always heal the chain: the store makes the next blocked event of
		// the key due only if none is, so a count that drifted (retries
		// added through the API) cannot strand blocked events.
		w.pending.UnblockKeys = append(w.pending.UnblockKeys, k)
		w.pending.UnblockAt = w.d.cfg.Now()
		w.wantRetryAt(w.d.cfg.Now())
		return
	}
	w.keyBusy[k] = false
	if h := w.held[k]; len(h) > 0 {
		next := h[0]
		if len(h) == 1 {
			delete(w.held, k)
		} else {
			w.held[k] = h[1:]
		}
		w.keyBusy[k] = true
		w.send(w.ctx, next, 1, false)
	}
}

func (w *worker) disable(now time.Time, reason string) {
	if w.stopped {
		return
	}
	w.stopped = true
	w.reason = reason
	w.d.disable(w.sub.ID, w.sub.UpdatedAt, reason)
}

// lastError is the stored form of a failed attempt's reason and detail
// (see herald.JoinReason).
func lastError(r herald.DeliveryResult) string { return herald.JoinReason(failure(r), r.Detail) }

// failure is a failed attempt's public reason.
func failure(r herald.DeliveryResult) string {
	if r.Err != "" {
		return r.Err
	}
	return fmt.Sprintf("http-%d", r.StatusCode)
}

func (w *worker) pendingSize() int {
	s := &w.pending
	return len(s.Attempts) + len(s.AddRetries) + len(s.DoneRetries) + len(s.DeadLetters)
}

// startFlush starts writing the pending settlement with the cursors'
// progress, unless a write is already under way: the worker keeps
// delivering meanwhile, and at most one settlement of a worker is in flight,
// so they apply in order. The outcome arrives on flushDone.
//
// The subscription's times (last success, activity) rewrite its row, a page
// of the database per subscription and settlement. Unless final, or they
// change whether the subscription is failing, they are written at most once
// per timesEvery and otherwise held for a later settlement.
func (w *worker) startFlush(ctx context.Context, final bool) {
	if w.flushing {
		return
	}
	w.flushStarted = w.d.cfg.Now()
	w.dropDeleted()
	for name, p := range w.topics {
		if p.settled > p.durable {
			w.pending.Cursors = append(w.pending.Cursors, herald.Cursor{Topic: name, Seq: p.settled})
		}
	}
	now := w.d.cfg.Now()
	var held herald.Settlement
	if !final && !w.failingStored && w.pending.FailingSince.IsZero() && now.Sub(w.timesWrittenAt) < timesEvery {
		held.LastSuccess, held.Activity = w.pending.LastSuccess, w.pending.Activity
		w.pending.LastSuccess, w.pending.Activity = time.Time{}, time.Time{}
	}
	// The delivery stats rewrite a row of their own: at most once per
	// timesEvery too, unless final.
	if !final && now.Sub(w.statsWrittenAt) < timesEvery {
		held.Stats, w.pending.Stats = w.pending.Stats, nil
	}
	if w.pending.Empty() {
		w.pending.LastSuccess, w.pending.Activity, w.pending.Stats = held.LastSuccess, held.Activity, held.Stats
		return
	}
	if w.pending.Stats != nil {
		w.pending.Stats.At = now
		w.statsWrittenAt = now
	}
	f := flushResult{s: w.pending, settling: w.settling}
	w.pending, w.settling = held, nil
	if s := &f.s; !s.LastSuccess.IsZero() || !s.Activity.IsZero() || !s.FailingSince.IsZero() {
		w.timesWrittenAt = now
		switch {
		case !s.FailingSince.IsZero():
			w.failingStored = true
		case !s.LastSuccess.IsZero():
			w.failingStored = false
		}
	}
	w.flushing = true
	item := herald.SettleItem{SubscriptionID: w.sub.ID, Epoch: w.epoch, Settlement: f.s}
	go func() {
		f.err = w.d.settle(ctx, item)
		w.flushDone <- &f
	}()
}

// timesEvery is how often at most a worker writes the subscription's times
// while they change nothing else; see startFlush.
const timesEvery = time.Second

type flushResult struct {
	s        herald.Settlement
	settling []evRef
	err      error
}

// flushed applies the outcome of a settlement write. It returns false when
// the worker must stop (lease lost, subscription gone).
func (w *worker) flushed(f *flushResult) bool {
	w.flushing = false
	switch err := f.err; {
	case err == nil:
		for _, c := range f.s.Cursors {
			if p := w.topics[c.Topic]; p != nil { // nil: deleted meanwhile
				p.durable = c.Seq
			}
		}
		for _, ref := range f.settling {
			delete(w.retrying, ref)
		}
		if len(f.settling) > 0 || len(f.s.UnblockKeys) > 0 {
			w.wantRetryAt(w.d.cfg.Now()) // rows freed or unblocked: look again
		}
		// The retries just written are the store's now: look at the set
		// when the first falls due (a look before found none of them).
		for _, r := range f.s.AddRetries {
			if !r.DueAt.IsZero() {
				w.wantRetryAt(r.DueAt)
			}
		}
		return true
	case herald.IsCode(err, herald.CodeConflict), herald.IsCode(err, herald.CodeNotFound):
		w.log.Info("dispatcher stopping: lease lost or subscription removed", "err", err)
		return false
	default:
		// Keep it for the next write; the store may be back by then.
		w.log.Warn("settle failed; will retry", "err", err)
		w.pending = mergeSettlements(f.s, w.pending).WithoutTopics(w.deleted)
		w.pending.Cursors = nil
		w.settling = append(f.settling, w.settling...)
		return true
	}
}

func mergeSettlements(a, b herald.Settlement) herald.Settlement {
	a.AddRetries = append(a.AddRetries, b.AddRetries...)
	a.DoneRetries = append(a.DoneRetries, b.DoneRetries...)
	a.DeadLetters = append(a.DeadLetters, b.DeadLetters...)
	a.UnblockKeys = append(a.UnblockKeys, b.UnblockKeys...)
	a.Attempts = append(a.Attempts, b.Attempts...)
	switch {
	case a.Stats == nil:
		a.Stats = b.Stats
	case b.Stats != nil:
		merged := *a.Stats
		merged.Sample = slices.Clone(merged.Sample)
		merged.Merge(b.Stats)
		a.Stats = &merged
	}
	if !b.UnblockAt.IsZero() {
		a.UnblockAt = b.UnblockAt
	}
	if !b.LastSuccess.IsZero() {
		a.LastSuccess = b.LastSuccess
	}
	if !b.FailingSince.IsZero() && a.FailingSince.IsZero() {
		a.FailingSince = b.FailingSince
	}
	if !b.Activity.IsZero() {
		a.Activity = b.Activity
	}
	return a
}
