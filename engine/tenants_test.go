package engine

import (
	"context"
	"testing"
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
