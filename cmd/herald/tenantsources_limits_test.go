package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestTenantSourceLimitAndList checks a tenant's limits.sources through the
// API and the CLI: creating one source past it answers 409 naming the
// field tenant (platform sources and other tenants' do not count), a bad
// limit answers 400 naming limits.sources, and `herald sources list
// --tenant` lists only that tenant's sources.
func TestTenantSourceLimitAndList(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	admin := testAdminKey
	cliEnv := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": admin}

	wantProblem(t, m, admin, "PUT", "/v1/tenants/acme", `{"limits":{"sources":-1}}`, 400, "invalid", "limits.sources")
	wantProblem(t, m, admin, "PUT", "/v1/tenants/acme", `{"limits":{"sources":1001}}`, 400, "invalid", "limits.sources")
	if r := runCLI(t, nil, cliEnv, "tenants", "put", "acme", "--max-sources", "2", "--publish-rate", "50"); r.code != 0 {
		t.Fatalf("tenants put --max-sources 2: %d %q", r.code, r.stderr)
	}
	got := mustCall(t, m, admin, "GET", "/v1/tenants/acme", "", 200)["limits"].(map[string]any)
	if got["sources"] != 2.0 || got["publish_rate"] != 50.0 {
		t.Fatalf("acme's limits = %v, want sources 2 and publish_rate 50", got)
	}
	if r := runCLI(t, nil, cliEnv, "tenants", "get", "acme"); r.code != 0 || !strings.Contains(r.stdout, "max sources:") {
		t.Fatalf("tenants get: %d %q", r.code, r.stdout)
	}
	mustCall(t, m, admin, "PUT", "/v1/tenants/beta", `{}`, 201)
	acme := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"acme","scopes":["publish:tenants.acme.>"],"tenant":"acme"}`, 201)["secret"].(string)

	inbound := func(topic, tenant string) string {
		s := `{"kind":"webhook","topic":"` + topic + `","config":{"verify":"none"}`
		if tenant != "" {
			s += `,"tenant":"` + tenant + `"`
		}
		return s + "}"
	}
	mustCall(t, m, admin, "POST", "/v1/sources", inbound("platform.in", ""), 201)
	mustCall(t, m, admin, "POST", "/v1/sources", inbound("tenants.beta.in", "beta"), 201)
	a1 := mustCall(t, m, acme, "POST", "/v1/sources", inbound("tenants.acme.one", ""), 201)["id"].(string)
	a2 := mustCall(t, m, admin, "POST", "/v1/sources", inbound("tenants.acme.two", "acme"), 201)["id"].(string)
	wantProblem(t, m, acme, "POST", "/v1/sources", inbound("tenants.acme.three", ""), 409, "conflict", "tenant")
	wantProblem(t, m, admin, "POST", "/v1/sources", inbound("tenants.acme.three", "acme"), 409, "conflict", "tenant")
	r := runCLI(t, nil, cliEnv, "sources", "create", "--kind", "webhook", "--topic", "tenants.acme.three", "--config", `{"verify":"none"}`, "--tenant", "acme")
	if r.code == 0 || !strings.Contains(r.stderr, "limits.sources") {
		t.Fatalf("sources create past the limit from the CLI: %d %q", r.code, r.stderr)
	}
	// Other tenants and the platform are not held by acme's limit.
	mustCall(t, m, admin, "POST", "/v1/sources", inbound("tenants.beta.more", "beta"), 201)
	mustCall(t, m, admin, "POST", "/v1/sources", inbound("platform.more", ""), 201)
	// One deleted frees a place.
	mustCall(t, m, admin, "DELETE", "/v1/sources/"+a2, "", 204)
	a3 := mustCall(t, m, acme, "POST", "/v1/sources", inbound("tenants.acme.three", ""), 201)["id"].(string)

	r = runCLI(t, nil, cliEnv, "sources", "list", "--tenant", "acme")
	if r.code != 0 || !strings.Contains(r.stdout, a1) || !strings.Contains(r.stdout, a3) ||
		strings.Contains(r.stdout, "tenants.beta") || strings.Contains(r.stdout, "platform.") {
		t.Fatalf("sources list --tenant acme: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, nil, cliEnv, "sources", "list", "--tenant", "beta", "--output", "json")
	var page struct {
		Sources []struct{ Tenant, Topic string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &page); r.code != 0 || err != nil || len(page.Sources) != 2 {
		t.Fatalf("sources list --tenant beta --output json: %d %v %q", r.code, err, r.stdout)
	}
	for _, s := range page.Sources {
		if s.Tenant != "beta" {
			t.Fatalf("sources list --tenant beta lists %+v", s)
		}
	}
	if r := runCLI(t, nil, cliEnv, "sources", "list"); r.code != 0 || strings.Count(r.stdout, "src_") != 6 {
		t.Fatalf("sources list: %d\n%s", r.code, r.stdout)
	}
}

// TestTenantSourceWaitsForPublishRate runs a Kafka source of a tenant
// whose publish_rate is below what the source could bring in: the source
// is slowed to the rate (its records wait in Kafka) and never fails into
// retrying; every record arrives once. Then the source reads the topic
// again under a new consumer group, and GET /v1/sources/{id} counts each
// record as a duplicate beside events_in, storing no new event.
func TestTenantSourceWaitsForPublishRate(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	addr := kc.ListenAddrs()[0]
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const n, rate = 300, 100
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, `{"n":%d}`, i)})
	}
	if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	admin := testAdminKey
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", fmt.Sprintf(`{"limits":{"publish_rate":%d}}`, rate), 201)
	cfg := func(group string) map[string]any {
		return map[string]any{"brokers": []string{addr}, "topics": []string{"orders"}, "group": group, "max_poll_records": 40}
	}
	spec, _ := json.Marshal(map[string]any{"kind": "kafka", "topic": "tenants.acme.orders", "tenant": "acme", "config": cfg("g1")})
	start := time.Now()
	src := mustCall(t, m, admin, "POST", "/v1/sources", string(spec), 201)
	id := src["id"].(string)
	c := adminClient(m)
	status := func() map[string]any { return mustCall(t, m, admin, "GET", "/v1/sources/"+id, "", 200) }
	waitCond(t, "the records as events", 2*time.Minute, func() bool {
		if st := status(); st["status"] == "retrying" || st["errors"] != 0.0 {
			t.Fatalf("the source failed over its tenant's publish rate instead of waiting: %v", st)
		}
		return len(allEvents(t, c, "tenants.acme.orders")) >= n
	})
	// The first second's worth passes at once; the rest comes at the rate.
	if took, least := time.Since(start), time.Duration(n-rate)*time.Second/rate; took < least {
		t.Fatalf("%d events at %d/s took %v, less than %v: the rate did not hold", n, rate, took, least)
	}
	if got := len(allEvents(t, c, "tenants.acme.orders")); got != n {
		t.Fatalf("%d events, want %d", got, n)
	}
	if !strings.Contains(scrape(t, m), "herald_tenant_publish_wait_seconds_total") {
		t.Fatal("no herald_tenant_publish_wait_seconds_total")
	}

	// Read it all again: every record is a duplicate.
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{}`, 200)
	patch, _ := json.Marshal(map[string]any{"config": cfg("g2")})
	mustCall(t, m, admin, "PATCH", "/v1/sources/"+id, string(patch), 200)
	var st map[string]any
	waitCond(t, "the records again as duplicates", 2*time.Minute, func() bool {
		st = status()
		return st["duplicates"] == float64(n)
	})
	if st["events_in"] != float64(n) {
		t.Fatalf("after reading again: %v; want events_in = duplicates = %d", st, n)
	}
	var shardDups float64
	for _, sh := range st["shard_status"].([]any) {
		shardDups += sh.(map[string]any)["duplicates"].(float64)
	}
	if shardDups != n {
		t.Fatalf("shard_status duplicates sum to %v, want %d: %v", shardDups, n, st["shard_status"])
	}
	if got := len(allEvents(t, c, "tenants.acme.orders")); got != n {
		t.Fatalf("%d events after reading again, want %d", got, n)
	}
	if r := runCLI(t, nil, map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": admin}, "sources", "get", id); r.code != 0 ||
		!strings.Contains(r.stdout, fmt.Sprintf("duplicates:  %d", n)) {
		t.Fatalf("sources get: %d\n%s", r.code, r.stdout)
	}
}
