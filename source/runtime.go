package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/lifecycle"
)

// Publisher commits events by the rules of publishing (engine.Publisher).
type Publisher interface {
	Publish(ctx context.Context, p engine.PublishParams) ([]herald.AppendResult, error)
}

// RuntimeConfig tunes the runtime. Zero values take the defaults.
type RuntimeConfig struct {
	// NodeID names this node in shard leases.
	NodeID string
	// Owns tells whether this node should run a shard, named
	// "<source id>/<shard>" (cluster.Cluster.Owns: rendezvous hashing over
	// the live nodes); nil runs every shard.
	Owns func(key string) bool
	// LeaseTTL is how long a shard's lease lasts without renewal (10s); a
	// dead node's shards move to the others within it.
	LeaseTTL time.Duration
	// SyncInterval is how often the runtime reads the sources (2s), besides
	// when Changed is called.
	SyncInterval time.Duration
	// ReportInterval is how often a shard's status is written (2s).
	ReportInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait before a failed shard runs
	// again (200ms, 30s): it doubles with each failure in a row, with
	// jitter.
	MinBackoff, MaxBackoff time.Duration
}

// RuntimeDeps are the parts the runtime runs on; Store, Publisher and
// Kinds are required.
type RuntimeDeps struct {
	Store     herald.SourceStore
	Publisher Publisher
	Kinds     *Registry
	Logger    *slog.Logger
	Registry  prometheus.Registerer
	// Namespace returns the topic pattern a tenant's sources may publish
	// to (its topic prefix, or "tenants.{id}.>"); an event of a tenant's
	// source outside it is refused (CodeForbidden), as a publish with the
	// tenant's key would be. Nil refuses every tenant's source.
	Namespace func(ctx context.Context, tenant string) (string, error)
}

// Runtime runs the sources: each shard of each active source whose kind is
// a Runner, on the node that owns it, under a lease; and it publishes what
// Receiver kinds receive. Start and Stop it with the server; Changed wakes
// it after the API changed a source.
type Runtime struct {
	cfg   RuntimeConfig
	deps  RuntimeDeps
	log   *slog.Logger
	life  lifecycle.Runner
	poke  chan struct{}
	m     *metrics
	mu    sync.Mutex
	runs  map[shardKey]*shardRun
	cache sync.Map // source id -> *cachedMapper
}

type shardKey struct {
	id    string
	shard int
}

type shardRun struct {
	version int64
	cancel  context.CancelFunc
	done    chan struct{}
}

type cachedMapper struct {
	topic, mapping string
	mp             *mapper
}

// NewRuntime returns a runtime; it starts nothing.
func NewRuntime(deps RuntimeDeps, cfg RuntimeConfig) *Runtime {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = 2 * time.Second
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = 2 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node"
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{cfg: cfg, deps: deps, log: log, poke: make(chan struct{}, 1),
		m: newMetrics(deps.Registry), runs: map[shardKey]*shardRun{}}
}

// Start runs the runtime until Stop.
func (r *Runtime) Start(ctx context.Context) error {
	return r.life.Start(ctx, "sources", r.manage)
}

// Stop stops every shard (each finishes its current batch or abandons it
// unacknowledged, and releases its lease) and waits for them.
func (r *Runtime) Stop(ctx context.Context) error {
	_, err := r.life.Stop(ctx)
	return err
}

// Changed tells the runtime that sources changed (created, updated,
// paused, deleted) or that cluster membership did: it syncs at once.
func (r *Runtime) Changed() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

func (r *Runtime) manage(ctx context.Context) {
	t := time.NewTicker(r.cfg.SyncInterval)
	defer t.Stop()
	for {
		if err := r.sync(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("sources: sync failed", "err", err)
		}
		select {
		case <-ctx.Done():
			r.mu.Lock()
			runs := make([]*shardRun, 0, len(r.runs))
			for _, run := range r.runs {
				run.cancel()
				runs = append(runs, run)
			}
			r.mu.Unlock()
			for _, run := range runs {
				<-run.done
			}
			return
		case <-t.C:
		case <-r.poke:
		}
	}
}

func (r *Runtime) sync(ctx context.Context) error {
	sources, err := r.deps.Store.ListSources(ctx, "", 0)
	if err != nil {
		return err
	}
	want := map[shardKey]herald.Source{}
	for _, s := range sources {
		k, ok := r.deps.Kinds.Get(s.Kind)
		if _, runs := k.(Runner); !ok || !runs || s.State != herald.SourceActive {
			continue
		}
		for i := range max(s.Shards, 1) {
			key := shardKey{s.ID, i}
			if r.cfg.Owns == nil || r.cfg.Owns(s.ID+"/"+strconv.Itoa(i)) {
				want[key] = s
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, run := range r.runs {
		if s, ok := want[key]; !ok || s.Version != run.version {
			run.cancel()
			<-run.done // it releases its lease as it ends
			delete(r.runs, key)
		}
	}
	var running int
	for key, s := range want {
		if _, ok := r.runs[key]; ok {
			running++
			continue
		}
		runCtx, cancel := context.WithCancel(ctx)
		run := &shardRun{version: s.Version, cancel: cancel, done: make(chan struct{})}
		if !r.life.Go(func(context.Context) {
			defer close(run.done)
			r.runShard(runCtx, s, key.shard)
		}) {
			cancel()
			return nil
		}
		r.runs[key] = run
		running++
	}
	r.m.running.Set(float64(running))
	return nil
}

// shardState is a running shard's status, written by its runner.
type shardState struct {
	mu sync.Mutex
	herald.SourceShardStatus
}

func (st *shardState) fail(err error, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.State = herald.ShardRetrying
	st.Errors++
	st.LastError = err.Error()
	st.LastErrorAt = now
}

func (st *shardState) snapshot(now time.Time) herald.SourceShardStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.SourceShardStatus
	s.ReportedAt = now
	return s
}

// runShard keeps one shard running while ctx lives: it takes the lease,
// runs the kind, renews the lease, reports the status, and after a failure
// waits a backoff and runs it again.
func (r *Runtime) runShard(ctx context.Context, s herald.Source, shard int) {
	k, _ := r.deps.Kinds.Get(s.Kind)
	runner := k.(Runner)
	log := r.log.With("source", s.ID, "kind", s.Kind, "shard", shard)
	st := &shardState{SourceShardStatus: herald.SourceShardStatus{Lag: -1, State: herald.ShardStarting}}
	fails := 0
	label := strconv.Itoa(shard)
	defer r.m.lag.DeleteLabelValues(s.ID, label)
	for ctx.Err() == nil {
		epoch, err := r.deps.Store.AcquireSourceLease(ctx, s.ID, shard, r.cfg.NodeID, time.Now(), r.cfg.LeaseTTL)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !herald.IsCode(err, herald.CodeConflict) {
				log.Warn("sources: cannot take the shard's lease", "err", err)
			}
			if herald.IsCode(err, herald.CodeNotFound) {
				return
			}
			wait(ctx, r.cfg.LeaseTTL/4)
			continue
		}
		var until atomic.Int64 // the lease's end by this process's monotonic clock, as nanos since start
		start := time.Now()
		until.Store(int64(r.cfg.LeaseTTL * 9 / 10))
		live := func() bool { return int64(time.Since(start)) < until.Load() }
		err = r.runLeased(ctx, runner, s, shard, epoch, st, live, func() bool {
			at := time.Now()
			e, err := r.deps.Store.AcquireSourceLease(ctx, s.ID, shard, r.cfg.NodeID, at, r.cfg.LeaseTTL)
			if err != nil || e != epoch {
				return false
			}
			until.Store(int64(at.Sub(start) + r.cfg.LeaseTTL*9/10))
			return true
		}, log)
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			fails = 0
			continue // the lease was lost: take it again, or wait for its holder's to end
		}
		fails++
		st.fail(err, time.Now())
		r.m.errors.WithLabelValues(s.ID, s.Kind).Inc()
		_ = r.deps.Store.ReportSource(context.WithoutCancel(ctx), s.ID, shard, epoch, st.snapshot(time.Now()))
		d := r.backoff(fails)
		log.Warn("sources: shard failed; retrying", "err", err, "retry_in", d)
		wait(ctx, d)
	}
	// Release whatever lease this node holds, so another node may take the
	// shard at once.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if shards, err := r.deps.Store.SourceShards(rctx, s.ID); err == nil {
		for _, sh := range shards {
			if sh.Shard == shard && sh.Node == r.cfg.NodeID {
				_ = r.deps.Store.ReportSource(rctx, s.ID, shard, sh.Epoch, st.snapshot(time.Now()))
				_ = r.deps.Store.ReleaseSourceLease(rctx, s.ID, shard, r.cfg.NodeID, sh.Epoch)
			}
		}
	}
}

// runLeased runs the kind under the lease until it fails (its error), the
// lease is lost (nil) or ctx ends.
func (r *Runtime) runLeased(ctx context.Context, runner Runner, s herald.Source, shard int, epoch int64,
	st *shardState, live func() bool, renew func() bool, log *slog.Logger) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	label := strconv.Itoa(shard)
	sh := &Shard{Source: s, Index: shard, Count: max(s.Shards, 1), Logger: log}
	sh.publish = func(pctx context.Context, msgs []Message) error {
		if !live() {
			return fmt.Errorf("the lease on shard %d ran out before it could be renewed", shard)
		}
		dups, err := r.publish(pctx, s, msgs, "source")
		if err == nil {
			st.mu.Lock()
			st.EventsIn += int64(len(msgs))
			st.Duplicates += int64(dups)
			st.State = herald.ShardRunning
			st.mu.Unlock()
		}
		return err
	}
	sh.running = func() {
		st.mu.Lock()
		st.State = herald.ShardRunning
		st.mu.Unlock()
	}
	sh.lag = func(n int64) {
		st.mu.Lock()
		st.Lag = n
		st.mu.Unlock()
		r.m.lag.WithLabelValues(s.ID, label).Set(float64(n))
	}
	errc := make(chan error, 1)
	go func() { errc <- runner.Run(runCtx, sh) }()
	renewT := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer renewT.Stop()
	reportT := time.NewTicker(r.cfg.ReportInterval)
	defer reportT.Stop()
	for {
		select {
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil || errors.Is(err, context.Canceled) {
				err = errors.New("the source stopped by itself")
			}
			return err
		case <-renewT.C:
			if !renew() {
				cancel()
				<-errc
				if ctx.Err() == nil {
					log.Info("sources: lost the shard's lease")
				}
				return nil
			}
		case <-reportT.C:
			if err := r.deps.Store.ReportSource(ctx, s.ID, shard, epoch, st.snapshot(time.Now())); herald.IsCode(err, herald.CodeConflict) {
				cancel()
				<-errc
				return nil
			}
		}
	}
}

func (r *Runtime) backoff(fails int) time.Duration {
	d := r.cfg.MinBackoff
	for i := 1; i < fails && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.cfg.MaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.2*rand.Float64()))
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// publish maps the messages of source s and commits them, all or none,
// and returns how many were duplicates.
func (r *Runtime) publish(ctx context.Context, s herald.Source, msgs []Message, who string) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	mp, err := r.mapper(s)
	if err != nil {
		return 0, err
	}
	events := make([]*herald.Event, len(msgs))
	for i := range msgs {
		events[i] = mp.event(s.ID, &msgs[i])
	}
	if err := r.inNamespace(ctx, s, events); err != nil {
		return 0, err
	}
	// WaitRate: over its tenant's publish rate a running source is slowed
	// to it, its messages waiting in their service, rather than failed.
	res, err := r.deps.Publisher.Publish(ctx, engine.PublishParams{Events: events, Source: who, Batch: len(events) > 1,
		Tenant: s.Tenant, WaitRate: true})
	if err != nil {
		return 0, fmt.Errorf("publish %d events: %w", len(events), err)
	}
	dups := 0
	for _, x := range res {
		if x.Duplicate {
			dups++
		}
	}
	r.m.in.WithLabelValues(s.ID, s.Kind).Add(float64(len(res)))
	r.m.dups.WithLabelValues(s.ID, s.Kind).Add(float64(dups))
	return dups, nil
}

// inNamespace refuses the events of a tenant's source whose topics are
// outside the tenant's namespace.
func (r *Runtime) inNamespace(ctx context.Context, s herald.Source, events []*herald.Event) error {
	if s.Tenant == "" {
		return nil
	}
	if r.deps.Namespace == nil {
		return herald.Errorf(herald.CodeForbidden, "source %s belongs to tenant %s, and this server has no tenants' namespaces", s.ID, s.Tenant)
	}
	ns, err := r.deps.Namespace(ctx, s.Tenant)
	if err != nil {
		return fmt.Errorf("the namespace of tenant %s: %w", s.Tenant, err)
	}
	for _, e := range events {
		if !herald.MatchTopic(ns, e.Topic) {
			return &herald.Error{Code: herald.CodeForbidden, Field: "topic",
				Message: fmt.Sprintf("source %s of tenant %s may publish only to topics matching %s, not %q", s.ID, s.Tenant, ns, e.Topic)}
		}
	}
	return nil
}

func (r *Runtime) mapper(s herald.Source) (*mapper, error) {
	if c, ok := r.cache.Load(s.ID); ok {
		if c := c.(*cachedMapper); c.topic == s.Topic && c.mapping == string(s.Mapping) {
			return c.mp, nil
		}
	}
	mp, err := newMapper(s.Topic, s.Mapping)
	if err != nil {
		return nil, err
	}
	r.cache.Store(s.ID, &cachedMapper{topic: s.Topic, mapping: string(s.Mapping), mp: mp})
	return mp, nil
}

// Received is the outcome of an inbound message.
type Received struct {
	ID        string
	Topic     string
	Seq       int64
	Duplicate bool
}

// Receive handles an inbound request for source id (POST
// /v1/inbound/{source}): it verifies it by the source's kind and commits
// its event, returning after the commit. CodeNotFound for an unknown
// source or one that is not inbound; CodeUnauthorized when verification
// fails (counted); CodeUnavailable while the source is paused, so the
// sender retries later.
func (r *Runtime) Receive(ctx context.Context, id string, header http.Header, body []byte) (Received, error) {
	s, err := r.deps.Store.GetSource(ctx, id)
	if err != nil {
		return Received{}, err
	}
	k, _ := r.deps.Kinds.Get(s.Kind)
	recv, ok := k.(Receiver)
	if !ok {
		return Received{}, herald.Errorf(herald.CodeNotFound, "source %s does not receive inbound requests (its kind is %s)", id, s.Kind)
	}
	if s.State != herald.SourceActive {
		return Received{}, herald.Errorf(herald.CodeUnavailable, "source %s is paused; try again later", id)
	}
	msg, err := recv.Receive(s.Config, header, body, time.Now())
	if err != nil {
		if herald.IsCode(err, herald.CodeUnauthorized) {
			r.m.rejected.WithLabelValues(s.ID).Inc()
		}
		return Received{}, err
	}
	mp, err := r.mapper(s)
	if err != nil {
		return Received{}, err
	}
	ev := mp.event(s.ID, &msg)
	if err := r.inNamespace(ctx, s, []*herald.Event{ev}); err != nil {
		r.m.errors.WithLabelValues(s.ID, s.Kind).Inc()
		return Received{}, err
	}
	res, err := r.deps.Publisher.Publish(ctx, engine.PublishParams{Events: []*herald.Event{ev}, Source: "source", Tenant: s.Tenant})
	if err != nil {
		r.m.errors.WithLabelValues(s.ID, s.Kind).Inc()
		return Received{}, err
	}
	r.m.in.WithLabelValues(s.ID, s.Kind).Inc()
	if res[0].Duplicate {
		r.m.dups.WithLabelValues(s.ID, s.Kind).Inc()
	}
	return Received{ID: res[0].ID, Topic: ev.Topic, Seq: res[0].Seq, Duplicate: res[0].Duplicate}, nil
}

type metrics struct {
	in, dups, errors *prometheus.CounterVec
	rejected         *prometheus.CounterVec
	lag              *prometheus.GaugeVec
	running          prometheus.Gauge
}

// newMetrics makes the runtime's metrics. Sources are few and made by
// administrators (at most herald.MaxSources), so their ids are a bounded
// label.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		in: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_source_events_total",
			Help: "Messages a source published as events (duplicates included), by source and kind."}, []string{"source", "kind"}),
		dups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_source_duplicates_total",
			Help: "Messages a source delivered again that Herald absorbed as duplicates, by source and kind."}, []string{"source", "kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_source_errors_total",
			Help: "Failures of a source (its service unreachable, a publish refused), each followed by a retry with backoff."}, []string{"source", "kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herald_source_inbound_rejected_total",
			Help: "Inbound requests refused because their signature did not verify, by source."}, []string{"source"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "herald_source_lag",
			Help: "Messages waiting in a source's service for a shard this node runs (-1: unknown)."}, []string{"source", "shard"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "herald_source_shards_running",
			Help: "Source shards this node runs."}),
	}
	if reg != nil {
		reg.MustRegister(m.in, m.dups, m.errors, m.rejected, m.lag, m.running)
	}
	return m
}
