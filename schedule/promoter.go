// Package schedule does what Herald does at a time of its own choosing:
// the Promoter moves delayed events into their topics' logs when they are
// due, and the Scheduler publishes the ticks of schedules. Both publish
// through engine.Publisher, run under lifecycle.Runner, and act only while
// they hold a named lease in the store, so one node of a cluster does the
// work at a time.
package schedule

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/lifecycle"
)

// Publisher is the part of engine.Publisher the promoter and the
// scheduler use.
type Publisher interface {
	Publish(ctx context.Context, params engine.PublishParams) ([]herald.AppendResult, error)
}

// PromoterConfig tunes the promoter. Zero values mean the defaults.
type PromoterConfig struct {
	// NodeID names this node in the lease; required.
	NodeID string
	// Interval is the longest wait between looks at the store, which is
	// how soon an event scheduled on another node with an earlier due
	// time than any known here is seen; default 250ms. Events scheduled
	// on this node wake the promoter at once (Wake).
	Interval time.Duration
	// BatchSize is how many due events one step promotes; default 2000.
	BatchSize int
	// LeaseTTL is how long the promotion lease lasts unrenewed; default 5s.
	LeaseTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// LeasePromote names the lease the promoter holds.
const LeasePromote = "herald.promote"

// Promoter moves delayed events into their topics' logs when they are
// due, in due order: it reads a batch of due events and publishes them
// with Event.Delayed set, so the transaction that appends an event also
// deletes it from the delayed set, and appends it only if it was still
// there: a crash, a cancel or a second promoter can neither lose an
// event nor append it twice. It reads the next batch while the current
// one commits.
//
// An event that can no longer be published (its topic was deleted, or its
// payload is over a limit changed since) is dropped with a warning and
// counted in herald_delayed_dropped_total.
type Promoter struct {
	store herald.TimeStore
	pub   Publisher
	cfg   PromoterConfig
	log   *slog.Logger
	wake  chan struct{}
	run   lifecycle.Runner

	promoted prometheus.Counter
	dropped  prometheus.Counter
	lateness prometheus.Histogram
	pending  prometheus.GaugeFunc
	leader   prometheus.Gauge
}

// NewPromoter returns a promoter; it starts nothing. logger and reg may be nil.
func NewPromoter(store herald.TimeStore, pub Publisher, cfg PromoterConfig, logger *slog.Logger, reg prometheus.Registerer) *Promoter {
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 2000
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Promoter{store: store, pub: pub, cfg: cfg, log: logger, wake: make(chan struct{}, 1)}
	p.promoted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_delayed_promoted_total",
		Help: "Delayed events moved into their topics' logs at their due time.",
	})
	p.dropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_delayed_dropped_total",
		Help: "Delayed events dropped at their due time because they could no longer be published (topic deleted, limits changed).",
	})
	p.lateness = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "herald_delayed_lateness_seconds",
		Help:    "How long after its due time a delayed event joined its topic's log.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60},
	})
	p.leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_delayed_promoter_leader",
		Help: "1 while this node holds the promotion lease.",
	})
	if reg != nil {
		reg.MustRegister(p.promoted, p.dropped, p.lateness, p.leader)
	}
	return p
}

// Wake tells the promoter an event was scheduled due at due, so it looks
// again now rather than at its planned time. It never blocks.
func (p *Promoter) Wake(time.Time) {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Start runs the promoter until Stop. It may be called once.
func (p *Promoter) Start(ctx context.Context) error {
	return p.run.Start(ctx, "promoter", p.loop)
}

// Stop ends the promoter, waits for a step in progress, and gives up the
// lease so another node takes over at once. Idempotent; safe before Start.
func (p *Promoter) Stop(ctx context.Context) error {
	stopped, err := p.run.Stop(ctx)
	if stopped && err == nil {
		err = p.store.ReleaseNamedLease(ctx, LeasePromote, p.cfg.NodeID)
		p.leader.Set(0)
	}
	return err
}

func (p *Promoter) loop(ctx context.Context) {
	(&leader{
		store: p.store, lease: LeasePromote, node: p.cfg.NodeID, now: p.cfg.Now, ttl: p.cfg.LeaseTTL,
		interval: p.cfg.Interval, wake: p.wake, gauge: p.leader, log: p.log,
		failed: "promoting delayed events failed; retrying", step: func(ctx context.Context, lease *leaseHolder) (time.Time, error) {
			next, err := p.promoteDue(ctx, lease)
			if err != nil {
				return time.Time{}, err // retry at the interval
			}
			return next, nil
		},
	}).loop(ctx)
}

// PromoteDue promotes every event due now, batch by batch, without
// taking the lease (for tools and tests that run one node), and returns
// the next due time (zero if none is pending).
func (p *Promoter) PromoteDue(ctx context.Context) (time.Time, error) { return p.promoteDue(ctx, nil) }

// promoteDue is PromoteDue while the lease (nil: none needed) is held.
//
// It pipelines: while one batch is published, the next is read from
// after the batch's last position. A pass of cursor reads lasts at most
// passLength; then the next read starts from the beginning again, so an
// event scheduled meanwhile with a due time before the cursor's waits at
// most that long.
func (p *Promoter) promoteDue(ctx context.Context, lease *leaseHolder) (time.Time, error) {
	type batch struct {
		events []herald.ScheduledEvent
		err    error
	}
	read := func(after herald.DuePosition) ([]herald.ScheduledEvent, error) {
		return p.store.DueEvents(ctx, p.cfg.Now(), after, p.cfg.BatchSize)
	}
	if lease != nil && !lease.valid() {
		return time.Time{}, nil
	}
	pass := time.Now()
	due, err := read(herald.DuePosition{})
	for {
		if err != nil {
			return time.Time{}, err
		}
		if len(due) == 0 {
			return p.store.NextDue(ctx)
		}
		if lease != nil && !lease.valid() {
			return time.Time{}, nil // paused past the lease: another node may be promoting
		}
		full := len(due) >= p.cfg.BatchSize
		var next chan batch
		if full && time.Since(pass) < passLength {
			next = make(chan batch, 1)
			go func(after herald.DuePosition) {
				evs, err := read(after)
				next <- batch{evs, err}
			}(due[len(due)-1].After())
		}
		err = p.promote(ctx, due)
		var b batch
		if next != nil {
			b = <-next // never left running past this call
		}
		switch {
		case err != nil:
			return time.Time{}, err
		case !full:
			return p.store.NextDue(ctx)
		case next != nil:
			due, err = b.events, b.err
		default:
			if lease != nil && !lease.valid() {
				return time.Time{}, nil
			}
			pass = time.Now()
			due, err = read(herald.DuePosition{})
		}
	}
}

// passLength bounds a pass of pipelined reads (see promoteDue).
const passLength = time.Second

// promote publishes the events with Event.Delayed set, one call per topic
// in due order, all topics at once (the committer joins their calls in
// one transaction): each event's append removes it from the delayed set.
// The events of a topic that can no longer be published are deleted from
// the delayed set here.
func (p *Promoter) promote(ctx context.Context, due []herald.ScheduledEvent) error {
	var order []string
	byTopic := map[string][]*herald.ScheduledEvent{}
	for i := range due {
		e := &due[i]
		if _, ok := byTopic[e.Topic]; !ok {
			order = append(order, e.Topic)
		}
		byTopic[e.Topic] = append(byTopic[e.Topic], e)
	}
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for k, topic := range order {
		wg.Go(func() { errs[k] = p.publish(ctx, byTopic[topic]) })
	}
	wg.Wait()
	var refs []herald.EventRef
	var failed error
	for k, topic := range order {
		group := byTopic[topic]
		switch err := errs[k]; {
		case err == nil:
		case permanent(err):
			p.log.Warn("delayed events dropped: they can no longer be published", "topic", topic, "events", len(group), "err", err)
			p.dropped.Add(float64(len(group)))
			for _, se := range group {
				refs = append(refs, herald.EventRef{Topic: se.Topic, ID: se.ID})
			}
		default:
			failed = errors.Join(failed, err)
		}
	}
	if err := p.store.DeleteScheduled(ctx, refs); err != nil {
		return errors.Join(failed, err)
	}
	return failed
}

// publish appends one topic's due events, in due order, removing them
// from the delayed set in the same transaction.
func (p *Promoter) publish(ctx context.Context, group []*herald.ScheduledEvent) error {
	events := make([]*herald.Event, len(group))
	for i, se := range group {
		e := se.Event
		e.Time, e.Seq = time.Time{}, 0 // stamped when it joins the log
		e.Delayed = true
		events[i] = &e
	}
	res, err := p.pub.Publish(ctx, engine.PublishParams{Events: events, Source: "delayed"})
	if err != nil {
		return err
	}
	now := p.cfg.Now()
	n := 0
	for i, r := range res {
		if r.Duplicate { // no longer pending: cancelled, or promoted by another node
			continue
		}
		n++
		p.lateness.Observe(max(0, now.Sub(group[i].DueAt)).Seconds())
	}
	p.promoted.Add(float64(n))
	return nil
}

// permanent reports whether publishing again cannot succeed.
func permanent(err error) bool {
	he, ok := errors.AsType[*herald.Error](err)
	if !ok {
		return false
	}
	switch he.Code {
	case herald.CodeNotFound, herald.CodeInvalid, herald.CodeTooLarge, herald.CodeConflict:
		return true
	}
	return false
}
