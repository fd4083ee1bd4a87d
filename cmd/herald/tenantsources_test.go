package main

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTenantSources drives sources of tenants through the server: a
// tenant's key creates and manages only its tenant's sources (others'
// answer 404), their topics must stay in the tenant's namespace and the
// key's publish scope, their events count as the tenant's (usage,
// publish_rate), a topic that leaves the namespace later is refused at
// publish time, and deleting the tenant deletes its sources.
func TestTenantSources(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	admin := testAdminKey
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{"topic_prefix":"tenants.acme"}`, 201)
	mustCall(t, m, admin, "PUT", "/v1/tenants/beta", `{}`, 201) // no prefix: its sources' namespace is tenants.beta.>
	acme := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"acme","scopes":["publish:tenants.acme.>"],"tenant":"acme"}`, 201)["secret"].(string)
	acmeSub := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"acme subscriber","scopes":["subscribe:tenants.acme.>"],"tenant":"acme"}`, 201)["secret"].(string)
	beta := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"beta","scopes":["publish:>"],"tenant":"beta"}`, 201)["secret"].(string)

	inbound := func(topic string) string {
		return `{"kind":"webhook","topic":"` + topic + `","config":{"verify":"none"}}`
	}
	a := mustCall(t, m, acme, "POST", "/v1/sources", inbound("tenants.acme.{header.x-kind}"), 201)
	if a["tenant"] != "acme" {
		t.Fatalf("a tenant's source: %v", a)
	}
	aID := a["id"].(string)
	wantProblem(t, m, acme, "POST", "/v1/sources", inbound("orders.{type}"), 403, "forbidden", "topic")
	wantProblem(t, m, acme, "POST", "/v1/sources", inbound("{payload.topic}"), 403, "forbidden", "topic")
	wantProblem(t, m, acme, "POST", "/v1/sources", `{"kind":"webhook","topic":"tenants.acme.x","config":{"verify":"none"},"tenant":"beta"}`, 404, "not-found", "tenant")
	wantProblem(t, m, acmeSub, "GET", "/v1/sources", "", 403, "forbidden", "")
	// beta's key may publish anywhere, but its sources stay in tenants.beta.>.
	wantProblem(t, m, beta, "POST", "/v1/sources", inbound("tenants.acme.x"), 403, "forbidden", "topic")
	b := mustCall(t, m, beta, "POST", "/v1/sources", inbound("tenants.beta.in"), 201)
	bID := b["id"].(string)
	// An admin may create one for a tenant, within its namespace too.
	wantProblem(t, m, admin, "POST", "/v1/sources", `{"kind":"webhook","topic":"elsewhere","config":{"verify":"none"},"tenant":"beta"}`, 403, "forbidden", "topic")
	// The same from the CLI: --tenant, checked the same way.
	cliEnv := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": admin}
	if r := runCLI(t, nil, cliEnv, "sources", "create", "--kind", "webhook", "--topic", "elsewhere", "--config", `{"verify":"none"}`, "--tenant", "beta"); r.code != 1 || !strings.Contains(r.stderr, "topic") {
		t.Fatalf("sources create --tenant beta outside its namespace: %d %q", r.code, r.stderr)
	}
	r := runCLI(t, nil, cliEnv, "sources", "create", "--kind", "webhook", "--topic", "tenants.beta.cli", "--config", `{"verify":"none"}`, "--tenant", "beta")
	if r.code != 0 || !strings.Contains(r.stdout, "tenant:") || !strings.Contains(r.stdout, "beta") {
		t.Fatalf("sources create --tenant beta: %d %q %q", r.code, r.stdout, r.stderr)
	}
	cliSrc, err := adminClient(m).ListSources(t.Context(), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cliSrc.Sources {
		if s.Topic == "tenants.beta.cli" {
			if s.Tenant != "beta" {
				t.Fatalf("the CLI's source: tenant %q, want beta", s.Tenant)
			}
			mustCall(t, m, admin, "DELETE", "/v1/sources/"+s.ID, "", 204)
		}
	}
	plat := mustCall(t, m, admin, "POST", "/v1/sources", inbound("platform.in"), 201)
	if _, ok := plat["tenant"]; ok {
		t.Fatalf("a platform source has a tenant: %v", plat)
	}

	if got := ids(mustCall(t, m, acme, "GET", "/v1/sources", "", 200), "sources"); len(got) != 1 || got[0] != aID {
		t.Fatalf("acme lists %v", got)
	}
	if got := ids(mustCall(t, m, acme, "GET", "/v1/sources?tenant=beta", "", 200), "sources"); len(got) != 0 {
		t.Fatalf("acme lists beta's: %v", got)
	}
	if got := ids(mustCall(t, m, admin, "GET", "/v1/sources?tenant=beta", "", 200), "sources"); len(got) != 1 || got[0] != bID {
		t.Fatalf("admin lists beta's as %v", got)
	}
	if got := ids(mustCall(t, m, admin, "GET", "/v1/sources", "", 200), "sources"); len(got) != 3 {
		t.Fatalf("admin lists %v", got)
	}
	for _, other := range []string{bID, plat["id"].(string)} {
		for _, c := range [][3]string{
			{"GET", "/v1/sources/" + other, ""},
			{"PATCH", "/v1/sources/" + other, `{"description":"mine"}`},
			{"POST", "/v1/sources/" + other + "/pause", ""},
			{"DELETE", "/v1/sources/" + other, ""},
		} {
			wantProblem(t, m, acme, c[0], c[1], c[2], 404, "not-found", "")
		}
	}
	wantProblem(t, m, acme, "PATCH", "/v1/sources/"+aID, `{"tenant":"beta"}`, 400, "invalid", "tenant")
	wantProblem(t, m, acme, "PATCH", "/v1/sources/"+aID, `{"topic":"other.x"}`, 403, "forbidden", "topic")
	mustCall(t, m, acme, "PATCH", "/v1/sources/"+aID, `{"description":"acme's inbound"}`, 200)

	// Its events land in the tenant's topics and count as the tenant's.
	send := func(id, kind, msgID string) (int, map[string]any) {
		status, out, _ := call(t, m, "", "POST", "/v1/inbound/"+id, []byte(`{"n":1}`),
			"Content-Type", "application/json", "X-Kind", kind, "webhook-id", msgID)
		return status, out
	}
	if status, out := send(aID, "orders", "m1"); status != 202 || out["topic"] != "tenants.acme.orders" {
		t.Fatalf("inbound to acme's source: %d %v", status, out)
	}
	if status, out := send(aID, "orders.eu", "m2"); status != 202 || out["topic"] != "tenants.acme.orders.eu" {
		t.Fatalf("inbound to acme's source: %d %v", status, out)
	}
	usage := mustCall(t, m, admin, "GET", "/v1/usage?tenant=acme", "", 200)
	if got := usage["totals"].(map[string]any)["events_published"]; got != 2.0 {
		t.Fatalf("acme's usage counts %v events published by its source, want 2 (%v)", got, usage)
	}

	// Its tenant's publish rate holds it too.
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{"topic_prefix":"tenants.acme","limits":{"publish_rate":0.1}}`, 200)
	var status, n int
	var out map[string]any
	waitCond(t, "acme's source refused by its publish rate", time.Minute, func() bool {
		n++
		status, out = send(aID, "orders", "m3-"+strconv.Itoa(n))
		return status == 429
	})
	if out["field"] != "tenant" {
		t.Fatalf("refused inbound: %v", out)
	}

	// A namespace that moves away from the source's topic refuses its
	// events when they come, not only at creation.
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{"topic_prefix":"tenants.acme2"}`, 200)
	if status, out := send(aID, "orders", "m4"); status != 403 || out["field"] != "topic" {
		t.Fatalf("inbound outside the moved namespace: %d %v; want 403 naming topic", status, out)
	}

	// Deleting the tenant deletes its sources.
	mustCall(t, m, admin, "DELETE", "/v1/tenants/acme", "", 204)
	wantProblem(t, m, admin, "GET", "/v1/sources/"+aID, "", 404, "not-found", "")
	if status, _ := send(aID, "orders", "m5"); status != 404 {
		t.Fatalf("inbound to a deleted tenant's source: %d", status)
	}
	mustCall(t, m, admin, "GET", "/v1/sources/"+bID, "", 200)
}
