package main

import (
	"encoding/json"
	"testing"
)

const tenantsDoc = "../../docs/tenants.md"

// TestDocsTenants runs the curl examples of docs/tenants.md from the page
// itself against a real server, in the page's order: create the tenant,
// its key, a subscription and a source with that key, then read the audit
// log and the usage.
func TestDocsTenants(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	ex := docExamples(t, tenantsDoc)
	for _, name := range []string{"tenant-put", "tenant-key", "tenant-subscription", "tenant-source", "audit", "usage"} {
		if ex[name] == "" {
			t.Fatalf("docs/tenants.md has no example %s", name)
		}
	}
	var out map[string]any
	run := func(name string, env ...string) map[string]any {
		t.Helper()
		text := runDocScriptEnv(t, m, ex[name], env...)
		out = nil
		if err := json.Unmarshal([]byte(text), &out); err != nil {
			t.Fatalf("example %s answered %q: %v", name, text, err)
		}
		return out
	}
	if got := run("tenant-put"); got["id"] != "acme" || got["topic_prefix"] != "tenants.acme.>" ||
		got["limits"].(map[string]any)["publish_rate"] != 100.0 || got["limits"].(map[string]any)["sources"] != 5.0 {
		t.Fatalf("tenant-put: %v", got)
	}
	key := run("tenant-key")
	secret, _ := key["secret"].(string)
	if key["tenant"] != "acme" || secret == "" {
		t.Fatalf("tenant-key: %v", key)
	}
	if got := run("tenant-subscription", "ACME_KEY="+secret); got["tenant"] != "acme" || got["topic"] != "tenants.acme.orders.>" {
		t.Fatalf("tenant-subscription: %v", got)
	}
	if got := run("tenant-source", "ACME_KEY="+secret); got["tenant"] != "acme" || got["kind"] != "webhook" {
		t.Fatalf("tenant-source: %v", got)
	}
	if got := run("audit"); len(got["entries"].([]any)) != 2 || got["next_cursor"] == nil {
		t.Fatalf("audit: %v", got)
	}
	if got := run("usage"); got["tenant"] != "acme" || got["totals"] == nil {
		t.Fatalf("usage: %v", got)
	}
}
