package engine

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/heraldhq/herald"
)

// TenantLister reads the tenants (herald.TenantStore implements it).
type TenantLister interface {
	ListTenants(ctx context.Context, after string, limit int) ([]herald.Tenant, error)
}

// TenantLimitsConfig tunes TenantLimits. Zero values mean the defaults.
type TenantLimitsConfig struct {
	// Refresh is how often the tenants are read again, so a change made
	// through another node applies here too. Default 10s.
	Refresh time.Duration
	// Label maps a tenant to its metrics label value (usage.Meter.Label:
	// the tenants of metrics.tenant-labels, "_other" for the rest), so
	// the number of series stays bounded. Nil labels every tenant "_other".
	Label func(tenant string) string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// TenantLimits applies each tenant's limits on this node: how fast its
// callers and sources may publish (PublishRate), and how many deliveries
// per second (DeliveriesPerSecond) and at once (MaxInFlight) all of its
// subscriptions together may make. The publisher asks AllowPublish; the
// dispatcher's workers ask room before they send and take and release a
// place around each send.
//
// The limits are read from the store at Start, again every Refresh, and at
// once when TenantChanged says a tenant changed. A tenant it does not know
// (or the platform, "") is not limited. Safe for concurrent use.
type TenantLimits struct {
	store TenantLister
	cfg   TenantLimitsConfig
	log   *slog.Logger

	mu      sync.Mutex
	tenants map[string]*tenantGate

	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	refused  *prometheus.CounterVec
	waited   *prometheus.CounterVec
	held     *prometheus.CounterVec
	inFlight *prometheus.GaugeVec
}

// tenantGate is one tenant's limits and what it uses of them.
type tenantGate struct {
	limits   herald.TenantLimits
	publish  *rate.Limiter // nil: no publish limit
	deliver  *rate.Limiter // nil: no delivery rate limit
	inflight int
	known    bool             // the tenant exists (false: kept only for its in-flight count)
	waiters  map[*worker]bool // held back by MaxInFlight: poked when a place frees
}

// NewTenantLimits returns limits read from store; reg may be nil.
func NewTenantLimits(store TenantLister, cfg TenantLimitsConfig, logger *slog.Logger, reg prometheus.Registerer) *TenantLimits {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Second
	}
	if cfg.Label == nil {
		cfg.Label = func(string) string { return "_other" }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &TenantLimits{
		store: store, cfg: cfg, log: logger,
		tenants: make(map[string]*tenantGate),
		kick:    make(chan struct{}, 1),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_tenant_publish_refused_total",
			Help: "Publishes refused (429) because the tenant's limits.publish_rate was used up; tenants not in metrics.tenant-labels count as tenant=\"_other\".",
		}, []string{"tenant"}),
		waited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_tenant_publish_wait_seconds_total",
			Help: "Time the tenant's sources waited for its limits.publish_rate before committing their events; tenants not in metrics.tenant-labels count as tenant=\"_other\".",
		}, []string{"tenant"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_tenant_deliveries_held_total",
			Help: "Times a subscription held its deliveries back because its tenant's limit (rate_limit or max_in_flight) was reached, by limit; tenants not in metrics.tenant-labels count as tenant=\"_other\".",
		}, []string{"tenant", "limit"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_tenant_deliveries_in_flight",
			Help: "Deliveries in flight on this node to the subscriptions of tenants; tenants not in metrics.tenant-labels count as tenant=\"_other\".",
		}, []string{"tenant"}),
	}
	if reg != nil {
		reg.MustRegister(l.refused, l.waited, l.held, l.inFlight)
	}
	return l
}

// Start reads the tenants once (an error is returned: the server cannot
// apply limits it does not know) and keeps them fresh until Stop.
func (l *TenantLimits) Start(ctx context.Context) error {
	if err := l.load(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel, l.done = cancel, make(chan struct{})
	go l.run(ctx)
	return nil
}

// Stop ends the refreshing; it is idempotent and safe before Start.
func (l *TenantLimits) Stop(context.Context) error {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	return nil
}

func (l *TenantLimits) run(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(l.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.kick:
		}
		if err := l.load(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("tenant limits: read the tenants; keeping the limits known", "err", err)
		}
	}
}

// Listener is what the limits hear from the Feed: a tenant changed.
func (l *TenantLimits) Listener() Listener {
	return Listener{TenantChanged: func(string) { l.TenantChanged() }}
}

// TenantChanged makes the limits read the tenants again, soon; it never
// blocks.
func (l *TenantLimits) TenantChanged() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// load reads every tenant and applies its limits.
func (l *TenantLimits) load(ctx context.Context) error {
	all := make(map[string]herald.TenantLimits)
	for after := ""; ; {
		page, err := l.store.ListTenants(ctx, after, 1000)
		if err != nil {
			return fmt.Errorf("list tenants: %w", err)
		}
		for _, t := range page {
			all[t.ID] = t.Limits
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].ID
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, g := range l.tenants {
		if _, ok := all[id]; !ok {
			g.set(herald.TenantLimits{})
			g.known = false
			if g.inflight == 0 {
				delete(l.tenants, id)
			}
		}
	}
	for id, lim := range all {
		g := l.tenants[id]
		if g == nil {
			g = &tenantGate{}
			l.tenants[id] = g
		}
		g.known = true
		g.set(lim)
	}
	return nil
}

// set applies new limits, keeping the limiters' state when a rate stays.
func (g *tenantGate) set(lim herald.TenantLimits) {
	old := g.limits
	g.limits = lim
	if lim.PublishRate <= 0 {
		g.publish = nil
	} else if g.publish == nil || old.PublishRate != lim.PublishRate {
		g.publish = rate.NewLimiter(rate.Limit(lim.PublishRate), publishBurst(lim.PublishRate))
	}
	if lim.DeliveriesPerSecond <= 0 {
		g.deliver = nil
	} else if g.deliver == nil || old.DeliveriesPerSecond != lim.DeliveriesPerSecond {
		g.deliver = rate.NewLimiter(rate.Limit(lim.DeliveriesPerSecond), max(1, int(lim.DeliveriesPerSecond/10)))
	}
}

// publishBurst is what a tenant may publish at once: one second's worth.
func publishBurst(perSecond float64) int { return max(1, int(math.Ceil(perSecond))) }

// AllowPublish takes n events from the tenant's publish rate, or returns a
// CodeRateLimited *herald.Error with RetryAfter set (taking nothing) when
// they do not fit now. A batch counts as at most one second's worth, so
// any batch can pass once the tenant has been quiet for a second.
func (l *TenantLimits) AllowPublish(tenant string, n int) error {
	if tenant == "" || n <= 0 {
		return nil
	}
	now := l.cfg.Now()
	l.mu.Lock()
	g := l.tenants[tenant]
	if g == nil || g.publish == nil {
		l.mu.Unlock()
		return nil
	}
	n = min(n, g.publish.Burst())
	if g.publish.AllowN(now, n) {
		l.mu.Unlock()
		return nil
	}
	perSecond := g.limits.PublishRate
	wait := time.Duration((float64(n) - g.publish.TokensAt(now)) / perSecond * float64(time.Second))
	l.mu.Unlock()
	l.refused.WithLabelValues(l.cfg.Label(tenant)).Inc()
	return &herald.Error{Code: herald.CodeRateLimited, Field: "tenant", RetryAfter: max(wait, time.Second),
		Message: fmt.Sprintf("tenant %s may publish %v events per second (limits.publish_rate); try again later", tenant, perSecond)}
}

// WaitPublish takes n events from the tenant's publish rate, waiting as
// long as they need: a caller that can hold its events, as a source can in
// its service, is slowed to the rate instead of refused. It takes at most
// one second's worth at a time, so n events past the burst take n /
// publish_rate seconds. When ctx ends it returns ctx's error, giving back
// what it had reserved and not waited for.
func (l *TenantLimits) WaitPublish(ctx context.Context, tenant string, n int) error {
	var waited time.Duration
	defer func() {
		if waited > 0 {
			l.waited.WithLabelValues(l.cfg.Label(tenant)).Add(waited.Seconds())
		}
	}()
	for n > 0 && tenant != "" {
		now := l.cfg.Now()
		l.mu.Lock()
		g := l.tenants[tenant]
		if g == nil || g.publish == nil {
			l.mu.Unlock()
			return nil
		}
		k := min(n, g.publish.Burst())
		res := g.publish.ReserveN(now, k)
		l.mu.Unlock()
		if d := res.DelayFrom(now); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				res.CancelAt(l.cfg.Now())
				waited += l.cfg.Now().Sub(now)
				return ctx.Err()
			case <-t.C:
				waited += d
			}
		}
		n -= k
	}
	return nil
}

// room caps n, the sends a worker of the tenant could start, by the
// tenant's free places and delivery tokens. When the tenant's MaxInFlight
// is reached it returns 0 and pokes w once a place frees; when its rate is
// used up it returns 0 and how long until a token comes.
func (l *TenantLimits) room(w *worker, n int, now time.Time) (int, time.Duration) {
	tenant := w.sub.Tenant
	l.mu.Lock()
	g := l.tenants[tenant]
	if g == nil {
		l.mu.Unlock()
		return n, 0
	}
	if m := g.limits.MaxInFlight; m > 0 {
		if free := m - g.inflight; free < n {
			n = max(free, 0)
		}
		if n == 0 {
			if g.waiters == nil {
				g.waiters = make(map[*worker]bool)
			}
			first := !g.waiters[w]
			g.waiters[w] = true
			l.mu.Unlock()
			if first {
				l.held.WithLabelValues(l.cfg.Label(tenant), "max_in_flight").Inc()
			}
			return 0, 0
		}
	}
	if g.deliver != nil {
		tokens := int(g.deliver.TokensAt(now))
		if tokens < 1 {
			wait := time.Duration(float64(time.Second) / g.limits.DeliveriesPerSecond)
			l.mu.Unlock()
			l.held.WithLabelValues(l.cfg.Label(tenant), "rate_limit").Inc()
			return 0, wait
		}
		n = min(n, tokens)
	}
	l.mu.Unlock()
	return n, 0
}

// take records a send of the tenant's starting: one place and one token.
func (l *TenantLimits) take(tenant string, now time.Time) {
	l.mu.Lock()
	g := l.tenants[tenant]
	if g == nil {
		g = &tenantGate{} // created meanwhile, or unknown: counted so release matches
		l.tenants[tenant] = g
	}
	g.inflight++
	if g.deliver != nil {
		g.deliver.AllowN(now, 1) // room checked there was a token
	}
	l.mu.Unlock()
	l.inFlight.WithLabelValues(l.cfg.Label(tenant)).Inc()
}

// release gives back n places of the tenant and wakes the workers that
// waited for one.
func (l *TenantLimits) release(tenant string, n int) {
	if n <= 0 {
		return
	}
	l.mu.Lock()
	g := l.tenants[tenant]
	if g == nil {
		l.mu.Unlock()
		return
	}
	g.inflight = max(0, g.inflight-n)
	waiters := g.waiters
	g.waiters = nil
	if g.inflight == 0 && !g.known {
		delete(l.tenants, tenant)
	}
	l.mu.Unlock()
	l.inFlight.WithLabelValues(l.cfg.Label(tenant)).Sub(float64(n))
	for w := range waiters {
		w.poke()
	}
}

// InFlight returns the deliveries in flight to the tenant's subscriptions
// on this node.
func (l *TenantLimits) InFlight(tenant string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.tenants[tenant]; g != nil {
		return g.inflight
	}
	return 0
}
