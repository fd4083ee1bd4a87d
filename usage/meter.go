// Package usage counts what each tenant uses (events published, deliveries
// by outcome, bytes) per UTC day. Counting is a map update under a mutex;
// the counts reach the store (herald.UsageStore) in one transaction per
// flush interval, so usage costs the hot paths no store write.
package usage

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
)

// DefaultFlushInterval is how often counts are written by default.
const DefaultFlushInterval = 10 * time.Second

// OtherTenants is the tenant label of every tenant not named in
// Config.LabelTenants: it cannot be a tenant id, which starts with a
// letter or digit.
const OtherTenants = "_other"

// Config tunes a Meter. Zero values are the defaults.
type Config struct {
	FlushInterval time.Duration
	// LabelTenants are the tenants that get their own value of the
	// tenant label of herald_tenant_* metrics; the others share
	// OtherTenants, so the number of series stays bounded.
	LabelTenants []string
	Now          func() time.Time
}

type dayKey struct {
	tenant string
	day    time.Time
}

// Meter aggregates usage in memory and flushes it to the store. Its
// counting methods are safe for concurrent use and never block on I/O.
type Meter struct {
	store herald.UsageStore
	cfg   Config
	log   *slog.Logger

	mu      sync.Mutex
	pending map[dayKey]*herald.UsageCounts

	flushMu sync.Mutex // one flush at a time

	published  *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	flushFails prometheus.Counter

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New returns a meter over the store; Start begins its flushes.
func New(store herald.UsageStore, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Meter {
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Meter{store: store, cfg: cfg, log: log, pending: map[dayKey]*herald.UsageCounts{},
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_tenant_events_published_total",
			Help: "Events published by a tenant's callers; tenants not in metrics.tenant-labels count as tenant=\"_other\".",
		}, []string{"tenant"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_tenant_deliveries_total",
			Help: "Delivery attempts to a tenant's subscriptions by outcome (succeeded, failed, dead_lettered); tenants not in metrics.tenant-labels count as tenant=\"_other\".",
		}, []string{"tenant", "outcome"}),
		flushFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_usage_flush_failures_total",
			Help: "Usage flushes the store refused; their counts are kept and written with the next flush.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.deliveries, m.flushFails)
	}
	return m
}

// Label is the value of the tenant label for the tenant's metrics: the
// tenant itself when metrics.tenant-labels lists it, else OtherTenants.
func (m *Meter) Label(tenant string) string { return m.label(tenant) }

func (m *Meter) label(tenant string) string {
	if slices.Contains(m.cfg.LabelTenants, tenant) {
		return tenant
	}
	return OtherTenants
}

// add applies f to the counts of the tenant today.
func (m *Meter) add(tenant string, f func(c *herald.UsageCounts)) {
	now := m.cfg.Now().UTC()
	k := dayKey{tenant, time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)}
	m.mu.Lock()
	c := m.pending[k]
	if c == nil {
		c = &herald.UsageCounts{}
		m.pending[k] = c
	}
	f(c)
	m.mu.Unlock()
}

// Published counts events a tenant's caller published ("" for the
// platform's own).
func (m *Meter) Published(tenant string, events, bytes int) {
	if events <= 0 {
		return
	}
	m.add(tenant, func(c *herald.UsageCounts) {
		c.EventsPublished += int64(events)
		c.BytesPublished += int64(bytes)
	})
	if tenant != "" {
		m.published.WithLabelValues(m.label(tenant)).Add(float64(events))
	}
}

// Delivery counts one delivery attempt to a subscription of the tenant.
func (m *Meter) Delivery(tenant string, ok bool, bytes int) {
	m.add(tenant, func(c *herald.UsageCounts) {
		if ok {
			c.DeliveriesSucceeded++
			c.BytesDelivered += int64(bytes)
		} else {
			c.DeliveriesFailed++
		}
	})
	if tenant != "" {
		outcome := "failed"
		if ok {
			outcome = "succeeded"
		}
		m.deliveries.WithLabelValues(m.label(tenant), outcome).Inc()
	}
}

// DeadLettered counts an event a subscription of the tenant gave up on.
func (m *Meter) DeadLettered(tenant string) {
	m.add(tenant, func(c *herald.UsageCounts) { c.DeadLettered++ })
	if tenant != "" {
		m.deliveries.WithLabelValues(m.label(tenant), "dead_lettered").Inc()
	}
}

// Flush writes the pending counts. On failure they are kept for the next
// flush (counted twice never: they leave the map only on success).
func (m *Meter) Flush(ctx context.Context) error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	m.mu.Lock()
	taken := m.pending
	m.pending = map[dayKey]*herald.UsageCounts{}
	m.mu.Unlock()
	if len(taken) == 0 {
		return nil
	}
	rows := make([]herald.UsageDay, 0, len(taken))
	for k, c := range taken {
		rows = append(rows, herald.UsageDay{Tenant: k.tenant, Day: k.day, UsageCounts: *c})
	}
	if err := m.store.AddUsage(ctx, rows); err != nil {
		m.flushFails.Inc()
		m.mu.Lock()
		for k, c := range taken { // put them back under what came meanwhile
			if p := m.pending[k]; p != nil {
				p.Add(*c)
			} else {
				m.pending[k] = c
			}
		}
		m.mu.Unlock()
		return err
	}
	return nil
}

// List returns the stored usage that matches f with this node's counts
// not yet flushed added, by day then tenant.
func (m *Meter) List(ctx context.Context, f herald.UsageFilter) ([]herald.UsageDay, error) {
	// Hold flushMu so a flush in progress is neither missed nor counted twice.
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	rows, err := m.store.ListUsage(ctx, f)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, c := range m.pending {
		if k.day.Before(f.From) || k.day.After(f.To) || !f.AllTenants && k.tenant != f.Tenant {
			continue
		}
		i := slices.IndexFunc(rows, func(r herald.UsageDay) bool { return r.Tenant == k.tenant && r.Day.Equal(k.day) })
		if i < 0 {
			rows = append(rows, herald.UsageDay{Tenant: k.tenant, Day: k.day})
			i = len(rows) - 1
		}
		rows[i].Add(*c)
	}
	slices.SortFunc(rows, func(a, b herald.UsageDay) int {
		if c := a.Day.Compare(b.Day); c != 0 {
			return c
		}
		return strings.Compare(a.Tenant, b.Tenant)
	})
	return rows, nil
}

// Start begins flushing every FlushInterval.
func (m *Meter) Start(ctx context.Context) error {
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.done)
		t := time.NewTicker(m.cfg.FlushInterval)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				if err := m.Flush(context.WithoutCancel(ctx)); err != nil {
					m.log.Warn("usage: flush", "err", err)
				}
			}
		}
	}()
	return nil
}

// Stop ends the flushes and writes what is pending. It is idempotent and
// safe before Start.
func (m *Meter) Stop(ctx context.Context) error {
	var err error
	m.once.Do(func() {
		if m.stop != nil {
			close(m.stop)
			<-m.done
		}
		err = m.Flush(ctx)
	})
	return err
}
