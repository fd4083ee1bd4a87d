package schedule

import (
	"context"
	"log/slog"
	"time"

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
