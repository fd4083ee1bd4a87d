package engine

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/filter"
	"github.com/heraldhq/herald/lifecycle"
)

// DispatchStore is what the dispatcher needs of the store: all of it.
type DispatchStore = herald.Store

// Appender commits events durably: the Committer, under the Publisher.
type Appender interface {
	Append(ctx context.Context, events []*herald.Event) ([]herald.AppendResult, error)
}

// EventPublisher is what publishes events by the rules of publishing (the
// Publisher); the dispatcher announces what it did to subscriptions
// through it, on Herald's system topic.
type EventPublisher interface {
	Publish(ctx context.Context, p PublishParams) ([]herald.AppendResult, error)
}

// DispatcherDeps are the parts a Dispatcher runs on. Store, Tail and
// Channels are required; a nil Publisher publishes no system events, a
// nil Logger discards and a nil Registry registers no metrics.
type DispatcherDeps struct {
	Store DispatchStore
	Tail  *Tail
	// Channels are the destinations subscriptions deliver to, by name.
	Channels  *channel.Registry
	Publisher EventPublisher
	Logger    *slog.Logger
	Registry  prometheus.Registerer
	// Usage, when set, counts each attempt and dead letter for the
	// subscription's tenant (usage.Meter implements it).
	Usage UsageCounter
	// Tenants, when set, holds each tenant's subscriptions together to
	// its limits.rate_limit and limits.max_in_flight (see tenants.go).
	Tenants *TenantLimits
	// Decoder, when set, renders payloads that are not JSON (protobuf,
	// through the topic's schema) for filters that read payload fields
	// (schema.Registry implements it).
	Decoder filter.Decoder
}

// UsageCounter counts deliveries per tenant ("" for the platform's
// subscriptions). Its methods must not block.
type UsageCounter interface {
	Delivery(tenant string, ok bool, bytes int)
	DeadLettered(tenant string)
}

// DispatcherConfig tunes the dispatcher. Zero values mean the defaults.
type DispatcherConfig struct {
	// NodeID names this node in dispatch leases; no two running
	// processes may share one. Leases held under it when the dispatcher
	// starts are its previous process's, and it takes them back at once
	// (see Start). Default: host name, pid and a random suffix.
	NodeID string
	// Exclusive says that no other process dispatches from the store
	// (SQLite, whose database a server locks): Start then ends every
	// lease, whoever held it, since its holder is gone.
	Exclusive bool
	// LeaseTTL is how long a lease lasts without renewal; a dead node's
	// subscriptions move after at most this long. Default 10s.
	LeaseTTL time.Duration
	// SettleInterval is how often a worker writes its progress. Default
	// 100ms: each write of a subscription touches a page of each attempt-log
	// index, so fewer, larger writes cost less per delivery; a crash repeats
	// at most this much of its deliveries.
	SettleInterval time.Duration
	// PollInterval is how often the dispatch leases are renewed (all of
	// them in one store call; never when Exclusive, whose leases do not
	// lapse), and how soon a subscription this node could not start (its
	// lease still held elsewhere, its channel failing to open) is tried
	// again. Default 1s.
	PollInterval time.Duration
	// ResyncInterval is how often every subscription is read again, as a
	// safety net under the notices of changes (this node's API, other
	// nodes' notifications, membership changes, and a full sync when the
	// cluster's listener reconnects after missing some), which are acted
	// on at once for just the subscriptions they name. A full sync reads
	// every subscription: about 0.4 s of CPU at 100,000. Default 10m.
	ResyncInterval time.Duration
	// DisableAfter disables a subscription whose deliveries have all failed
	// for this long. Default herald.DefaultDisableAfter (5 days).
	DisableAfter time.Duration
	// DisableAfterRejects disables a subscription whose destination
	// refused this many deliveries in a row for good (herald.Rejected: an
	// address that bounces). The count is the worker's, so a restart or a
	// lease move starts it again. Default 3.
	DisableAfterRejects int
	// DrainTimeout bounds how long a stopping worker waits for its
	// in-flight sends. Default 10s.
	DrainTimeout time.Duration
	// AttemptRetention is how long the attempt log is kept. Default 7 days.
	AttemptRetention time.Duration
	// SuccessSample is how many successful attempts each subscription
	// keeps in its sample: successes are counted, not logged one row each
	// (ADR 0009). 0 means herald.DefaultSuccessSample; below 0, none.
	SuccessSample int
	// Challenge is the retry schedule of verification challenges.
	// Default: 5s initial, 1h max, until the subscription's deadline.
	Challenge herald.RetryPolicy
	// MaxConcurrency bounds the deliveries and verification challenges in
	// flight on this node, over all subscriptions. One subscription holds
	// at most a quarter of them and one destination (a webhook URL's host
	// and port) at most half, so endpoints that hang cannot take them all;
	// a delivery waiting for one is not an attempt yet (see slotPool).
	// Default DefaultMaxConcurrency.
	MaxConcurrency int
	// ColdAfter is how often parked workers are looked at: one parked
	// since the last look drops its live state and keeps its cursors
	// only (see worker.coolDown), so an idle subscription goes cold after
	// one to two ColdAfter. Default 15s.
	ColdAfter time.Duration
	// Owns tells whether this node should dispatch the subscription (set
	// by cluster membership); nil means every subscription.
	Owns func(id string) bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Dispatcher runs a worker for every active subscription this node holds a
// lease on, wakes workers when their topics get events, verifies pending
// endpoints, disables subscriptions that keep failing, removes idle ones,
// and writes all workers' progress through one group-commit settler.
type Dispatcher struct {
	store     DispatchStore
	tail      *Tail
	channels  *channel.Registry
	publisher EventPublisher
	cfg       DispatcherConfig
	log       *slog.Logger
	metrics   *dispatchMetrics
	usage     UsageCounter // nil: not counted
	tenants   *TenantLimits
	decoder   filter.Decoder // nil: payloads that are not JSON stay unread
	settler   *group[herald.SettleItem, error]
	senders   *goPool   // runs the workers' deliveries
	slots     *slotPool // bounds them, fairly

	// clockBase is the dispatcher's start by cfg.Now: lease ends are kept
	// as durations since it (see worker.leaseHeld).
	clockBase time.Time

	rndMu sync.Mutex
	rnd   *rand.Rand

	// leaseTTL is the lease taken: cfg.LeaseTTL, or, when Exclusive, one
	// that does not lapse while the process lives (nothing else dispatches
	// from the store, and the next process ends every lease as it starts).
	leaseTTL time.Duration

	// wakeups counts the turns of all workers' loops: at rest it stays
	// still (see Wakeups).
	wakeups atomic.Int64
	// running counts the workers with a goroutine: the others are parked.
	running atomic.Int64
	// cold counts the parked workers without live state (see Cold).
	cold atomic.Int64

	// headMu guards heads, the newest seq of each topic the workers were
	// told of: a head announced again (the cluster's resyncs announce
	// every topic's every 10 s) is not handed to each worker again.
	headMu sync.Mutex
	heads  map[string]int64

	// nodeLease is this node's lease as far as the node knows: every
	// subscription lease it holds rests on it (ADR 0011). Written under
	// mu (see adoptNodeLease), read without it before each send.
	nodeLease atomic.Pointer[nodeLeaseView]

	mu        sync.Mutex
	workers   map[string]*worker
	byTopic   map[string]map[*worker]struct{} // workers of single-topic subscriptions, by topic
	patterns  map[*worker]struct{}            // workers of pattern subscriptions
	verifying map[string]bool
	stopping  map[string]*worker // stopped workers that may still be finishing
	starting  map[string]bool    // subscriptions startMany takes leases of
	// unreleased holds leases whose release failed, with no worker: each
	// renewal tries again (see releaseLease).
	unreleased map[string]herald.Lease
	due        map[string]time.Time // subscriptions to look at again, and when
	dueQ       dueQueue             // due, in time order
	changed    map[string]bool      // subscriptions to look at now
	kick       chan struct{}        // cap 1: re-read every subscription now
	wake       chan struct{}        // cap 1: changed or due has news
	life       lifecycle.Runner     // the manager, workers and verifications
}

// addWorker makes w the subscription's worker, unless its lease rests on
// a node lease that has ended since it was taken (a renewal found it
// lapsed meanwhile): then it reports false, and the subscription is looked
// at again shortly. d.mu is held.
func (d *Dispatcher) addWorker(id string, w *worker) bool {
	if w.nodeEpoch != d.currentNodeEpoch() {
		d.lookAt(id, d.cfg.Now().Add(d.cfg.PollInterval))
		return false
	}
	d.workers[id] = w
	delete(d.unreleased, id) // the worker holds it now
	if herald.IsPattern(w.topic) {
		d.patterns[w] = struct{}{}
		return true
	}
	set := d.byTopic[w.topic]
	for other := range set {
		w.topic = other.topic // one copy of the name for all, not one each
		break
	}
	if set == nil {
		set = make(map[*worker]struct{})
		d.byTopic[w.topic] = set
	}
	set[w] = struct{}{}
	return true
}

// removeWorker ends w's place as the subscription's worker, if it has it.
// d.mu is held.
func (d *Dispatcher) removeWorker(id string, w *worker) {
	if d.workers[id] != w {
		return
	}
	delete(d.workers, id)
	delete(d.patterns, w)
	if set := d.byTopic[w.topic]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(d.byTopic, w.topic)
		}
	}
}

// matching calls f for each worker whose subscription matches the topic:
// those of the topic itself, found by name, and the pattern ones. A
// commit costs the subscriptions it concerns, not all of them. d.mu is
// held.
func (d *Dispatcher) matching(topic string, f func(*worker)) {
	for w := range d.byTopic[topic] {
		f(w)
	}
	for w := range d.patterns {
		if herald.MatchTopic(w.topic, topic) {
			f(w)
		}
	}
}

// updateGauges refreshes the backlog gauges: lag from the workers' memory,
// retry-set and dead-letter sizes from the store.
func (d *Dispatcher) updateGauges(ctx context.Context) {
	d.mu.Lock()
	ws := make([]*worker, 0, len(d.workers))
	for _, w := range d.workers {
		ws = append(ws, w)
	}
	d.mu.Unlock()
	var lag, lagMax, retries, dead int64
	for _, w := range ws {
		l := w.lag.Load()
		lag += l
		lagMax = max(lagMax, l)
	}
	d.metrics.lagTotal.Set(float64(lag))
	d.metrics.lagMax.Set(float64(lagMax))
	node := d.cfg.NodeID
	if d.cfg.Exclusive {
		node = "" // every lease is this process's
	}
	if r, dl, err := d.store.CountBacklog(ctx, node); err == nil {
		retries, dead = r, dl
	} else if ctx.Err() == nil {
		d.log.Warn("count the retry sets and dead letters", "err", err)
	}
	d.metrics.retries.Set(float64(retries))
	d.metrics.deadLetters.Set(float64(dead))
}

// NewDispatcher returns a dispatcher; it starts nothing.
func NewDispatcher(deps DispatcherDeps, cfg DispatcherConfig) *Dispatcher {
	logger := deps.Logger
	if cfg.NodeID == "" {
		host, _ := os.Hostname()
		cfg.NodeID = fmt.Sprintf("%s-%d-%04x", host, os.Getpid(), rand.IntN(1<<16))
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.SettleInterval <= 0 {
		cfg.SettleInterval = 100 * time.Millisecond
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 10 * time.Minute
	}
	if cfg.DisableAfter <= 0 {
		cfg.DisableAfter = herald.DefaultDisableAfter
	}
	if cfg.ColdAfter <= 0 {
		cfg.ColdAfter = 15 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.AttemptRetention <= 0 {
		cfg.AttemptRetention = 7 * 24 * time.Hour
	}
	if cfg.DisableAfterRejects <= 0 {
		cfg.DisableAfterRejects = 3
	}
	switch {
	case cfg.SuccessSample == 0:
		cfg.SuccessSample = herald.DefaultSuccessSample
	case cfg.SuccessSample < 0:
		cfg.SuccessSample = 0
	}
	if cfg.Challenge.MaxAttempts == 0 {
		cfg.Challenge = herald.RetryPolicy{MaxAttempts: herald.MaxRetryAttempts, Initial: 5 * time.Second, Max: time.Hour}
	}
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = DefaultMaxConcurrency
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	slots := newSlotPool(cfg.MaxConcurrency)
	d := &Dispatcher{
		store: deps.Store, tail: deps.Tail, channels: deps.Channels, publisher: deps.Publisher,
		cfg: cfg, log: logger, usage: deps.Usage, tenants: deps.Tenants, decoder: deps.Decoder,
		rnd:        rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		workers:    make(map[string]*worker),
		byTopic:    make(map[string]map[*worker]struct{}),
		patterns:   make(map[*worker]struct{}),
		verifying:  make(map[string]bool),
		stopping:   make(map[string]*worker),
		starting:   make(map[string]bool),
		unreleased: make(map[string]herald.Lease),
		due:        make(map[string]time.Time),
		changed:    make(map[string]bool),
		kick:       make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
		leaseTTL:   cfg.LeaseTTL,
		senders:    newGoPool(senderIdle),
		slots:      slots,
		clockBase:  cfg.Now(),
	}
	d.metrics = newDispatchMetrics(deps.Registry, slots, &d.wakeups, &d.running, &d.cold)
	if cfg.Exclusive {
		d.leaseTTL = 10 * 365 * 24 * time.Hour
	}
	d.settler = newGroup(1024, 256, func(herald.SettleItem) int { return 1 }, d.commitSettlements)
	return d
}

func (d *Dispatcher) rand() float64 {
	d.rndMu.Lock()
	defer d.rndMu.Unlock()
	return d.rnd.Float64()
}

// Wakeups is how many times the workers have woken up, summed: a worker
// wakes for a commit, a result, a due retry or settlement, never on a
// timer of its own while it has nothing to do, so at rest this stays still.
func (d *Dispatcher) Wakeups() int64 { return d.wakeups.Load() }

// Running is how many workers have a goroutine now; the rest of the
// subscriptions it dispatches (see Dispatching) are parked, caught up.
func (d *Dispatcher) Running() int { return int(d.running.Load()) }

// NodeID is the name this dispatcher holds leases under.
func (d *Dispatcher) NodeID() string { return d.cfg.NodeID }

// Start makes sure the system topic exists, ends the leases a previous
// process of this node left (see NodeID and Exclusive), and starts managing
// workers.
func (d *Dispatcher) Start(ctx context.Context) error {
	if _, err := d.store.GetTopic(ctx, herald.SubscriptionsTopic); herald.IsCode(err, herald.CodeNotFound) {
		t := herald.Topic{Name: herald.SubscriptionsTopic, CreatedAt: d.cfg.Now().UTC(), UpdatedAt: d.cfg.Now().UTC()}.WithDefaults()
		if _, _, err := d.store.PutTopic(ctx, t); err != nil {
			return fmt.Errorf("create system topic %s: %w", herald.SubscriptionsTopic, err)
		}
	} else if err != nil {
		return fmt.Errorf("read system topic: %w", err)
	}
	// A process killed a moment ago left its leases behind: without this,
	// its subscriptions would wait for them to run out (10 s for a lone
	// node) while the node already answers ready.
	node := d.cfg.NodeID
	if d.cfg.Exclusive {
		node = ""
	}
	if n, err := d.store.ReleaseNodeLeases(ctx, node); err != nil {
		return fmt.Errorf("take back the dispatch leases of a previous process: %w", err)
	} else if n > 0 {
		d.log.Info("took back the dispatch leases of a previous process", "leases", n)
	}
	if err := d.settler.start(ctx, "settlement writer"); err != nil {
		return err
	}
	return d.life.Start(ctx, "dispatcher", d.manage, d.renewLoop)
}

// renewLoop renews the node's leases every PollInterval, apart from the
// manager: a full sync of 100,000 subscriptions takes longer than a lease
// lasts, and the leases of the workers it already started must not lapse
// meanwhile (issue 21). Exclusive leases do not lapse: nothing to renew.
func (d *Dispatcher) renewLoop(ctx context.Context) {
	if d.cfg.Exclusive {
		return
	}
	renew := time.NewTicker(d.cfg.PollInterval)
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			d.renewLeases(ctx)
		}
	}
}

// Stop stops every worker (each finishes its in-flight sends, up to
// DrainTimeout, and writes its progress), then the settler. Idempotent and
// safe before Start.
func (d *Dispatcher) Stop(ctx context.Context) error {
	// Workers run under the manager's context: they stop with it.
	if _, err := d.life.Stop(ctx); err != nil {
		return err
	}
	// Parked workers have no goroutine to end them: they hold nothing to
	// write, so they close their sinks here, and their leases end together.
	d.mu.Lock()
	var parked []*worker
	for _, w := range d.workers {
		if w.isParked() {
			parked = append(parked, w)
		}
	}
	for _, w := range d.stopping {
		if w.isParked() {
			parked = append(parked, w)
		}
	}
	d.mu.Unlock()
	for _, w := range parked {
		w.endParked()
	}
	if len(parked) > 0 {
		if _, err := d.store.ReleaseNodeLeases(ctx, d.cfg.NodeID); err != nil {
			d.log.Warn("release the dispatch leases of parked subscriptions", "err", err)
		}
	}
	d.mu.Lock()
	clear(d.workers)
	clear(d.byTopic)
	clear(d.patterns)
	d.mu.Unlock()
	return d.settler.stop(ctx)
}

// OnCommit wakes the workers whose subscriptions match the committed
// events' topics. It is a committer hook: it never blocks.
func (d *Dispatcher) OnCommit(events []*herald.Event) {
	heads := make(map[string]int64)
	for _, e := range events {
		heads[e.Topic] = max(heads[e.Topic], e.Seq)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for topic, seq := range heads {
		if d.newHead(topic, seq) {
			d.matching(topic, func(w *worker) { w.noteCommit(topic, seq) })
		}
	}
}

// newHead records the topic's head and reports whether it is newer than
// every head of the topic the workers were told of. A worker that starts
// later reads its topic's end from the store, so an old head concerns no
// one: a resync repeating every topic's head then costs the topics, not
// the subscriptions.
func (d *Dispatcher) newHead(topic string, seq int64) bool {
	d.headMu.Lock()
	defer d.headMu.Unlock()
	if seq <= d.heads[topic] {
		return false
	}
	if d.heads == nil {
		d.heads = make(map[string]int64)
	}
	d.heads[topic] = seq
	return true
}

// forgetHead drops what newHead kept of a deleted topic: one created
// again under the name starts from seq 1.
func (d *Dispatcher) forgetHead(topic string) {
	d.headMu.Lock()
	delete(d.heads, topic)
	d.headMu.Unlock()
}

// look asks the manager to look at one subscription again now.
func (d *Dispatcher) look(id string) {
	d.mu.Lock()
	d.changed[id] = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// lookAt asks the manager to look at one subscription again at t (the
// earliest of the times asked for wins). d.mu is held.
func (d *Dispatcher) lookAt(id string, t time.Time) {
	if cur, ok := d.due[id]; !ok || t.Before(cur) {
		d.due[id] = t
		heap.Push(&d.dueQ, dueAt{at: t, id: id})
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// Changed tells the dispatcher that a subscription was created, changed or
// deleted (through this node, or another that said which), or that its
// retry set changed: it reads that one subscription again now, and its
// worker looks at its retry set.
func (d *Dispatcher) Changed(id string) {
	d.mu.Lock()
	if w := d.workers[id]; w != nil {
		w.recheck.Store(true)
		w.poke()
	}
	d.mu.Unlock()
	d.look(id)
}

// housekeeping is how often the gauges are refreshed and the attempt log
// pruned.
const housekeeping = 15 * time.Second

// manage runs the dispatcher: a full sync at the start, on Rebalance and
// every ResyncInterval; the subscriptions named by Changed, or due to be
// looked at again, one by one; housekeeping. Nothing in it costs per
// subscription and second: at rest, with every worker idle, it sleeps
// (renewLoop renews the leases, one store call a PollInterval).
func (d *Dispatcher) manage(ctx context.Context) {
	full := time.NewTimer(0)
	defer full.Stop()
	house := time.NewTicker(housekeeping)
	defer house.Stop()
	cool := time.NewTicker(d.cfg.ColdAfter)
	defer cool.Stop()
	dueTimer := time.NewTimer(time.Hour)
	defer dueTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-full.C:
			d.fullSync(ctx)
			full.Reset(d.cfg.ResyncInterval)
		case <-d.kick:
			d.fullSync(ctx)
			if !full.Stop() {
				select {
				case <-full.C:
				default:
				}
			}
			full.Reset(d.cfg.ResyncInterval)
		case <-d.wake:
		case <-dueTimer.C:
		case <-house.C:
			d.housekeep(ctx)
		case <-cool.C:
			d.coolDown()
		}
		d.syncNamed(ctx)
		if !dueTimer.Stop() {
			select {
			case <-dueTimer.C:
			default:
			}
		}
		if next := d.nextDue(); !next.IsZero() {
			dueTimer.Reset(max(next.Sub(d.cfg.Now()), time.Millisecond))
		}
	}
}

func (d *Dispatcher) fullSync(ctx context.Context) {
	if err := d.sync(ctx); err != nil && ctx.Err() == nil {
		d.log.Warn("dispatcher sync failed", "err", err)
	}
}

// nextDue is the earliest time a subscription is to be looked at again.
func (d *Dispatcher) nextDue() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.dueQ) > 0 {
		top := d.dueQ[0]
		if cur, ok := d.due[top.id]; ok && cur.Equal(top.at) {
			return top.at
		}
		heap.Pop(&d.dueQ) // superseded by an earlier time, or taken
	}
	return time.Time{}
}

// dueAt is a time a subscription is to be looked at again. The queue may
// hold times since superseded by earlier ones (lookAt keeps the earliest
// in due): those are dropped as they come up.
type dueAt struct {
	at time.Time
	id string
}

// dueQueue orders the subscriptions to look at by time, so that finding
// the next and the due ones costs their number, not every subscription's
// (with 100,000 that expire when idle, each has a time here).
type dueQueue []dueAt

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q dueQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *dueQueue) Push(x any)        { *q = append(*q, x.(dueAt)) }
func (q *dueQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// syncNamed looks at the subscriptions Changed named and those now due.
func (d *Dispatcher) syncNamed(ctx context.Context) {
	now := d.cfg.Now()
	d.mu.Lock()
	ids := make([]string, 0, len(d.changed))
	for id := range d.changed {
		ids = append(ids, id)
	}
	clear(d.changed)
	for len(d.dueQ) > 0 && !d.dueQ[0].at.After(now) {
		it := heap.Pop(&d.dueQ).(dueAt)
		if cur, ok := d.due[it.id]; ok && cur.Equal(it.at) {
			ids = append(ids, it.id)
			delete(d.due, it.id)
		}
	}
	d.mu.Unlock()
	if len(ids) > manyNamed {
		// Reading them one by one would take longer than reading all in
		// pages, with their leases taken 500 at a time: after a node
		// lease lapsed, every worker ended and names its subscription.
		d.fullSync(ctx)
		return
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		s, err := d.store.GetSubscription(ctx, id)
		switch {
		case herald.IsCode(err, herald.CodeNotFound):
			d.mu.Lock()
			w := d.workers[id]
			d.mu.Unlock()
			if w != nil {
				d.stopWorker(id, w)
			}
			continue
		case err != nil:
			if ctx.Err() == nil {
				d.log.Warn("read subscription", "subscription_id", id, "err", err)
				d.mu.Lock()
				d.lookAt(id, now.Add(d.cfg.PollInterval))
				d.mu.Unlock()
			}
			continue
		}
		if err := d.syncOne(ctx, s, d.cfg.Now()); err != nil && ctx.Err() == nil {
			d.log.Warn("dispatcher sync failed", "subscription_id", id, "err", err)
		}
	}
	d.mu.Lock()
	n := len(d.workers)
	d.mu.Unlock()
	d.metrics.workers.Set(float64(n))
}

// nodeLeaseView is this node's lease as the dispatcher knows it: its
// epoch, and until when the node counts on it by its own clock, as a
// duration since clockBase (see nodeLeaseHeld).
type nodeLeaseView struct {
	epoch int64
	end   time.Duration
}

// nodeLeaseHeld reports whether a subscription lease taken under the node
// lease of this epoch is surely still this node's: the node lease is the
// one the dispatcher holds, and its renewal (or a lease taken with it)
// was sent recently enough. The node lease was extended to at least
// sent+LeaseTTL by the sender's clock, so no other node may take it
// before then; the node counts on it, by its monotonic clock, until
// sent+LeaseTTL less leaseMargin.
func (d *Dispatcher) nodeLeaseHeld(epoch int64) bool {
	v := d.nodeLease.Load()
	return v != nil && v.epoch == epoch && d.cfg.Now().Sub(d.clockBase) < v.end
}

// adoptNodeLease records what a store call sent at sent said of the node
// lease: its epoch. The same epoch moves the lease's end on; a higher one
// means the lease lapsed (or another node ended it, taking a subscription
// from it) and came back under that epoch, and every worker whose lease
// rests on an older one has lost it: adoptNodeLease returns those, for
// the caller to stop. A lower one is an older call's, answered late.
func (d *Dispatcher) adoptNodeLease(epoch int64, sent time.Time) []*worker {
	end := sent.Add(d.leaseTTL - leaseMargin(d.leaseTTL)).Sub(d.clockBase)
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.nodeLease.Load()
	switch {
	case cur == nil || epoch > cur.epoch:
		d.nodeLease.Store(&nodeLeaseView{epoch: epoch, end: end})
	case epoch == cur.epoch && end > cur.end:
		d.nodeLease.Store(&nodeLeaseView{epoch: epoch, end: end})
		return nil
	default:
		return nil
	}
	if cur == nil {
		return nil
	}
	var lost []*worker
	for _, w := range d.workers {
		if w.nodeEpoch < epoch {
			lost = append(lost, w)
		}
	}
	return lost
}

// currentNodeEpoch is the epoch of the node lease, 0 before the first.
func (d *Dispatcher) currentNodeEpoch() int64 {
	if v := d.nodeLease.Load(); v != nil {
		return v.epoch
	}
	return 0
}

// manyNamed is how many subscriptions syncNamed looks at one by one; more
// make it sync them all (see sync).
const manyNamed = 500

// renewLeases renews this node's lease, which keeps every subscription
// lease it holds, with one store call. Workers whose leases it ended (the
// node lease had lapsed) or a topic deletion fenced stop, and their
// subscriptions are looked at again; leases whose release failed are
// released again.
func (d *Dispatcher) renewLeases(ctx context.Context) {
	sent := d.cfg.Now()
	nl, err := d.store.RenewNodeLease(ctx, d.cfg.NodeID, sent, d.leaseTTL)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("renew the dispatch lease", "err", err)
		}
		return // the workers stop by themselves once their leases may have lapsed
	}
	lost := d.adoptNodeLease(nl.Epoch, sent)
	if len(lost) > 0 {
		d.log.Warn("the node's dispatch lease had lapsed; restarting its subscriptions", "subscriptions", len(lost))
	}
	d.mu.Lock()
	for _, l := range nl.Fenced {
		if w := d.workers[l.SubscriptionID]; w != nil && w.epoch == l.Epoch {
			d.log.Info("dispatch lease fenced by a topic deletion", "subscription_id", w.id)
			lost = append(lost, w)
		}
	}
	var retry []herald.Lease
	for id, l := range d.unreleased {
		if l.NodeEpoch != nl.Epoch || d.workers[id] != nil || d.starting[id] {
			delete(d.unreleased, id) // ended with its node lease, or taken again
			continue
		}
		retry = append(retry, l)
	}
	d.mu.Unlock()
	for _, w := range lost {
		d.stopWorker(w.id, w)
	}
	for _, l := range retry {
		if err := d.store.ReleaseLease(ctx, l.SubscriptionID, d.cfg.NodeID, l.Epoch); err != nil {
			if ctx.Err() == nil {
				d.log.Warn("release a dispatch lease", "subscription_id", l.SubscriptionID, "err", err)
			}
			continue
		}
		d.mu.Lock()
		if d.unreleased[l.SubscriptionID] == l {
			delete(d.unreleased, l.SubscriptionID)
		}
		d.mu.Unlock()
		d.log.Info("released a dispatch lease held with no worker", "subscription_id", l.SubscriptionID)
		d.look(l.SubscriptionID)
	}
}

// releaseLease gives back the lease of a worker that has ended. A lease
// whose node lease has ended already needs nothing. One that could not be
// released (the store was busy, the drain ran out of time) would
// otherwise stay held with the node lease, which the node renews for as
// long as it runs, and the subscription's rightful owner would never get
// it: each renewal tries again until it is released or a worker holds it.
func (d *Dispatcher) releaseLease(ctx context.Context, w *worker) {
	if d.currentNodeEpoch() != w.nodeEpoch {
		return
	}
	d.releaseLeaseOf(ctx, herald.Lease{SubscriptionID: w.id, Epoch: w.epoch, NodeEpoch: w.nodeEpoch})
}

func (d *Dispatcher) releaseLeaseOf(ctx context.Context, l herald.Lease) {
	if err := d.store.ReleaseLease(ctx, l.SubscriptionID, d.cfg.NodeID, l.Epoch); err != nil {
		d.mu.Lock()
		if d.workers[l.SubscriptionID] == nil {
			d.unreleased[l.SubscriptionID] = l
		}
		d.mu.Unlock()
	}
}

// coolDown lets the workers parked since its last call go cold. When
// many did, a burst (a fan-out to thousands of subscriptions) has ended:
// the memory their live states and sends took is handed back to the
// system now rather than kept for the next burst, so that a node's RSS
// at rest follows what it holds at rest (issue 21).
func (d *Dispatcher) coolDown() {
	d.mu.Lock()
	ws := make([]*worker, 0, len(d.workers))
	for _, w := range d.workers {
		ws = append(ws, w)
	}
	d.mu.Unlock()
	cooled := 0
	for _, w := range ws {
		if w.coolDown() {
			cooled++
		}
	}
	if cooled >= freeAfterCooling && d.running.Load() == 0 {
		debug.FreeOSMemory()
	}
}

// freeAfterCooling is how many workers going cold at once make coolDown
// return the heap's free memory to the system: a full collection, which
// at 100,000 parked subscriptions costs tens of milliseconds of CPU, once
// after a burst.
const freeAfterCooling = 1000

// housekeep refreshes the gauges and prunes the attempt log.
func (d *Dispatcher) housekeep(ctx context.Context) {
	d.updateGauges(ctx)
	now := d.cfg.Now()
	if _, err := d.store.PruneAttempts(ctx, now.Add(-d.cfg.AttemptRetention), 10000); err != nil && ctx.Err() == nil {
		d.log.Warn("prune attempts", "err", err)
	}
}

// sync brings the running workers in line with the stored subscriptions.
func (d *Dispatcher) sync(ctx context.Context) error {
	now := d.cfg.Now()
	seen := make(map[string]bool)
	var errs []error
	var cold []*worker // started cold: see startMany
	after := ""
	for {
		subs, err := d.store.ListSubscriptions(ctx, herald.SubscriptionFilter{After: after, Limit: 500})
		if err != nil {
			return fmt.Errorf("list subscriptions: %w", err)
		}
		var starts []workerStart
		for _, s := range subs {
			seen[s.ID] = true
			st, err := d.prepare(ctx, s, now)
			if err != nil {
				errs = append(errs, err)
			} else if st != nil {
				starts = append(starts, *st)
			}
		}
		cold = append(cold, d.startMany(ctx, starts)...)
		if len(subs) < 500 {
			break
		}
		after = subs[len(subs)-1].ID
	}
	if err := d.wakeBehind(ctx, cold); err != nil {
		errs = append(errs, err)
	}
	d.mu.Lock()
	var gone []*worker
	for id, w := range d.workers {
		if !seen[id] {
			gone = append(gone, w)
		}
	}
	d.mu.Unlock()
	for _, w := range gone {
		d.stopWorker(w.id, w)
	}
	d.mu.Lock()
	active := len(d.workers)
	d.mu.Unlock()
	d.metrics.workers.Set(float64(active))
	return errors.Join(errs...)
}

// workerStart is a subscription prepare found wanting a worker.
type workerStart struct {
	s  herald.Subscription
	f  *filter.Filter
	ch channel.Channel
}

func (d *Dispatcher) syncOne(ctx context.Context, s herald.Subscription, now time.Time) error {
	st, err := d.prepare(ctx, s, now)
	if st == nil || err != nil {
		return err
	}
	sent := d.cfg.Now()
	leases, err := d.takeLeases(ctx, []string{s.ID}, sent)
	if err != nil || len(leases) == 0 {
		// Another node has it (when that node stopped or died, its lease
		// ends within LeaseTTL), it was just deleted, or the store
		// failed: try again until then.
		d.mu.Lock()
		d.lookAt(s.ID, sent.Add(d.cfg.PollInterval))
		d.mu.Unlock()
		if err != nil {
			return fmt.Errorf("acquire lease on %s: %w", s.ID, err)
		}
		return nil
	}
	d.startWorker(ctx, st, leases[0])
	return nil
}

// prepare acts on what the stored subscription asks of this node (expiry,
// verification, stopping a worker that no longer matches it) and returns
// what its worker starts with when it needs one started, nil otherwise.
func (d *Dispatcher) prepare(ctx context.Context, s herald.Subscription, now time.Time) (*workerStart, error) {
	d.mu.Lock()
	w := d.workers[s.ID]
	if old := d.stopping[s.ID]; old != nil {
		if !old.exited.Load() {
			d.mu.Unlock()
			return nil, nil // the previous worker is still finishing: its exit looks again
		}
		delete(d.stopping, s.ID)
	}
	d.mu.Unlock()
	owns := d.cfg.Owns == nil || d.cfg.Owns(s.ID)

	if s.ExpiresAfterIdle > 0 && owns {
		if end := s.LastActivityAt.Add(s.ExpiresAfterIdle); !now.Before(end) {
			if w != nil {
				d.stopWorker(s.ID, w)
			}
			return nil, d.expire(ctx, s, now)
		} else {
			d.mu.Lock()
			d.lookAt(s.ID, end)
			d.mu.Unlock()
		}
	}
	if s.State == herald.StatePending && owns {
		if !s.NextChallengeAt.After(now) {
			d.startVerify(ctx, s)
		} else {
			d.mu.Lock()
			d.lookAt(s.ID, s.NextChallengeAt)
			d.mu.Unlock()
		}
	}
	want := s.State == herald.StateActive && owns
	switch {
	case w != nil && (!want || !w.updatedAt.Equal(s.UpdatedAt)):
		d.stopWorker(s.ID, w)
		return nil, nil // its replacement starts once it has exited
	case w != nil:
		return nil, nil // running as it should; renewLeases keeps its lease
	}
	if !want {
		return nil, nil
	}
	f, err := filter.Parse(s.Filter)
	if err != nil {
		return nil, fmt.Errorf("subscription %s: stored filter: %w", s.ID, err)
	}
	ch, err := d.channels.Get(cmp.Or(s.Channel, herald.ChannelWebhook))
	if err != nil {
		return nil, fmt.Errorf("subscription %s: %w", s.ID, err)
	}
	if ctx.Err() != nil {
		return nil, nil // stopping: take no lease that nothing would release
	}
	return &workerStart{s: s, f: f, ch: ch}, nil
}

// takeLeases takes the leases of the subscriptions, in a store call sent
// at sent, and returns those it took under the node lease the dispatcher
// holds now. Leases taken under an older node lease (a renewal found it
// lapsed while this call ran) are dead already and left out; so are those
// the store took before it failed, which are released later.
func (d *Dispatcher) takeLeases(ctx context.Context, ids []string, sent time.Time) ([]herald.Lease, error) {
	leases, err := d.store.AcquireLeases(ctx, ids, d.cfg.NodeID, sent, d.leaseTTL)
	if len(leases) > 0 {
		// All of one call rest on the node lease it took first.
		if lost := d.adoptNodeLease(leases[0].NodeEpoch, sent); len(lost) > 0 {
			d.log.Warn("the node's dispatch lease had lapsed; restarting its subscriptions", "subscriptions", len(lost))
			for _, w := range lost {
				d.stopWorker(w.id, w)
			}
		}
	}
	if err != nil {
		for _, l := range leases {
			d.releaseLeaseOf(context.WithoutCancel(ctx), l)
		}
		return nil, err
	}
	cur := d.currentNodeEpoch()
	return slices.DeleteFunc(leases, func(l herald.Lease) bool { return l.NodeEpoch != cur }), nil
}

// startWorker starts the worker of a subscription whose lease it holds.
func (d *Dispatcher) startWorker(ctx context.Context, st *workerStart, l herald.Lease) {
	s, ch, f := st.s, st.ch, st.f
	nw := newWorker(d, s, ch, f, l.Epoch)
	nw.nodeEpoch = l.NodeEpoch
	d.mu.Lock()
	added := d.addWorker(s.ID, nw)
	d.mu.Unlock()
	if !added {
		return // its lease ended with the node lease it rested on
	}
	started := d.life.Go(func(ctx context.Context) {
		d.running.Add(1)
		defer d.running.Add(-1)
		nw.run(ctx)
	})
	if !started { // stopping: give the lease back
		d.mu.Lock()
		d.removeWorker(s.ID, nw)
		d.mu.Unlock()
		d.releaseLeaseOf(context.WithoutCancel(ctx), l)
		return
	}
	d.log.Debug("dispatching", "subscription_id", s.ID, "epoch", l.Epoch)
}

// startMany starts the workers of many subscriptions (a page of a full
// sync) with one store call for their leases and one for their state.
// Those with nothing to do, by their cursors and retry sets, start parked
// cold: no goroutine, no store reads beyond these, so that a node starts
// 100,000 subscriptions in seconds (issue 21). It returns them: the caller
// reads the topics' heads once they are in place (wakeBehind), and wakes
// those behind. The others start as syncOne starts one.
func (d *Dispatcher) startMany(ctx context.Context, starts []workerStart) []*worker {
	if len(starts) == 0 || ctx.Err() != nil {
		return nil
	}
	ids := make([]string, len(starts))
	for i, st := range starts {
		ids[i] = st.s.ID
	}
	d.mu.Lock()
	for _, id := range ids {
		d.starting[id] = true
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		for _, id := range ids {
			delete(d.starting, id)
		}
		d.mu.Unlock()
	}()
	sent := d.cfg.Now()
	leases, err := d.takeLeases(ctx, ids, sent)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("acquire dispatch leases", "subscriptions", len(ids), "err", err)
		}
		d.mu.Lock()
		for _, id := range ids {
			d.lookAt(id, sent.Add(d.cfg.PollInterval))
		}
		d.mu.Unlock()
		return nil
	}
	taken := make(map[string]herald.Lease, len(leases))
	held := make([]string, 0, len(leases))
	for _, l := range leases {
		taken[l.SubscriptionID] = l
		held = append(held, l.SubscriptionID)
	}
	states, err := d.store.DispatchStates(ctx, held)
	if err != nil && ctx.Err() == nil {
		d.log.Warn("read the dispatch state of subscriptions; starting each on its own", "err", err)
	}
	var cold []*worker
	for i := range starts {
		st := &starts[i]
		l, ok := taken[st.s.ID]
		if !ok {
			// Another node has it (or it was just deleted): when that
			// node stopped or died, its lease ends within LeaseTTL.
			d.mu.Lock()
			d.lookAt(st.s.ID, sent.Add(d.cfg.PollInterval))
			d.mu.Unlock()
			continue
		}
		if state := states[st.s.ID]; err == nil && d.mayStartCold(ctx, st, state) {
			w := &worker{
				d: d, id: st.s.ID, topic: st.s.Topic, updatedAt: st.s.UpdatedAt, epoch: l.Epoch,
				nodeEpoch: l.NodeEpoch, parked: true,
			}
			w.setColdCursors(state.Cursors)
			w.noted = max(w.coldSeq, 0) // a head at its cursor needs no wake-up
			cold = append(cold, w)
			continue
		}
		d.startWorker(ctx, st, l)
	}
	d.mu.Lock()
	cold = slices.DeleteFunc(cold, func(w *worker) bool { return !d.addWorker(w.id, w) })
	d.cold.Add(int64(len(cold)))
	d.mu.Unlock()
	return cold
}

// mayStartCold reports whether a subscription may start parked cold: one
// that would go cold once parked (see worker.mayGoCold), of one topic
// (not a pattern, whose topics the worker lists as it starts), with an
// empty retry set.
func (d *Dispatcher) mayStartCold(ctx context.Context, st *workerStart, state herald.DispatchState) bool {
	s := &st.s
	if herald.IsPattern(s.Topic) || s.Ordered || s.RateLimit > 0 || state.Retries {
		return false
	}
	for _, c := range state.Cursors {
		if c.Topic != s.Topic {
			return false
		}
	}
	sink, err := st.ch.Open(ctx, s)
	if err != nil {
		return false // its worker reports it
	}
	_, parkable := sink.(channel.Parkable)
	_, batches := sink.(channel.Batcher)
	closeSink(sink, d.log, d.cfg.DrainTimeout)
	return parkable && !batches
}

// wakeBehind wakes the workers startMany started cold whose topic has
// events past their cursor. It reads the heads after the workers were in
// place: a commit since woke them, and one before shows in the heads.
func (d *Dispatcher) wakeBehind(ctx context.Context, cold []*worker) error {
	if len(cold) == 0 {
		return nil
	}
	heads := make(map[string]int64)
	for _, w := range cold {
		heads[w.topic] = 0
	}
	if len(heads) <= 100 {
		for name := range heads {
			t, err := d.store.GetTopic(ctx, name)
			switch {
			case herald.IsCode(err, herald.CodeNotFound):
			case err != nil:
				return d.wakeAll(cold, fmt.Errorf("read topic %s: %w", name, err))
			default:
				heads[name] = t.HeadSeq
			}
		}
	} else {
		after := ""
		for {
			ts, err := d.store.ListTopics(ctx, after, 1000)
			if err != nil {
				return d.wakeAll(cold, fmt.Errorf("list topics: %w", err))
			}
			for _, t := range ts {
				if _, ok := heads[t.Name]; ok {
					heads[t.Name] = t.HeadSeq
				}
			}
			if len(ts) < 1000 {
				break
			}
			after = ts[len(ts)-1].Name
		}
	}
	for _, w := range cold {
		// A worker woken meanwhile warms on its own goroutine: read its
		// cursors under its lock.
		var at int64 // no cursor: from the topic's first event
		for _, c := range w.coldCursorsLocked() {
			at = c.Seq
		}
		if h := heads[w.topic]; h > at {
			w.noteCommit(w.topic, h)
		}
	}
	return nil
}

// wakeAll wakes every worker, when wakeBehind cannot tell which are
// behind: each reads its topic from its cursor as it warms, and finds
// where the topic ends.
func (d *Dispatcher) wakeAll(cold []*worker, err error) error {
	for _, w := range cold {
		w.noteCommit(w.topic, math.MaxInt64)
	}
	return err
}

// resumeWorker runs a parked worker again, in a new goroutine; false when
// the dispatcher is stopping (Stop then ends the parked worker).
func (d *Dispatcher) resumeWorker(w *worker) bool {
	return d.life.Go(func(ctx context.Context) {
		d.running.Add(1)
		defer d.running.Add(-1)
		w.proceed(ctx)
	})
}

// workerExited runs once a worker has ended for good.
func (d *Dispatcher) workerExited(w *worker) {
	d.mu.Lock()
	d.removeWorker(w.id, w)
	if w.reason != "" {
		// Ended on its own (the channel did not open, the lease may
		// have lapsed): try again shortly.
		d.lookAt(w.id, d.cfg.Now().Add(d.cfg.PollInterval))
	}
	d.mu.Unlock()
	// A replacement may be waiting for this worker to exit.
	d.look(w.id)
}

// stopWorker tells a worker to stop without waiting for it: it may take up
// to DrainTimeout to finish its in-flight sends, and waiting here would
// delay every other subscription's lease renewal. Until it has exited, no
// new worker starts for the subscription (see syncOne).
func (d *Dispatcher) stopWorker(id string, w *worker) {
	d.mu.Lock()
	d.removeWorker(id, w)
	d.stopping[id] = w
	d.mu.Unlock()
	w.stop()
}

// settle writes one worker's settlement through the shared group commit.
func (d *Dispatcher) settle(ctx context.Context, item herald.SettleItem) error {
	if item.UnblockAt.IsZero() {
		item.UnblockAt = d.cfg.Now()
	}
	err, serr := d.settler.submit(context.WithoutCancel(ctx), item)
	if serr != nil {
		return serr
	}
	return err
}

func (d *Dispatcher) commitSettlements(ctx context.Context, items []herald.SettleItem) ([]error, error) {
	start := time.Now()
	errs, err := d.store.Settle(ctx, items)
	d.metrics.settleDuration.Observe(time.Since(start).Seconds())
	return errs, err
}

// senderIdle is how long a delivery goroutine waits for more work before
// it exits.
const senderIdle = 10 * time.Second

// maxUpdateTries bounds how often the dispatcher reads a subscription
// again and reapplies its change after UpdateSubscription refused its copy
// because another writer (the API, another node) changed it first.
const maxUpdateTries = 10

// disable marks a subscription disabled (called by its worker's goroutine
// once it has stopped sending) and announces it on the system topic. ranWith
// is the UpdatedAt of the subscription the worker delivered for: once the
// subscription was paused, resumed or reconfigured (a new URL) since, the
// verdict was about a configuration that is gone, and it stays as it is.
func (d *Dispatcher) disable(id string, ranWith time.Time, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s herald.Subscription
	for try := 1; ; try++ {
		var err error
		if s, err = d.store.GetSubscription(ctx, id); err != nil {
			d.log.Warn("disable subscription: read", "subscription_id", id, "err", err)
			return
		}
		if s.State != herald.StateActive || !s.UpdatedAt.Equal(ranWith) {
			d.log.Info("subscription changed meanwhile; not disabled", "subscription_id", id, "state", s.State, "reason", reason)
			return
		}
		s.State, s.StateReason, s.UpdatedAt = herald.StateDisabled, reason, d.cfg.Now().UTC()
		err = d.store.UpdateSubscription(ctx, s)
		if err == nil {
			break
		}
		if !herald.IsCode(err, herald.CodeConflict) || try == maxUpdateTries {
			d.log.Warn("disable subscription: write", "subscription_id", id, "err", err)
			return
		}
	}
	d.metrics.disabled.Inc()
	public, detail := herald.SplitReason(reason)
	d.log.Warn("subscription disabled", "subscription_id", id, "reason", public, "detail", detail)
	d.announce(ctx, herald.EventSubscriptionDisabled, s, reason)
}

func (d *Dispatcher) expire(ctx context.Context, s herald.Subscription, now time.Time) error {
	if err := d.store.DeleteSubscription(ctx, s.ID); err != nil && !herald.IsCode(err, herald.CodeNotFound) {
		return fmt.Errorf("expire subscription %s: %w", s.ID, err)
	}
	reason := fmt.Sprintf("no matching event and no API activity for %s", herald.FormatDuration(s.ExpiresAfterIdle))
	d.log.Info("subscription expired", "subscription_id", s.ID, "reason", reason)
	d.announce(ctx, herald.EventSubscriptionExpired, s, reason)
	return nil
}

// announce publishes a system event about a subscription. It carries
// what a reader of the system topic needs and no secret: the endpoint's
// scheme and host, not its URL (whose path and query often hold a token),
// and the reason without its detail (which names internal addresses).
func (d *Dispatcher) announce(ctx context.Context, typ string, s herald.Subscription, reason string) {
	now := d.cfg.Now().UTC()
	reason, _ = herald.SplitReason(reason)
	// Where it delivers, as far as its channel names it: a webhook's
	// scheme and host, never a path or query that may hold a secret.
	channelName, endpoint := cmp.Or(s.Channel, herald.ChannelWebhook), ""
	if ch, err := d.channels.Get(channelName); err == nil {
		endpoint = ch.Destination(s.Config)
	}
	body, _ := json.Marshal(map[string]any{
		"type": typ, "subscription_id": s.ID, "topic": s.Topic, "channel": channelName, "endpoint": endpoint,
		"state": s.State, "reason": reason, "time": now.Format(time.RFC3339Nano),
	})
	ev := &herald.Event{
		ID: herald.NewID(now), Topic: herald.SubscriptionsTopic, Type: typ, Key: s.ID,
		ContentType: "application/json", Payload: body, Time: now,
	}
	if d.publisher == nil {
		return
	}
	if _, err := d.publisher.Publish(ctx, PublishParams{Events: []*herald.Event{ev}, System: true, Source: "herald"}); err != nil {
		d.log.Warn("publish system event", "type", typ, "subscription_id", s.ID, "err", err)
	}
}

// startVerify sends a pending subscription's challenge in the background
// (one at a time per subscription).
func (d *Dispatcher) startVerify(ctx context.Context, s herald.Subscription) {
	d.mu.Lock()
	if d.verifying[s.ID] {
		d.mu.Unlock()
		return
	}
	d.verifying[s.ID] = true
	d.mu.Unlock()
	started := d.life.Go(func(context.Context) {
		defer func() {
			d.mu.Lock()
			delete(d.verifying, s.ID)
			// Look again for the next challenge (or, if this one could
			// not be recorded, to try once more), not at once.
			d.lookAt(s.ID, d.cfg.Now().Add(d.cfg.PollInterval))
			d.mu.Unlock()
		}()
		d.verify(ctx, s)
	})
	if !started { // stopping
		d.mu.Lock()
		delete(d.verifying, s.ID)
		d.mu.Unlock()
	}
}

// Deliver sends one event to the subscription's endpoint now, outside its
// worker (the API's test events), and records nothing. It takes a send
// slot as every delivery does, so that it too stays within MaxConcurrency
// and its destination's share: it waits for one until ctx ends, and then
// fails without sending. Its share is apart from the subscription's, so it
// does not queue behind the subscription's own deliveries. The request's
// timeout starts once it has the slot.
func (d *Dispatcher) Deliver(ctx context.Context, sub *herald.Subscription, ev *herald.Event, attempt int) herald.DeliveryResult {
	ch, err := d.channels.Get(cmp.Or(sub.Channel, herald.ChannelWebhook))
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: err.Error()}
	}
	slot := subSlot(sub.ID+" (outside its worker)", ch.Destination(sub.Config))
	if err := d.slots.acquire(ctx, slot); err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: "no-send-slot",
			Detail: "not sent: every send slot stayed in use (webhook.max-concurrency): " + err.Error()}
	}
	defer d.slots.release(slot)
	sink, err := ch.Open(ctx, sub)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: "cannot open the channel: " + err.Error()}
	}
	defer func() { _ = sink.Close(context.WithoutCancel(ctx)) }()
	return sink.Deliver(ctx, ev, attempt)
}

func (d *Dispatcher) verify(ctx context.Context, s herald.Subscription) {
	ch, err := d.channels.Get(cmp.Or(s.Channel, herald.ChannelWebhook))
	if err != nil {
		d.log.Warn("verify subscription: its channel is not offered by this node", "subscription_id", s.ID, "err", err)
		return
	}
	verifier, ok := ch.(channel.Verifier)
	if !ok {
		return // nothing to verify: created active
	}
	slot := subSlot(s.ID, ch.Destination(s.Config))
	if d.slots.acquire(ctx, slot) != nil {
		return // stopping
	}
	var res herald.DeliveryResult
	if d.cfg.Now().Before(s.VerifyDeadline) {
		cctx, cancel := context.WithTimeout(ctx, s.Timeout+5*time.Second)
		res = verifier.Verify(cctx, &s)
		cancel()
	} else {
		res = herald.DeliveryResult{Outcome: herald.Failed, Err: "not confirmed by the deadline"}
	}
	d.slots.release(slot)
	if ctx.Err() != nil {
		return
	}
	now := d.cfg.Now().UTC()
	var cur herald.Subscription
	var typ string
	for try := 1; ; try++ {
		var err error
		cur, err = d.store.GetSubscription(ctx, s.ID)
		if err != nil || cur.State != herald.StatePending || cur.Challenge != s.Challenge {
			return // deleted, paused, or verified out of band meanwhile
		}
		typ = d.recordChallenge(&cur, res, now)
		err = d.store.UpdateSubscription(ctx, cur)
		if err == nil {
			break
		}
		if !herald.IsCode(err, herald.CodeConflict) || try == maxUpdateTries {
			d.log.Warn("record verification", "subscription_id", s.ID, "err", err)
			return
		}
	}
	if res.Outcome != herald.Delivered && res.Outcome != herald.Sent {
		d.log.Info("verification challenge failed", "subscription_id", s.ID, "reason", res.Err, "detail", res.Detail)
	}
	if typ != "" {
		d.log.Info("subscription verification", "subscription_id", s.ID, "state", cur.State)
		d.announce(ctx, typ, cur, cur.StateReason)
		d.Changed(s.ID)
	}
}

// recordChallenge applies the outcome of a challenge sent at now to cur and
// returns the type of the system event to announce, if any.
func (d *Dispatcher) recordChallenge(cur *herald.Subscription, res herald.DeliveryResult, now time.Time) string {
	cur.ChallengeTries++
	cur.UpdatedAt = now
	if res.Outcome == herald.Delivered {
		cur.State, cur.StateReason, cur.Challenge = herald.StateActive, "", ""
		cur.NextChallengeAt = time.Time{}
		cur.LastActivityAt = now
		return herald.EventSubscriptionActivated
	}
	if res.Outcome == herald.Sent {
		// A person confirms out of band (a link, a code): ask once, and
		// again only if asked to (a new challenge), until the deadline.
		cur.StateReason = "waiting for confirmation: " + cmp.Or(res.Err, "a request to confirm was sent")
		cur.NextChallengeAt = cur.VerifyDeadline
		return ""
	}
	next := now.Add(d.cfg.Challenge.Delay(cur.ChallengeTries, d.rand()))
	if res.RetryAfter > 0 {
		next = now.Add(max(res.RetryAfter, time.Second))
	}
	if next.After(cur.VerifyDeadline) {
		cur.State = herald.StateFailed
		cur.StateReason = herald.JoinReason(fmt.Sprintf("the endpoint did not answer the verification challenge by %s (last: %s)", cur.VerifyDeadline.Format(time.RFC3339), failure(res)), res.Detail)
		return herald.EventSubscriptionFailed
	}
	cur.StateReason = herald.JoinReason("waiting for the endpoint to answer the verification challenge (last: "+failure(res)+")", res.Detail)
	cur.NextChallengeAt = next
	return ""
}

type dispatchMetrics struct {
	deliveries     *prometheus.CounterVec
	latency        *prometheus.HistogramVec // by channel
	filtered       prometheus.Counter
	dead           prometheus.Counter
	disabled       prometheus.Counter
	gap            prometheus.Counter
	workers        prometheus.Gauge
	settleDuration prometheus.Histogram
	lagTotal       prometheus.Gauge
	lagMax         prometheus.Gauge
	retries        prometheus.Gauge
	deadLetters    prometheus.Gauge
}

func newDispatchMetrics(reg prometheus.Registerer, slots *slotPool, wakeups, running, cold *atomic.Int64) *dispatchMetrics {
	m := &dispatchMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_total", Help: "Delivery attempts by channel (webhook, email, sms, push, ...) and outcome (delivered, failed, gone, rejected: for email a bounce).",
		}, []string{"channel", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herald_delivery_duration_seconds", Help: "Time from sending a delivery to the end of its response (each event of a batch counts the batch's time), by channel.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"channel"}),
		filtered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_deliveries_filtered_total", Help: "Events skipped because a subscription's filter did not match.",
		}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_dead_letters_total", Help: "Events that used up their retries and became dead letters.",
		}),
		disabled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_subscriptions_disabled_total", Help: "Subscriptions Herald disabled (410 Gone or failing too long).",
		}),
		gap: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_retention_gap_events_total", Help: "Events a subscription missed because it fell behind retention.",
		}),
		workers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_dispatch_subscriptions", Help: "Subscriptions this node is dispatching.",
		}),
		settleDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_settle_duration_seconds", Help: "Time to write one group of delivery settlements.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		lagTotal: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_subscription_lag_events", Help: "Events not yet settled (head seq minus cursor), summed over the subscriptions this node dispatches. Per subscription: stats.lag in the API.",
		}),
		lagMax: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_subscription_lag_max_events", Help: "The largest lag of one subscription this node dispatches.",
		}),
		retries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_retry_set_events", Help: "Events waiting in retry sets of the subscriptions this node dispatches.",
		}),
		deadLetters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_dead_letter_events", Help: "Dead letters held for the subscriptions this node dispatches.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.latency, m.filtered, m.dead, m.disabled, m.gap, m.workers, m.settleDuration,
			m.lagTotal, m.lagMax, m.retries, m.deadLetters,
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "herald_dispatch_wakeups_total", Help: "Times the subscriptions' workers woke up (for commits, results, due retries and settlements); it stays still at rest.",
			}, func() float64 { return float64(wakeups.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herald_dispatch_running", Help: "Subscriptions whose worker runs now; the others this node dispatches are parked, caught up, and cost no goroutine.",
			}, func() float64 { return float64(running.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herald_dispatch_cold", Help: "Subscriptions this node dispatches whose worker is parked cold: idle for a while, it keeps only its cursors in memory, and is rebuilt from the store when an event or change wakes it.",
			}, func() float64 { return float64(cold.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herald_delivery_slots_used", Help: "Send slots held by deliveries and challenges in flight (at most webhook.max-concurrency).",
			}, func() float64 { used, _ := slots.stats(); return float64(used) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herald_delivery_slots_waiting", Help: "Deliveries and challenges waiting for a send slot; waiting is not an attempt.",
			}, func() float64 { _, waiting := slots.stats(); return float64(waiting) }),
		)
	}
	return m
}

// observe counts one attempt of a subscription of the channel (a name
// from the registry: a bounded set).
func (m *dispatchMetrics) observe(ch string, r herald.DeliveryResult) {
	ch = cmp.Or(ch, herald.ChannelWebhook)
	switch r.Outcome {
	case herald.Delivered:
		m.deliveries.WithLabelValues(ch, "delivered").Inc()
	case herald.Gone:
		m.deliveries.WithLabelValues(ch, "gone").Inc()
	case herald.Rejected:
		m.deliveries.WithLabelValues(ch, "rejected").Inc()
	default:
		m.deliveries.WithLabelValues(ch, "failed").Inc()
	}
	m.latency.WithLabelValues(ch).Observe(r.Latency.Seconds())
}
