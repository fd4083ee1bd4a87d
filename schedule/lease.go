package schedule

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
)

// leaseHolder keeps a named lease and knows, by this process's monotonic
// clock, until when it may act on it: a process paused past that time
// must not act on a lease another node may have taken.
type leaseHolder struct {
	until   time.Time // monotonic reading: when the held lease ends here
	renewAt time.Time
}

// hold renews or takes the lease when it is due for renewal, and reports
// whether it is held now.
func (l *leaseHolder) hold(ctx context.Context, st herald.TimeStore, name, node string, now func() time.Time, ttl time.Duration, log *slog.Logger) bool {
	if l.valid() && time.Now().Before(l.renewAt) {
		return true
	}
	start := time.Now() // before the call: the lease may be older than its answer
	ok, err := st.AcquireNamedLease(ctx, name, node, now(), ttl)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("lease renewal failed", "lease", name, "err", err)
		}
		return l.valid()
	}
	if !ok {
		l.until = time.Time{}
		return false
	}
	// Act until a little before the store's expiry, renew at a third.
	l.until, l.renewAt = start.Add(ttl-ttl/5), start.Add(ttl/3)
	return true
}

// valid reports whether the lease may be acted on now.
func (l *leaseHolder) valid() bool { return !l.until.IsZero() && time.Now().Before(l.until) }

// leader is what the promoter and the scheduler share: a loop that, at
// each wake-up or when its timer ends, holds a named lease and, while it
// does, runs one step, then sleeps until the step's next time or the
// interval, whichever comes first.
type leader struct {
	store    herald.TimeStore
	lease    string // the lease's name
	node     string
	now      func() time.Time
	ttl      time.Duration
	interval time.Duration
	wake     <-chan struct{}
	gauge    prometheus.Gauge // 1 while this node holds the lease
	log      *slog.Logger
	failed   string // the log message of a failed step
	// step does the work under the lease and returns when it wants to run
	// again (zero: at the interval).
	step func(ctx context.Context, lease *leaseHolder) (time.Time, error)
}

func (l *leader) loop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	var lease leaseHolder
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.wake:
		}
		wait := l.interval
		if lease.hold(ctx, l.store, l.lease, l.node, l.now, l.ttl, l.log) {
			l.gauge.Set(1)
			next, err := l.step(ctx, &lease)
			if err != nil && ctx.Err() == nil {
				l.log.Warn(l.failed, "err", err)
			}
			if !next.IsZero() {
				wait = min(wait, max(0, next.Sub(l.now())))
			}
		} else {
			l.gauge.Set(0)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}
