package engine

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald"
)

type tenantList []herald.Tenant

func (l tenantList) ListTenants(_ context.Context, after string, _ int) ([]herald.Tenant, error) {
	if after != "" {
		return nil, nil
	}
	return l, nil
}

// TestTenantPublishRate checks AllowPublish on a stepped clock: one
// second's worth at once, a refusal with the wait until enough tokens,
// a batch counted as at most one second's worth, and other tenants and
// the platform never held.
func TestTenantPublishRate(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := NewTenantLimits(tenantList{
		{ID: "acme", Limits: herald.TenantLimits{PublishRate: 2}},
		{ID: "beta"},
	}, TenantLimitsConfig{Now: func() time.Time { return now }}, nil, nil)
	if err := l.load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := l.AllowPublish("acme", 2); err != nil {
		t.Fatalf("two events at 2/s: %v", err)
	}
	err := l.AllowPublish("acme", 1)
	e, ok := err.(*herald.Error)
	if !ok || e.Code != herald.CodeRateLimited || e.Field != "tenant" || e.RetryAfter < time.Second {
		t.Fatalf("a third event at once = %#v, want rate-limited with a Retry-After", err)
	}
	now = now.Add(500 * time.Millisecond)
	if err := l.AllowPublish("acme", 1); err != nil {
		t.Fatalf("one event half a second later: %v", err)
	}
	now = now.Add(time.Second)
	if err := l.AllowPublish("acme", 500); err != nil {
		t.Fatalf("a batch after a quiet second: %v", err)
	}
	for range 100 {
		if err := l.AllowPublish("beta", 10); err != nil {
			t.Fatalf("beta has no limit: %v", err)
		}
		if err := l.AllowPublish("", 10); err != nil {
			t.Fatalf("the platform has no limit: %v", err)
		}
	}
}

// TestTenantPublishWait checks WaitPublish in a bubble: the burst passes at
// once, more waits for the rate (every event counted, not one second's
// worth per batch), a canceled wait returns ctx's error and gives back
// what it reserved, and a tenant without a limit never waits.
func TestTenantPublishWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewTenantLimits(tenantList{
			{ID: "acme", Limits: herald.TenantLimits{PublishRate: 10}},
			{ID: "beta"},
		}, TenantLimitsConfig{}, nil, nil)
		if err := l.load(t.Context()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := l.WaitPublish(t.Context(), "acme", 10); err != nil || time.Since(start) != 0 {
			t.Fatalf("the burst: %v after %v, want at once", err, time.Since(start))
		}
		// 25 more at 10/s: 2.5s, though a batch is refused no more than
		// one second's worth by AllowPublish.
		if err := l.WaitPublish(t.Context(), "acme", 25); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != 2500*time.Millisecond {
			t.Fatalf("25 events past the burst took %v, want 2.5s", got)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		if err := l.WaitPublish(ctx, "acme", 10); err != context.DeadlineExceeded {
			t.Fatalf("a wait past its context = %v, want DeadlineExceeded", err)
		}
		// The canceled reservation was given back: 5 tokens came in the
		// half second, so 5 more take half a second, not 1.5s.
		before := time.Now()
		if err := l.WaitPublish(t.Context(), "acme", 10); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(before); got != 500*time.Millisecond {
			t.Fatalf("after a canceled wait, 10 events took %v, want 500ms", got)
		}
		before = time.Now()
		for _, tenant := range []string{"beta", "", "unknown"} {
			if err := l.WaitPublish(t.Context(), tenant, 1_000_000); err != nil {
				t.Fatal(err)
			}
		}
		if time.Since(before) != 0 {
			t.Fatalf("tenants without a limit waited %v", time.Since(before))
		}
	})
}
