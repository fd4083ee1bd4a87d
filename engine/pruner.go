package engine

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/lifecycle"
)

// PrunerConfig tunes the retention pruner. Zero values mean the defaults.
type PrunerConfig struct {
	Interval  time.Duration // between passes; default 1m
	BatchSize int           // rows per store call; default 2000
	// AuditRetention is how long audit log entries are kept; 0 keeps
	// them forever.
	AuditRetention time.Duration
	Now            func() time.Time // the clock; nil means time.Now
}

// Pruner deletes events past their topic's retention and expired dedup keys,
// in small batches so publishing is never stalled behind it.
type Pruner struct {
	store   herald.Store
	cfg     PrunerConfig
	log     *slog.Logger
	deleted prometheus.Counter

	run lifecycle.Runner
}

// NewPruner returns a pruner over the store; it starts nothing. reg may be nil.
func NewPruner(store herald.Store, cfg PrunerConfig, logger *slog.Logger, reg prometheus.Registerer) *Pruner {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 2000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pruner{store: store, cfg: cfg, log: logger}
	p.deleted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_pruned_rows_total",
		Help: "Events, dedup keys and audit log entries deleted because their retention or window passed.",
	})
	if reg != nil {
		reg.MustRegister(p.deleted)
	}
	return p
}

// Start runs a pass at once and then one every Interval until Stop. It
// may be called once.
func (p *Pruner) Start(ctx context.Context) error {
	return p.run.Start(ctx, "pruner", p.loop)
}

// Stop ends the pruner and waits for a pass in progress to stop. It is
// idempotent and safe before Start.
func (p *Pruner) Stop(ctx context.Context) error {
	_, err := p.run.Stop(ctx)
	return err
}

func (p *Pruner) loop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := p.Pass(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("retention pass failed", "deleted", n, "err", err)
		} else if n > 0 {
			p.log.Debug("retention pass", "deleted", n)
		}
		t.Reset(p.cfg.Interval)
	}
}

// Pass prunes until nothing expired is left, events and dedup keys, then
// audit log entries, and returns how many rows it deleted.
func (p *Pruner) Pass(ctx context.Context) (int64, error) {
	var total int64
	for {
		n, err := p.store.Prune(ctx, p.cfg.Now(), p.cfg.BatchSize)
		total += n
		p.deleted.Add(float64(n))
		if err != nil {
			return total, err
		}
		if n < int64(p.cfg.BatchSize) {
			break
		}
	}
	if p.cfg.AuditRetention <= 0 {
		return total, nil
	}
	for {
		n, err := p.store.PruneAudit(ctx, p.cfg.Now().Add(-p.cfg.AuditRetention), p.cfg.BatchSize)
		total += n
		p.deleted.Add(float64(n))
		if err != nil || n < int64(p.cfg.BatchSize) {
			return total, err
		}
	}
}
