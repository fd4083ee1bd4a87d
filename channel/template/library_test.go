package template

import (
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/store/postgres/pgtest"
)

// Two nodes' libraries over one PostgreSQL database, each with its own
// connection pool and cache, as two processes have: a template changed
// (or deleted) through one reaches the other's deliveries within the
// documented 5 seconds, and never later. The clock is each node's own,
// moved by the test.
func TestLibraryAcrossNodes(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t, "herald_tmpl")
	var mu sync.Mutex
	clock := time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	node := func() *Library {
		st, err := postgres.Open(t.Context(), dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return NewLibrary(st, now)
	}
	a, b := node(), node()
	subject := func(l *Library, tenant string) string {
		t.Helper()
		set, err := l.Resolve(t.Context(), tenant, "notice", "orders", "")
		if err != nil {
			return "error: " + err.Error()
		}
		out, err := set.Render(Data{Topic: "orders"})
		if err != nil {
			t.Fatal(err)
		}
		return out.Subject
	}
	put := func(tenant, subj string) {
		t.Helper()
		if _, _, err := a.Put(t.Context(), tenant, Named{Name: "notice", Templates: Templates{Subject: subj}}); err != nil {
			t.Fatal(err)
		}
	}
	put("", "v1")
	if got := subject(b, ""); got != "v1" {
		t.Fatalf("node b reads %q, want v1", got)
	}
	// Changed on node a: a sees it at once; b may keep v1 for less than
	// 5 seconds, and reads v2 from then on.
	put("", "v2")
	if got := subject(a, ""); got != "v2" {
		t.Fatalf("node a reads %q after its own change", got)
	}
	advance(4 * time.Second)
	if got := subject(b, ""); got != "v1" && got != "v2" {
		t.Fatalf("node b reads %q", got)
	}
	advance(time.Second)
	if got := subject(b, ""); got != "v2" {
		t.Fatalf("node b reads %q 5 seconds after the change, want v2", got)
	}

	// A tenant's template, on node a, reaches b's deliveries for that
	// tenant within the bound too, and its deletion as well: b falls back
	// to the platform's.
	if got := subject(b, "acme"); got != "v2" {
		t.Fatalf("acme on node b reads %q before it has its own", got)
	}
	put("acme", "acme v1")
	advance(5 * time.Second)
	if got := subject(b, "acme"); got != "acme v1" {
		t.Fatalf("acme on node b reads %q 5 seconds after its template was made", got)
	}
	if err := a.Delete(t.Context(), "acme", "notice"); err != nil {
		t.Fatal(err)
	}
	advance(5 * time.Second)
	if got := subject(b, "acme"); got != "v2" {
		t.Fatalf("acme on node b reads %q 5 seconds after its template was deleted, want the platform's", got)
	}
}
