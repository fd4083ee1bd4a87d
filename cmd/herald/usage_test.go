package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestUsagePerTenant publishes with tenants' keys and delivers to their
// subscriptions (one endpoint answers, one fails into a dead letter),
// then reads GET /v1/usage as an admin and as each tenant, before and
// after a restart (the counts are flushed on the way down), and the
// per-tenant metrics, labelled only for the tenants named.
func TestUsagePerTenant(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, _ := testServer(t, dir, func(c *Config) { c.MetricsTenantLabels = "acme" })
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(ok.Close)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	t.Cleanup(failing.Close)

	mustCall(t, m, testAdminKey, "PUT", "/v1/topics/orders.created", `{}`, 201)
	mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/acme", `{}`, 201)
	mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/globex", `{}`, 201)
	acmeKey := mustCall(t, m, testAdminKey, "POST", "/v1/keys", `{"name":"a","scopes":["publish:orders.>","read:orders.>"],"tenant":"acme"}`, 201)["secret"].(string)
	globexKey := mustCall(t, m, testAdminKey, "POST", "/v1/keys", `{"name":"g","scopes":["read:orders.>"],"tenant":"globex"}`, 201)["secret"].(string)
	mustCall(t, m, testAdminKey, "POST", "/v1/subscriptions", `{"topic":"orders.created","url":"`+ok.URL+`","verification":"none","tenant":"acme"}`, 201)
	mustCall(t, m, testAdminKey, "POST", "/v1/subscriptions", `{"topic":"orders.created","url":"`+failing.URL+`","verification":"none","tenant":"globex","retry":{"max_attempts":1}}`, 201)

	mustCall(t, m, acmeKey, "POST", "/v1/topics/orders.created/events", `{"n":1}`, 201)
	mustCall(t, m, acmeKey, "POST", "/v1/topics/orders.created/events", `{"n":22}`, 201)
	mustCall(t, m, testAdminKey, "POST", "/v1/topics/orders.created/events", `{"n":333}`, 201)

	type counts struct {
		EventsPublished int64 `json:"events_published"`
		BytesPublished  int64 `json:"bytes_published"`
		Deliveries      struct {
			Succeeded, Failed int64
			DeadLettered      int64 `json:"dead_lettered"`
		}
		BytesDelivered int64 `json:"bytes_delivered"`
	}
	type day struct {
		Date, Tenant string
		counts
	}
	type answer struct {
		Tenant, From, To string
		Days             []day
		Totals           counts
	}
	read := func(key, query string) answer {
		t.Helper()
		var a answer
		decodeInto(t, mustCall(t, m, key, "GET", "/v1/usage"+query, "", 200), &a)
		return a
	}
	today := time.Now().UTC().Format("2006-01-02")
	byTenant := func(a answer) map[string]counts {
		out := map[string]counts{}
		for _, d := range a.Days {
			if d.Date != today {
				t.Fatalf("a row of another day: %+v", d)
			}
			out[d.Tenant] = d.counts
		}
		return out
	}
	eventually(t, "three deliveries and a dead letter counted", func() bool {
		u := byTenant(read(testAdminKey, ""))
		return u["acme"].Deliveries.Succeeded == 3 && u["globex"].Deliveries.DeadLettered == 3
	})
	check := func(when string) {
		t.Helper()
		u := byTenant(read(testAdminKey, ""))
		acme, globex, platform := u["acme"], u["globex"], u[""]
		if acme.EventsPublished != 2 || acme.BytesPublished != int64(len(`{"n":1}`)+len(`{"n":22}`)) ||
			acme.Deliveries.Succeeded != 3 || acme.Deliveries.Failed != 0 || acme.BytesDelivered != 7+8+9 {
			t.Fatalf("%s: acme %+v", when, acme)
		}
		if globex.EventsPublished != 0 || globex.Deliveries.Failed != 3 || globex.Deliveries.DeadLettered != 3 || globex.BytesDelivered != 0 {
			t.Fatalf("%s: globex %+v", when, globex)
		}
		if platform.EventsPublished != 1 {
			t.Fatalf("%s: the platform's %+v", when, platform)
		}
		// A tenant sees its own, and only its own.
		own := read(globexKey, "")
		if own.Tenant != "globex" || len(own.Days) != 1 || own.Totals.Deliveries.DeadLettered != 3 {
			t.Fatalf("%s: globex's own view: %+v", when, own)
		}
		wantProblem(t, m, globexKey, "GET", "/v1/usage?tenant=acme", "", 404, "not-found", "id")
		if one := read(testAdminKey, "?tenant=acme&from="+today+"&to="+today); one.Totals.EventsPublished != 2 || len(one.Days) != 1 {
			t.Fatalf("%s: admin, acme: %+v", when, one)
		}
	}
	check("live")

	metrics := scrape(t, m)
	for _, want := range []string{
		`herald_tenant_events_published_total{tenant="acme"} 2`,
		`herald_tenant_deliveries_total{outcome="succeeded",tenant="acme"} 3`,
		`herald_tenant_deliveries_total{outcome="dead_lettered",tenant="_other"} 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, `tenant="globex"`) {
		t.Error("globex, not in metrics.tenant-labels, has its own label")
	}

	wantProblem(t, m, testAdminKey, "GET", "/v1/usage?from=yesterday", "", 400, "invalid", "from")
	wantProblem(t, m, testAdminKey, "GET", "/v1/usage?from=2026-12-08&to=2026-12-01", "", 400, "invalid", "from")
	wantProblem(t, m, testAdminKey, "GET", "/v1/usage?from=2020-01-01&to=2026-01-01", "", 400, "invalid", "from")

	// The counts survive a restart: Close flushes them.
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, _ = testServer(t, dir, nil)
	check("after a restart")
}

// decodeInto turns a decoded JSON answer into v.
func decodeInto(t *testing.T, from map[string]any, v any) {
	t.Helper()
	b, err := json.Marshal(from)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		t.Fatal(err)
	}
}
