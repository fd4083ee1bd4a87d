package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// keyCall sends one request to m with the key and returns the status and
// the decoded JSON body (nil when there is none).
func keyCall(t *testing.T, m *Main, key, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, m.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

// mustCall is keyCall that fails the test unless the status is want.
func mustCall(t *testing.T, m *Main, key, method, path, body string, want int) map[string]any {
	t.Helper()
	status, out := keyCall(t, m, key, method, path, body)
	if status != want {
		t.Fatalf("%s %s %s = %d %v, want %d", method, path, body, status, out, want)
	}
	return out
}

// wantProblem fails the test unless the call answers the status with a
// problem of the type (and naming the field, if given).
func wantProblem(t *testing.T, m *Main, key, method, path, body string, status int, typ, field string) {
	t.Helper()
	out := mustCall(t, m, key, method, path, body, status)
	if got, _ := out["type"].(string); !strings.HasSuffix(got, "/"+typ) {
		t.Fatalf("%s %s: problem type %q, want .../%s (%v)", method, path, got, typ, out)
	}
	if field != "" {
		if got, _ := out["field"].(string); got != field {
			t.Fatalf("%s %s: problem field %q, want %q (%v)", method, path, got, field, out)
		}
	}
}

func ids(out map[string]any, list string) []string {
	var got []string
	items, _ := out[list].([]any)
	for _, it := range items {
		got = append(got, it.(map[string]any)["id"].(string))
	}
	slices.Sort(got)
	return got
}

// TestTenantsEndToEnd drives tenants through the real server: create and
// replace them, bind keys and subscriptions to them, keep each tenant's
// key inside its own objects (404 for others', never 403), the topic
// prefix and the subscription limit, and deletion with everything the
// tenant had.
func TestTenantsEndToEnd(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(receiver.Close)
	admin := testAdminKey

	out := mustCall(t, m, admin, "PUT", "/v1/tenants/acme",
		`{"name":"Acme","metadata":{"plan":"gold"},"topic_prefix":"tenants.acme","limits":{"max_subscriptions":2}}`, 201)
	if out["topic_prefix"] != "tenants.acme.>" || out["name"] != "Acme" || out["metadata"].(map[string]any)["plan"] != "gold" {
		t.Fatalf("created tenant %v", out)
	}
	out = mustCall(t, m, admin, "PUT", "/v1/tenants/acme",
		`{"name":"Acme Ltd","topic_prefix":"tenants.acme.>","limits":{"max_subscriptions":2,"max_in_flight":8}}`, 200)
	if out["name"] != "Acme Ltd" || out["limits"].(map[string]any)["max_in_flight"] != 8.0 || len(out["metadata"].(map[string]any)) != 0 {
		t.Fatalf("replaced tenant %v", out)
	}
	mustCall(t, m, admin, "PUT", "/v1/tenants/beta", `{"name":"Beta"}`, 201)
	wantProblem(t, m, admin, "PUT", "/v1/tenants/Bad%21", `{}`, 400, "invalid", "id")
	wantProblem(t, m, admin, "PUT", "/v1/tenants/gamma", `{"limits":{"max_subscriptions":-1}}`, 400, "invalid", "limits.max_subscriptions")
	wantProblem(t, m, admin, "PUT", "/v1/tenants/gamma", `{"topic_prefix":">"}`, 400, "invalid", "topic_prefix")
	if got := ids(mustCall(t, m, admin, "GET", "/v1/tenants", "", 200), "tenants"); !slices.Equal(got, []string{"acme", "beta"}) {
		t.Fatalf("tenants listed: %v", got)
	}

	// Keys bound to tenants.
	wantProblem(t, m, admin, "POST", "/v1/keys", `{"name":"x","scopes":["admin"],"tenant":"acme"}`, 400, "invalid", "scopes")
	wantProblem(t, m, admin, "POST", "/v1/keys", `{"name":"x","scopes":["subscribe:a"],"tenant":"nope"}`, 400, "invalid", "tenant")
	acmeKey := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"acme backend","scopes":["subscribe:tenants.>"],"tenant":"acme"}`, 201)
	if acmeKey["tenant"] != "acme" {
		t.Fatalf("tenant key %v", acmeKey)
	}
	acme := acmeKey["secret"].(string)
	beta := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"beta backend","scopes":["subscribe:tenants.>"],"tenant":"beta"}`, 201)["secret"].(string)

	sub := func(topic string) string {
		return `{"topic":"` + topic + `","url":"` + receiver.URL + `/hook"}`
	}
	a1 := mustCall(t, m, acme, "POST", "/v1/subscriptions", sub("tenants.acme.orders"), 201)
	if a1["tenant"] != "acme" {
		t.Fatalf("tenant subscription %v", a1)
	}
	// The topic prefix: tenants.> is in the key's scope, not in acme's prefix.
	wantProblem(t, m, acme, "POST", "/v1/subscriptions", sub("tenants.beta.orders"), 403, "forbidden", "topic")
	// A tenant key cannot put a subscription in another tenant.
	wantProblem(t, m, acme, "POST", "/v1/subscriptions", `{"topic":"tenants.acme.x","url":"`+receiver.URL+`","tenant":"beta"}`, 404, "not-found", "tenant")
	a2 := mustCall(t, m, acme, "POST", "/v1/subscriptions", sub("tenants.acme.>"), 201)
	// The limit of two.
	wantProblem(t, m, acme, "POST", "/v1/subscriptions", sub("tenants.acme.refunds"), 409, "conflict", "tenant")

	b1 := mustCall(t, m, beta, "POST", "/v1/subscriptions", sub("tenants.acme.orders"), 201) // beta has no prefix
	platform := mustCall(t, m, admin, "POST", "/v1/subscriptions", sub("tenants.acme.orders"), 201)
	if _, ok := platform["tenant"]; ok {
		t.Fatalf("platform subscription has a tenant: %v", platform)
	}
	// An admin may place a subscription in a tenant, which must exist.
	b2 := mustCall(t, m, admin, "POST", "/v1/subscriptions", `{"topic":"tenants.beta.x","url":"`+receiver.URL+`","tenant":"beta"}`, 201)
	wantProblem(t, m, admin, "POST", "/v1/subscriptions", `{"topic":"x","url":"`+receiver.URL+`","tenant":"nope"}`, 404, "not-found", "tenant")

	// Each tenant key sees its own and nothing else.
	if got := ids(mustCall(t, m, acme, "GET", "/v1/subscriptions", "", 200), "subscriptions"); !slices.Equal(got, sorted(a1["id"], a2["id"])) {
		t.Fatalf("acme lists %v", got)
	}
	if got := ids(mustCall(t, m, acme, "GET", "/v1/subscriptions?tenant=beta", "", 200), "subscriptions"); len(got) != 0 {
		t.Fatalf("acme lists beta's: %v", got)
	}
	if got := ids(mustCall(t, m, beta, "GET", "/v1/subscriptions", "", 200), "subscriptions"); !slices.Equal(got, sorted(b1["id"], b2["id"])) {
		t.Fatalf("beta lists %v", got)
	}
	if got := ids(mustCall(t, m, admin, "GET", "/v1/subscriptions?tenant=acme", "", 200), "subscriptions"); !slices.Equal(got, sorted(a1["id"], a2["id"])) {
		t.Fatalf("admin lists acme's as %v", got)
	}
	for _, other := range []string{b1["id"].(string), platform["id"].(string)} {
		for _, call := range [][3]string{
			{"GET", "/v1/subscriptions/" + other, ""},
			{"PATCH", "/v1/subscriptions/" + other, `{"description":"mine now"}`},
			{"POST", "/v1/subscriptions/" + other + "/pause", ""},
			{"GET", "/v1/subscriptions/" + other + "/dead-letters", ""},
			{"DELETE", "/v1/subscriptions/" + other, ""},
		} {
			wantProblem(t, m, acme, call[0], call[1], call[2], 404, "not-found", "")
		}
	}
	mustCall(t, m, acme, "GET", "/v1/subscriptions/"+a1["id"].(string), "", 200)
	wantProblem(t, m, acme, "PATCH", "/v1/subscriptions/"+a1["id"].(string), `{"tenant":"beta"}`, 400, "invalid", "tenant")
	mustCall(t, m, acme, "GET", "/v1/tenants/acme", "", 200)
	wantProblem(t, m, acme, "GET", "/v1/tenants/beta", "", 404, "not-found", "")
	wantProblem(t, m, acme, "GET", "/v1/tenants", "", 403, "forbidden", "")
	wantProblem(t, m, acme, "DELETE", "/v1/tenants/acme", "", 403, "forbidden", "")
	if got := ids(mustCall(t, m, admin, "GET", "/v1/keys?tenant=acme", "", 200), "keys"); !slices.Equal(got, []string{acmeKey["id"].(string)}) {
		t.Fatalf("acme's keys: %v", got)
	}

	// Deleting acme takes its subscriptions and keys, and nothing else.
	mustCall(t, m, admin, "DELETE", "/v1/tenants/acme", "", 204)
	wantProblem(t, m, admin, "DELETE", "/v1/tenants/acme", "", 404, "not-found", "")
	wantProblem(t, m, acme, "GET", "/v1/subscriptions", "", 401, "unauthorized", "")
	wantProblem(t, m, admin, "GET", "/v1/subscriptions/"+a1["id"].(string), "", 404, "not-found", "")
	wantProblem(t, m, admin, "GET", "/v1/subscriptions/"+a2["id"].(string), "", 404, "not-found", "")
	mustCall(t, m, admin, "GET", "/v1/subscriptions/"+platform["id"].(string), "", 200)
	mustCall(t, m, beta, "GET", "/v1/subscriptions/"+b1["id"].(string), "", 200)
	if got := ids(mustCall(t, m, admin, "GET", "/v1/tenants", "", 200), "tenants"); !slices.Equal(got, []string{"beta"}) {
		t.Fatalf("tenants after the delete: %v", got)
	}
}

func sorted(vs ...any) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.(string)
	}
	slices.Sort(out)
	return out
}

// TestTenantsCLI runs the tenants verbs and keys create --tenant against
// the server.
func TestTenantsCLI(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	cli := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(t.Context(), args, strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] })
		return out.String(), errOut.String(), code
	}
	out, errOut, code := cli("tenants", "put", "acme", "--name", "Acme", "--metadata", "plan=gold",
		"--topic-prefix", "tenants.acme", "--max-subscriptions", "5", "--rate-limit", "2.5")
	if code != 0 || !strings.Contains(out, "tenants.acme.>") || !strings.Contains(out, "gold") || !strings.Contains(errOut, "created tenant acme") {
		t.Fatalf("tenants put: %d %q %q", code, out, errOut)
	}
	if out, errOut, code = cli("tenants", "put", "acme", "--name", "Acme Ltd"); code != 0 || !strings.Contains(errOut, "replaced tenant acme") {
		t.Fatalf("tenants put again: %d %q %q", code, out, errOut)
	}
	if out, errOut, code = cli("tenants", "put", "Bad!"); code != 1 || !strings.Contains(errOut, "invalid") {
		t.Fatalf("tenants put Bad!: %d %q %q; want exit 1 with the problem", code, out, errOut)
	}
	if out, errOut, code = cli("tenants", "list", "--output", "json"); code != 0 || !strings.Contains(out, `"Acme Ltd"`) {
		t.Fatalf("tenants list: %d %q %q", code, out, errOut)
	}
	out, errOut, code = cli("keys", "create", "--name", "acme", "--scope", "subscribe:tenants.acme.>", "--tenant", "acme", "--output", "json")
	var key struct{ Secret, Tenant string }
	if code != 0 || json.Unmarshal([]byte(out), &key) != nil || key.Tenant != "acme" || key.Secret == "" {
		t.Fatalf("keys create --tenant: %d %q %q", code, out, errOut)
	}
	// The tenant's key reads its tenant, and not the list.
	env["HERALD_KEY"] = key.Secret
	if out, errOut, code = cli("tenants", "get", "acme"); code != 0 || !strings.Contains(out, "Acme Ltd") {
		t.Fatalf("tenants get with the tenant's key: %d %q %q", code, out, errOut)
	}
	if _, errOut, code = cli("tenants", "list"); code != 1 || !strings.Contains(errOut, "forbidden") {
		t.Fatalf("tenants list with the tenant's key: %d %q", code, errOut)
	}
	env["HERALD_KEY"] = testAdminKey
	if out, errOut, code = cli("tenants", "delete", "acme"); code != 0 || !strings.Contains(out, "deleted tenant acme") {
		t.Fatalf("tenants delete: %d %q %q", code, out, errOut)
	}
	if _, errOut, code = cli("tenants", "get", "acme"); code != 1 || !strings.Contains(errOut, "not-found") {
		t.Fatalf("tenants get after delete: %d %q", code, errOut)
	}
}
