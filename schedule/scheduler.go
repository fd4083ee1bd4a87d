package schedule

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/lifecycle"
)

// SchedulerConfig tunes the scheduler. Zero values mean the defaults.
type SchedulerConfig struct {
	// NodeID names this node in the lease; required.
	NodeID string
	// Interval is the longest wait between looks at the schedules, which
	// is how soon a change made on another node is seen; default 1s.
	// Changes made on this node wake the scheduler at once (Wake).
	Interval time.Duration
	// LeaseTTL is how long the firing lease lasts unrenewed; default 5s.
	LeaseTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// LeaseSchedules names the lease the scheduler holds.
const LeaseSchedules = "herald.schedules"

// Scheduler publishes the ticks of every schedule through the publisher,
// on the one node that holds the herald.schedules lease. Each tick is
// published exactly once: its event's idempotency key is derived from the
// schedule's name and the tick time (IdempotencyKey), so a tick published
// again (after a crash between the publish and recording the tick, or by
// two nodes in the moment a lease moves) is a duplicate within the topic's
// dedup window; the last tick is recorded in the store after the publish.
type Scheduler struct {
	store herald.TimeStore
	pub   Publisher
	cfg   SchedulerConfig
	log   *slog.Logger
	wake  chan struct{}
	run   lifecycle.Runner

	fired   *prometheus.CounterVec
	errors  prometheus.Counter
	leader  prometheus.Gauge
	latency prometheus.Histogram
}

// NewScheduler returns a scheduler; it starts nothing. logger and reg may be nil.
func NewScheduler(store herald.TimeStore, pub Publisher, cfg SchedulerConfig, logger *slog.Logger, reg prometheus.Registerer) *Scheduler {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
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
	s := &Scheduler{store: store, pub: pub, cfg: cfg, log: logger, wake: make(chan struct{}, 1)}
	s.fired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_schedule_ticks_total",
		Help: "Schedule ticks published, by outcome: published, or duplicate (already published: a repeat the dedup absorbed).",
	}, []string{"outcome"})
	s.errors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_schedule_errors_total",
		Help: "Ticks that failed to publish; they are tried again.",
	})
	s.leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herald_schedule_leader",
		Help: "1 while this node holds the scheduling lease.",
	})
	s.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "herald_schedule_tick_lateness_seconds",
		Help:    "How long after its tick time a tick was published.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 15, 60, 600},
	})
	if reg != nil {
		reg.MustRegister(s.fired, s.errors, s.leader, s.latency)
	}
	return s
}

// Wake makes the scheduler look at the schedules now (one was created,
// changed or resumed). It never blocks.
func (s *Scheduler) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Start runs the scheduler until Stop. It may be called once.
func (s *Scheduler) Start(ctx context.Context) error {
	return s.run.Start(ctx, "scheduler", s.loop)
}

// Stop ends the scheduler, waits for a round in progress and gives up the
// lease. Idempotent; safe before Start.
func (s *Scheduler) Stop(ctx context.Context) error {
	stopped, err := s.run.Stop(ctx)
	if stopped && err == nil {
		err = s.store.ReleaseNamedLease(ctx, LeaseSchedules, s.cfg.NodeID)
		s.leader.Set(0)
	}
	return err
}

func (s *Scheduler) loop(ctx context.Context) {
	(&leader{
		store: s.store, lease: LeaseSchedules, node: s.cfg.NodeID, now: s.cfg.Now, ttl: s.cfg.LeaseTTL,
		interval: s.cfg.Interval, wake: s.wake, gauge: s.leader, log: s.log,
		failed: "schedule round failed; retrying", step: s.round,
	}).loop(ctx)
}

// Round fires what is due now without the lease (for tools and tests that
// run one node) and returns the next tick time of any schedule.
func (s *Scheduler) Round(ctx context.Context) (time.Time, error) { return s.round(ctx, nil) }

func (s *Scheduler) round(ctx context.Context, lease *leaseHolder) (time.Time, error) {
	var next time.Time
	after := ""
	for {
		page, err := s.store.ListSchedules(ctx, after, 500)
		if err != nil {
			return next, err
		}
		for i := range page {
			sch := &page[i]
			after = sch.Name
			if lease != nil && !lease.valid() {
				return next, nil // paused past the lease: another node may fire now
			}
			if err := s.fire(ctx, sch); err != nil {
				s.errors.Inc()
				s.log.Warn("schedule tick failed; retrying", "schedule", sch.Name, "err", err)
				continue
			}
			if sch.Paused {
				continue
			}
			if n := Next(sch, base(sch)); !n.IsZero() && (next.IsZero() || n.Before(next)) {
				next = n
			}
		}
		if len(page) < 500 {
			return next, nil
		}
	}
}

// fire publishes the due ticks of one schedule and records the last one
// in sch (and the store).
func (s *Scheduler) fire(ctx context.Context, sch *herald.Schedule) error {
	now := s.cfg.Now()
	fire, last := Due(sch, now)
	if last.IsZero() {
		return nil
	}
	for _, tick := range fire {
		res, err := s.pub.Publish(ctx, engine.PublishParams{Events: []*herald.Event{TickEvent(sch, tick)}, Source: "schedule"})
		if err != nil {
			if permanent(err) {
				// The topic is gone or the event no longer fits it: the
				// tick cannot ever be published; say so and move on.
				s.log.Warn("schedule tick dropped: it cannot be published", "schedule", sch.Name, "tick", tick, "err", err)
				continue
			}
			return err
		}
		if res[0].Duplicate {
			s.fired.WithLabelValues("duplicate").Inc()
		} else {
			s.fired.WithLabelValues("published").Inc()
			s.latency.Observe(max(0, s.cfg.Now().Sub(tick)).Seconds())
		}
	}
	if err := s.store.AdvanceSchedule(ctx, sch.Name, last); err != nil {
		if herald.IsCode(err, herald.CodeNotFound) {
			return nil // deleted meanwhile
		}
		return err
	}
	sch.LastTick = last
	return nil
}
