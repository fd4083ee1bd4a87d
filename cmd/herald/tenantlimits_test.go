package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateReceiver answers verification challenges at once and holds every
// event delivery until the test lets one go, counting how many it holds at
// once.
type gateReceiver struct {
	srv     *httptest.Server
	release chan struct{}

	mu       sync.Mutex
	held     int
	maxHeld  int
	received map[string]bool // webhook-id
	hold     bool
}

func newGateReceiver(t *testing.T, hold bool) *gateReceiver {
	h := &gateReceiver{release: make(chan struct{}), received: map[string]bool{}, hold: hold}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Herald-Event-Type") == "herald.verification" {
			var c struct{ Challenge string }
			_ = json.Unmarshal(body, &c)
			fmt.Fprintf(w, `{"challenge":%q}`, c.Challenge)
			return
		}
		h.mu.Lock()
		h.held++
		h.maxHeld = max(h.maxHeld, h.held)
		h.mu.Unlock()
		if h.hold {
			select {
			case <-h.release:
			case <-r.Context().Done():
			}
		}
		h.mu.Lock()
		h.held--
		h.received[r.Header.Get("webhook-id")] = true
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(func() { close(h.release); h.srv.Close() })
	return h
}

func (h *gateReceiver) state() (held, maxHeld, received int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held, h.maxHeld, len(h.received)
}

// metricSum adds the values of the metric's series whose labels contain
// every one of want (`tenant="acme"`), 0 when there are none.
func metricSum(t *testing.T, m *Main, name string, want ...string) float64 {
	t.Helper()
	sum := 0.0
	for line := range strings.Lines(metricsText(t, m)) {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if !ok {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// TestTenantMaxInFlightHoldsAllItsSubscriptions runs three subscriptions
// of one tenant, each allowed 4 deliveries at once, against a receiver
// that holds every request: together they never have more than the
// tenant's limits.max_in_flight of 2 open, every event still arrives as
// places free, and another tenant's subscription is not held by it.
func TestTenantMaxInFlightHoldsAllItsSubscriptions(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.MetricsTenantLabels = "acme" })
	admin := testAdminKey
	recv := newGateReceiver(t, true)
	free := newGateReceiver(t, false)

	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{"limits":{"max_in_flight":2}}`, 201)
	mustCall(t, m, admin, "PUT", "/v1/tenants/beta", `{"limits":{"max_in_flight":1}}`, 201)
	var subs []string
	for i := range 3 {
		topic := fmt.Sprintf("acme.t%d", i)
		mustCall(t, m, admin, "PUT", "/v1/topics/"+topic, `{}`, 201)
		out := mustCall(t, m, admin, "POST", "/v1/subscriptions",
			`{"topic":"`+topic+`","url":"`+recv.srv.URL+`/hook","tenant":"acme","max_in_flight":4}`, 201)
		subs = append(subs, out["id"].(string))
	}
	mustCall(t, m, admin, "PUT", "/v1/topics/beta.t", `{}`, 201)
	betaSub := mustCall(t, m, admin, "POST", "/v1/subscriptions",
		`{"topic":"beta.t","url":"`+free.srv.URL+`/hook","tenant":"beta"}`, 201)["id"].(string)
	for _, id := range append(subs, betaSub) {
		waitCond(t, "subscription "+id+" active", 60*time.Second, func() bool {
			_, out := keyCall(t, m, admin, "GET", "/v1/subscriptions/"+id, "")
			return out["state"] == "active"
		})
	}

	const perTopic = 4
	for i := range 3 {
		for range perTopic {
			mustCall(t, m, admin, "POST", fmt.Sprintf("/v1/topics/acme.t%d/events", i), `{"n":1}`, 201)
		}
	}
	for range 3 {
		mustCall(t, m, admin, "POST", "/v1/topics/beta.t/events", `{"n":1}`, 201)
	}
	// Beta's events go through while acme's are held.
	waitCond(t, "beta's three events", 60*time.Second, func() bool { _, _, n := free.state(); return n == 3 })

	// Let acme's go one at a time: each freed place is taken by a waiting
	// delivery of any of the three subscriptions, never a third at once.
	for done := 0; done < 3*perTopic; {
		waitCond(t, "a held delivery", 60*time.Second, func() bool {
			held, _, _ := recv.state()
			return held > 0
		})
		if held, _, n := recv.state(); n+held < 3*perTopic {
			waitCond(t, "two deliveries held at once", 60*time.Second, func() bool { held, _, _ := recv.state(); return held == 2 })
		}
		recv.release <- struct{}{}
		done++
		waitCond(t, "the released delivery recorded", 60*time.Second, func() bool { _, _, n := recv.state(); return n >= done })
	}
	if _, maxHeld, n := recv.state(); maxHeld != 2 || n != 3*perTopic {
		t.Fatalf("the receiver held up to %d deliveries at once and got %d events; want 2 and %d", maxHeld, n, 3*perTopic)
	}
	if got := metricSum(t, m, "herald_tenant_deliveries_held_total", `tenant="acme"`, `limit="max_in_flight"`); got < 1 {
		t.Fatalf("herald_tenant_deliveries_held_total{tenant=acme,limit=max_in_flight} = %v, want > 0", got)
	}
	waitCond(t, "no delivery in flight", 60*time.Second, func() bool {
		return metricSum(t, m, "herald_tenant_deliveries_in_flight", `tenant="acme"`) == 0
	})
}

// TestTenantPublishRate checks limits.publish_rate through the server: a
// tenant's key that publishes faster is answered 429 rate-limited with
// Retry-After, naming the tenant, and stores nothing for it; the platform
// and other tenants are not held by it; raising the limit applies at once.
func TestTenantPublishRate(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.MetricsTenantLabels = "acme" })
	admin := testAdminKey
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{"topic_prefix":"tenants.acme","limits":{"publish_rate":0.2}}`, 201)
	mustCall(t, m, admin, "PUT", "/v1/tenants/beta", `{}`, 201)
	acme := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"acme","scopes":["publish:tenants.>","read:tenants.>"],"tenant":"acme"}`, 201)["secret"].(string)
	beta := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"beta","scopes":["publish:tenants.>"],"tenant":"beta"}`, 201)["secret"].(string)
	mustCall(t, m, admin, "PUT", "/v1/topics/tenants.acme.orders", `{}`, 201)
	mustCall(t, m, admin, "PUT", "/v1/topics/tenants.beta.orders", `{}`, 201)
	wantProblem(t, m, admin, "PUT", "/v1/tenants/acme", `{"limits":{"publish_rate":-1}}`, 400, "invalid", "limits.publish_rate")

	publish := func(key, topic string) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", m.URL()+"/v1/topics/"+topic+"/events", strings.NewReader(`{"x":1}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, resp.Header, out
	}
	// One event per five seconds, one at once: the second within five
	// seconds is refused (however slow the machine, it keeps trying).
	accepted := 0
	var refused map[string]any
	var header http.Header
	for i := 0; refused == nil; i++ {
		if i > 20 {
			t.Fatalf("21 publishes at 0.2/s, none refused")
		}
		status, h, out := publish(acme, "tenants.acme.orders")
		switch status {
		case 201:
			accepted++
		case 429:
			refused, header = out, h
		default:
			t.Fatalf("publish = %d %v", status, out)
		}
	}
	if refused["type"] != "https://herald.dev/problems/rate-limited" || refused["field"] != "tenant" ||
		!strings.Contains(refused["detail"].(string), "publish_rate") {
		t.Fatalf("refused publish answered %v", refused)
	}
	if ct := header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("429 Content-Type %q", ct)
	}
	if ra, err := strconv.Atoi(header.Get("Retry-After")); err != nil || ra < 1 || ra > 5 {
		t.Fatalf("Retry-After %q, want 1 to 5 seconds", header.Get("Retry-After"))
	}
	// Only the accepted events are in the log.
	out := mustCall(t, m, acme, "GET", "/v1/topics/tenants.acme.orders/events", "", 200)
	if got := len(out["events"].([]any)); got != accepted {
		t.Fatalf("the topic holds %d events, %d were accepted", got, accepted)
	}
	// Others are not held by acme's limit.
	for range 5 {
		if status, _, out := publish(beta, "tenants.beta.orders"); status != 201 {
			t.Fatalf("beta's publish = %d %v", status, out)
		}
		if status, _, out := publish(admin, "tenants.acme.orders"); status != 201 {
			t.Fatalf("the platform's publish = %d %v", status, out)
		}
	}
	if got := metricSum(t, m, "herald_tenant_publish_refused_total", `tenant="acme"`); got < 1 {
		t.Fatalf("herald_tenant_publish_refused_total{tenant=acme} = %v", got)
	}
	// A higher limit applies without a restart.
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{"topic_prefix":"tenants.acme","limits":{"publish_rate":10000}}`, 200)
	waitCond(t, "the raised limit", 60*time.Second, func() bool {
		status, _, _ := publish(acme, "tenants.acme.orders")
		return status == 201
	})
	for range 20 {
		if status, _, out := publish(acme, "tenants.acme.orders"); status != 201 {
			t.Fatalf("publish under the raised limit = %d %v", status, out)
		}
	}
}

// TestTenantDeliveryRate: a tenant's limits.rate_limit holds its
// subscriptions back (counted in herald_tenant_deliveries_held_total) and
// every event still arrives.
func TestTenantDeliveryRate(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.MetricsTenantLabels = "acme" })
	admin := testAdminKey
	recv := newGateReceiver(t, false)
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{"limits":{"rate_limit":20}}`, 201)
	var subs []string
	for i := range 2 {
		topic := fmt.Sprintf("acme.r%d", i)
		mustCall(t, m, admin, "PUT", "/v1/topics/"+topic, `{}`, 201)
		subs = append(subs, mustCall(t, m, admin, "POST", "/v1/subscriptions",
			`{"topic":"`+topic+`","url":"`+recv.srv.URL+`/hook","tenant":"acme"}`, 201)["id"].(string))
	}
	for _, id := range subs {
		waitCond(t, "subscription "+id+" active", 60*time.Second, func() bool {
			_, out := keyCall(t, m, admin, "GET", "/v1/subscriptions/"+id, "")
			return out["state"] == "active"
		})
	}
	var batch strings.Builder
	batch.WriteString(`{"events":[`)
	for i := range 20 {
		if i > 0 {
			batch.WriteString(",")
		}
		fmt.Fprintf(&batch, `{"data":{"n":%d}}`, i)
	}
	batch.WriteString(`]}`)
	for i := range 2 {
		mustCall(t, m, admin, "POST", fmt.Sprintf("/v1/topics/acme.r%d/events:batch", i), batch.String(), 201)
	}
	waitCond(t, "all 40 events", 60*time.Second, func() bool { _, _, n := recv.state(); return n == 40 })
	if got := metricSum(t, m, "herald_tenant_deliveries_held_total", `tenant="acme"`, `limit="rate_limit"`); got < 1 {
		t.Fatalf("herald_tenant_deliveries_held_total{tenant=acme,limit=rate_limit} = %v, want > 0", got)
	}
}
