// Package engine holds the moving parts between the API and the store: the
// group committer that turns many concurrent publishes into few durable
// transactions, the tail cache, the topic cache, the retention pruner, and
// the dispatcher that delivers committed events.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
)

// CommitterConfig tunes the group committer. Zero values mean the defaults.
type CommitterConfig struct {
	// MaxBatch is the number of events after which the committer stops
	// gathering waiting requests into the current transaction. A single
	// request larger than this still commits whole. Default 2000.
	MaxBatch int
	// QueueSize bounds the requests waiting for a transaction; when it is
	// full, Append blocks (pushing back on publishers) until there is room
	// or its context ends. Default 4096.
	QueueSize int
	// FailureWindow is how long a failed commit makes Health report an
	// error, unless a commit succeeds first. Default 10s.
	FailureWindow time.Duration
}

// Committer groups concurrent appends into shared store transactions: it
// takes whatever requests are waiting when the previous commit finishes and
// writes them in one Store.Append call, so one sync serves many publishes
// without adding a fixed delay. Each request's events stay in one
// transaction, so a batch publish is all or nothing.
//
// Hooks registered with OnCommit run after each commit, in commit order,
// on the committer's goroutine: no one sees an event before it is durable.
type Committer struct {
	store   herald.Store
	log     *slog.Logger
	metrics committerMetrics
	group   *group[[]*herald.Event, []herald.AppendResult]

	failureWindow time.Duration

	// txMu is held across a commit and its hooks, by the commit loop and
	// by CommitStateBatch, so the hooks hear of commits in commit order
	// (the tail cache needs each topic's seqs in order).
	txMu sync.Mutex

	mu    sync.Mutex
	hooks []func([]*herald.Event)
	// failed is the error of the last commit, and failedAt its time, while
	// no commit has succeeded since; nil otherwise.
	failed   *herald.Error
	failedAt time.Time
}

// NewCommitter returns a committer over the store. It starts nothing; call
// Start. reg may be nil.
func NewCommitter(store herald.Store, cfg CommitterConfig, logger *slog.Logger, reg prometheus.Registerer) *Committer {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 2000
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	if cfg.FailureWindow <= 0 {
		cfg.FailureWindow = 10 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Committer{store: store, log: logger, metrics: newCommitterMetrics(reg), failureWindow: cfg.FailureWindow}
	c.group = newGroup(cfg.QueueSize, cfg.MaxBatch, func(evs []*herald.Event) int { return len(evs) }, c.commit)
	return c
}

// OnCommit registers f to be called with the stored events of every commit
// (duplicates and failed events excluded), in seq order per topic. f runs on
// the committer's goroutine and must not block: it should hand the events to
// a bounded queue or wake a waiter. Register hooks before Start.
func (c *Committer) OnCommit(f func(events []*herald.Event)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hooks = append(c.hooks, f)
}

// Start launches the commit loop. It returns at once; it may be called
// once.
func (c *Committer) Start(ctx context.Context) error { return c.group.start(ctx, "committer") }

// Stop makes new Appends fail with CodeUnavailable, commits every request
// already queued, and returns when the loop has exited or ctx ends. It is
// idempotent and safe before Start.
func (c *Committer) Stop(ctx context.Context) error { return c.group.stop(ctx) }

// Append commits the events in one transaction shared with other waiting
// requests, and returns their results once the commit is durable (see
// herald.Store.Append for the result contract). When an event's id
// conflicts, none of these events is stored: its result's Err has
// CodeConflict, the other results are zero, and the requests it was
// grouped with are committed without it. If ctx ends before the
// commit is done, Append returns ctx's error and the events may or may not
// be stored: producers retry with an idempotency key.
func (c *Committer) Append(ctx context.Context, events []*herald.Event) ([]herald.AppendResult, error) {
	if len(events) == 0 {
		return nil, nil
	}
	return c.group.submit(ctx, events)
}

// commit writes the requests with one Store.Append. When an event reuses
// the id of a different event (herald.ErrAppendConflict: nothing was
// stored), the requests holding an event that failed are answered with
// their results and the others are appended again without them: one
// producer's mistake fails neither the requests it was grouped with nor
// the atomicity of its own batch. Each pass drops at least one request,
// and conflicts are rare, so this is at most a few more transactions.
func (c *Committer) commit(ctx context.Context, reqs [][]*herald.Event) ([][]herald.AppendResult, error) {
	out := make([][]herald.AppendResult, len(reqs))
	pending := make([]int, len(reqs)) // indexes in reqs still to commit
	for k := range pending {
		pending[k] = k
	}
	for {
		n := 0
		for _, k := range pending {
			n += len(reqs[k])
		}
		events := make([]*herald.Event, 0, n)
		for _, k := range pending {
			events = append(events, reqs[k]...)
		}
		c.txMu.Lock()
		start := time.Now()
		results, err := c.store.Append(ctx, events)
		c.metrics.duration.Observe(time.Since(start).Seconds())
		c.metrics.batchEvents.Observe(float64(n))
		if err != nil {
			c.txMu.Unlock()
		}
		if errors.Is(err, herald.ErrAppendConflict) && len(results) == len(events) {
			if kept := answerFailed(reqs, pending, results, out); len(kept) < len(pending) {
				if pending = kept; len(pending) == 0 {
					return out, nil
				}
				continue
			}
			err = fmt.Errorf("the store reported a conflict but failed no event: %w", err)
		}
		if err != nil {
			c.metrics.errors.Inc()
			c.log.Error("commit failed", "events", n, "requests", len(pending), "err", err)
			failed := &herald.Error{Code: herald.CodeUnavailable, Err: err,
				Message: "the event store could not commit (" + storeReason(err) + "); retry later"}
			c.mu.Lock()
			c.failed, c.failedAt = failed, time.Now()
			c.mu.Unlock()
			return nil, failed
		}
		c.mu.Lock()
		c.failed = nil
		c.mu.Unlock()
		i := 0
		for _, k := range pending {
			out[k] = results[i : i+len(reqs[k]) : i+len(reqs[k])]
			i += len(reqs[k])
		}
		c.committed(events, results)
		c.txMu.Unlock()
		return out, nil
	}
}

// CommitStateBatch commits a rule's or a view's batch (its state, the
// events it emits, its cursors) in one store transaction (see
// herald.StateStore), outside the group: it is one transaction of its
// own. Its emitted events reach the hooks like any commit's, in commit
// order with the others. Errors are the store's.
func (c *Committer) CommitStateBatch(ctx context.Context, b herald.StateBatch) ([]herald.AppendResult, error) {
	if len(b.Emits) == 0 {
		return c.store.CommitStateBatch(ctx, b) // nothing for the hooks: no order to keep
	}
	c.txMu.Lock()
	defer c.txMu.Unlock()
	start := time.Now()
	results, err := c.store.CommitStateBatch(ctx, b)
	c.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	c.metrics.batchEvents.Observe(float64(len(b.Emits)))
	c.committed(b.Emits, results)
	return results, nil
}

// answerFailed sets out for each pending request that holds an event with
// an error in results (one result per event of the pending requests, in
// order), and returns the requests left to commit.
func answerFailed(reqs [][]*herald.Event, pending []int, results []herald.AppendResult, out [][]herald.AppendResult) []int {
	var kept []int
	i := 0
	for _, k := range pending {
		res := results[i : i+len(reqs[k]) : i+len(reqs[k])]
		i += len(reqs[k])
		if slices.ContainsFunc(res, func(r herald.AppendResult) bool { return r.Err != nil }) {
			out[k] = res
		} else {
			kept = append(kept, k)
		}
	}
	return kept
}

// committed runs the hooks with the events the commit stored.
func (c *Committer) committed(events []*herald.Event, results []herald.AppendResult) {
	stored := make([]*herald.Event, 0, len(events))
	for j, res := range results {
		if !res.Duplicate && res.Err == nil {
			stored = append(stored, events[j])
		}
	}
	if len(stored) == 0 {
		return
	}
	c.mu.Lock()
	hooks := c.hooks
	c.mu.Unlock()
	for _, h := range hooks {
		h(stored)
	}
}

// Health reports whether the committer can commit, as far as it knows: an
// error (CodeUnavailable, its message the store's caller-safe reason, such
// as "disk full: ...", and how long ago) when the last commit failed less
// than FailureWindow ago and none has succeeded since; nil otherwise. The
// window lets a node whose store recovered take traffic again even when no
// publish came to prove it. Readiness checks (/readyz) call it.
func (c *Committer) Health() error {
	c.mu.Lock()
	failed, at := c.failed, c.failedAt
	c.mu.Unlock()
	ago := time.Since(at)
	if failed == nil || ago >= c.failureWindow {
		return nil
	}
	when := "just now"
	if ago >= time.Second {
		when = ago.Round(time.Second).String() + " ago"
	}
	return &herald.Error{Code: herald.CodeUnavailable, Err: failed.Err,
		Message: fmt.Sprintf("the event store's last commit failed %s (%s)", when, storeReason(failed.Err))}
}

// storeReason is the caller-safe part of a store error: the message of its
// *herald.Error, which stores write without paths or driver text.
func storeReason(err error) string {
	if he, ok := errors.AsType[*herald.Error](err); ok && he.Message != "" {
		return he.Message
	}
	return "store failure"
}

type committerMetrics struct {
	duration    prometheus.Histogram
	batchEvents prometheus.Histogram
	errors      prometheus.Counter
}

func newCommitterMetrics(reg prometheus.Registerer) committerMetrics {
	m := committerMetrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_commit_duration_seconds",
			Help:    "Time to commit one group of events to the store, sync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herald_commit_batch_events",
			Help:    "Events committed per store transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_commit_errors_total",
			Help: "Store transactions that failed; their publishers got 503.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.batchEvents, m.errors)
	}
	return m
}
