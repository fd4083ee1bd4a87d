package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/identity/identitytest"
)

// TestOutsideIdentityEndToEnd runs the server with an OpenID provider
// in-process and calls the API with its tokens: a JWT mapped to admin
// manages topics and tenants, a tenant's JWT and a tenant's opaque token
// (introspected) see only their tenant, the audit log names the token's
// subject, a revoked opaque token is refused after the cache TTL, and a
// provider that is down answers 503 while API keys keep working.
func TestOutsideIdentityEndToEnd(t *testing.T) {
	t.Parallel()
	p := identitytest.New(t)
	p.AddClient(identitytest.Client{ID: "herald", Secret: "herald-secret"})
	p.AddClient(identitytest.Client{ID: "ops-bot", Secret: "s1", JWT: true, Audience: []string{"herald"},
		Claims: map[string]any{"groups": []string{"platform-ops"}}})
	p.AddClient(identitytest.Client{ID: "acme-ui", Secret: "s2", JWT: true, Audience: []string{"herald"},
		Claims: map[string]any{"org_id": "acme", "groups": []string{"tenant-admin"}}})
	p.AddClient(identitytest.Client{ID: "globex-backend", Secret: "s3", Audience: []string{"herald"},
		Claims: map[string]any{"org_id": "globex", "groups": []string{"tenant-admin"}}})
	p.AddClient(identitytest.Client{ID: "stranger", Secret: "s4", JWT: true, Audience: []string{"another-app"},
		Claims: map[string]any{"groups": []string{"platform-ops"}}})

	roles := "platform-ops=admin;tenant-admin=subscribe:orders.> read:orders.>"
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		c.OIDCIssuer, c.OIDCAudience = p.Issuer, "herald"
		c.OIDCRolesClaim, c.OIDCRoleScopes, c.OIDCTenantClaim = "groups", roles, "org_id"
		c.IntrospectionURL, c.IntrospectionClientID, c.IntrospectionSecret = p.IntrospectionURL(), "herald", "herald-secret"
		c.IntrospectionRolesClaim, c.IntrospectionRoleScopes, c.IntrospectionTenantClaim = "groups", roles, "org_id"
		c.IntrospectionCacheTTL = time.Second
	})
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(receiver.Close)

	ops := p.Token(t, "ops-bot")
	mustCall(t, m, ops, "PUT", "/v1/topics/orders.created", `{}`, 201)
	mustCall(t, m, ops, "PUT", "/v1/tenants/acme", `{"name":"Acme"}`, 201)
	mustCall(t, m, ops, "PUT", "/v1/tenants/globex", `{"name":"Globex"}`, 201)

	acme := p.Token(t, "acme-ui")
	sub := mustCall(t, m, acme, "POST", "/v1/subscriptions",
		`{"topic":"orders.created","url":"`+receiver.URL+`/acme"}`, 201)
	if sub["tenant"] != "acme" {
		t.Fatalf("a tenant token's subscription: %v", sub)
	}
	subID := sub["id"].(string)
	globex := p.Token(t, "globex-backend") // opaque: introspected
	mustCall(t, m, globex, "GET", "/v1/subscriptions/"+subID, "", 404)
	if list := mustCall(t, m, globex, "GET", "/v1/subscriptions", "", 200); len(list["subscriptions"].([]any)) != 0 {
		t.Fatalf("globex sees: %v", list)
	}
	mustCall(t, m, acme, "GET", "/v1/subscriptions/"+subID, "", 200)
	wantProblem(t, m, acme, "PUT", "/v1/topics/orders.other", `{}`, 403, "forbidden", "")
	wantProblem(t, m, p.Token(t, "stranger"), "GET", "/v1/topics", "", 401, "unauthorized", "")

	// The audit log names who did it.
	audit := mustCall(t, m, testAdminKey, "GET", "/v1/audit?object="+subID, "", 200)
	if es := audit["entries"].([]any); len(es) != 1 || es[0].(map[string]any)["principal"] != "oidc:acme-ui" ||
		es[0].(map[string]any)["tenant"] != "acme" {
		t.Fatalf("audit of the tenant's subscription: %v", audit)
	}
	audit = mustCall(t, m, testAdminKey, "GET", "/v1/audit?object=globex", "", 200)
	if es := audit["entries"].([]any); len(es) != 1 || es[0].(map[string]any)["principal"] != "oidc:ops-bot" {
		t.Fatalf("audit of the tenant's creation: %v", audit)
	}

	// Revoked at the provider: refused once the cached answer expires.
	p.RevokeAll()
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, _ := keyCall(t, m, globex, "GET", "/v1/subscriptions", "")
		if status == 401 {
			break
		}
		if status != 200 || time.Now().After(deadline) {
			t.Fatalf("a revoked token: %d", status)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Down: 503 for what needs the provider, API keys still work.
	fresh := p.Token(t, "globex-backend")
	p.SetDown(true)
	status, out := keyCall(t, m, fresh, "GET", "/v1/subscriptions", "")
	if status != 503 || !strings.HasSuffix(out["type"].(string), "/unavailable") {
		t.Fatalf("provider down: %d %v", status, out)
	}
	mustCall(t, m, ops, "GET", "/v1/topics", "", 200) // its key is cached
	mustCall(t, m, testAdminKey, "GET", "/v1/topics", "", 200)
	p.SetDown(false)
	mustCall(t, m, fresh, "GET", "/v1/subscriptions", "", 200)

	metrics := scrape(t, m)
	for _, want := range []string{`herald_auth_tokens_total{method="oidc",result="accepted"}`, `herald_auth_tokens_total{method="introspection",result="unavailable"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestOutsideIdentityConfigChecked(t *testing.T) {
	t.Parallel()
	c := DefaultConfig()
	c.OIDCIssuer = "https://id.example.com"
	c.IntrospectionURL = "https://id.example.com/introspect"
	c.ConsoleOIDCIssuer = "https://id.example.com"
	err := c.Validate()
	for _, want := range []string{"auth.oidc.audience", "auth.oidc.scopes-claim or auth.oidc.role-scopes", "auth.introspection.client-id",
		"console.oidc.client-id", "set at least one with console.oidc.issuer"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want a problem with %s", err, want)
		}
	}
}
