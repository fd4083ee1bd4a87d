package main

import (
	"strings"
	"testing"
	"time"
)

// A tenant's key manages its own tenant's templates: it sees and changes
// only those (another tenant's and the platform's answer 404, as if they
// did not exist), an admin reaches them with ?tenant=, and a subscription
// of the tenant looks in its tenant's templates first, then the
// platform's, by name and by topic. Deleting the tenant deletes them.
func TestEmailTenantTemplates(t *testing.T) {
	t.Parallel()
	mail := notifyMail(t)
	m := notifyServer(t, t.TempDir(), mail, nil)
	admin := testAdminKey
	emailMust(t, m, 201, "PUT", "/v1/topics/orders", `{}`)
	for _, id := range []string{"acme", "globex"} {
		mustCall(t, m, admin, "PUT", "/v1/tenants/"+id, `{}`, 201)
	}
	acme := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"acme","scopes":["subscribe:orders"],"tenant":"acme"}`, 201)["secret"].(string)
	globex := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"globex","scopes":["subscribe:orders"],"tenant":"globex"}`, 201)["secret"].(string)
	platform := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"ops","scopes":["subscribe:orders"]}`, 201)["secret"].(string)

	// The platform's templates, and acme's: one of the same name, one for
	// the same topic.
	mustCall(t, m, admin, "PUT", "/v1/templates/plain", `{"subject":"Platform plain {{.Payload.id}}"}`, 201)
	mustCall(t, m, admin, "PUT", "/v1/templates/orders", `{"topic":"orders","subject":"Platform orders {{.Payload.id}}"}`, 201)
	mustCall(t, m, admin, "PUT", "/v1/templates/platform-only", `{"subject":"Platform only {{.Payload.id}}"}`, 201)
	mustCall(t, m, acme, "PUT", "/v1/templates/plain", `{"subject":"Acme plain {{.Payload.id}}"}`, 201)
	mustCall(t, m, acme, "PUT", "/v1/templates/acme-orders", `{"topic":"orders","subject":"Acme orders {{.Payload.id}}"}`, 201)
	mustCall(t, m, acme, "PUT", "/v1/templates/acme-orders", `{"topic":"orders","subject":"Acme orders {{.Payload.id}}!"}`, 200)
	wantProblem(t, m, acme, "PUT", "/v1/templates/broken", `{"subject":"{{.Topik}}"}`, 400, "invalid", "subject")

	names := func(key, path string) string {
		t.Helper()
		var out []string
		for _, it := range mustCall(t, m, key, "GET", path, "", 200)["templates"].([]any) {
			out = append(out, it.(map[string]any)["name"].(string))
		}
		return strings.Join(out, ",")
	}
	if got := names(acme, "/v1/templates"); got != "acme-orders,plain" {
		t.Errorf("acme lists %q", got)
	}
	if got := names(globex, "/v1/templates"); got != "" {
		t.Errorf("globex lists %q", got)
	}
	if got := names(admin, "/v1/templates"); got != "orders,plain,platform-only" {
		t.Errorf("the admin lists %q", got)
	}
	if got := names(admin, "/v1/templates?tenant=acme"); got != "acme-orders,plain" {
		t.Errorf("the admin lists acme's as %q", got)
	}
	if got := mustCall(t, m, acme, "GET", "/v1/templates/plain", "", 200)["subject"]; got != "Acme plain {{.Payload.id}}" {
		t.Errorf("acme reads plain as %v", got)
	}
	// Others' are as if they did not exist.
	wantProblem(t, m, acme, "GET", "/v1/templates/orders", "", 404, "not-found", "")
	wantProblem(t, m, globex, "GET", "/v1/templates/acme-orders", "", 404, "not-found", "")
	wantProblem(t, m, globex, "DELETE", "/v1/templates/plain", "", 404, "not-found", "")
	wantProblem(t, m, globex, "GET", "/v1/templates?tenant=acme", "", 404, "not-found", "tenant")
	wantProblem(t, m, admin, "GET", "/v1/templates?tenant=initech", "", 404, "not-found", "tenant")
	// A platform key without the admin scope has no templates to manage.
	wantProblem(t, m, platform, "PUT", "/v1/templates/x", `{"subject":"x"}`, 403, "forbidden", "")
	wantProblem(t, m, platform, "GET", "/v1/templates", "", 403, "forbidden", "")
	if got := mustCall(t, m, admin, "GET", "/v1/templates/plain", "", 200)["subject"]; got != "Platform plain {{.Payload.id}}" {
		t.Errorf("acme's plain changed the platform's: %v", got)
	}
	// The preview with acme's key renders acme's.
	if got := mustCall(t, m, acme, "POST", "/v1/templates:render", `{"template":"plain","event":{"payload":{"id":7}}}`, 200)["subject"]; got != "Acme plain 7" {
		t.Errorf("acme's preview: %v", got)
	}

	sub := func(tenant, address, template string) {
		t.Helper()
		cfg := `"address":"` + address + `"`
		if template != "" {
			cfg += `,"template":"` + template + `"`
		}
		mustCall(t, m, admin, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"email","verification":"none","tenant":"`+tenant+`","config":{`+cfg+`}}`, 201)
	}
	sub("acme", "acme-named@example.com", "plain")            // acme's plain
	sub("acme", "acme-matched@example.com", "")               // acme-orders, before the platform's orders
	sub("acme", "acme-platform@example.com", "platform-only") // the platform's, by name
	sub("globex", "globex-named@example.com", "plain")        // the platform's plain
	sub("globex", "globex-matched@example.com", "")           // the platform's orders
	// globex cannot name acme's template.
	wantProblem(t, m, admin, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"email","verification":"none","tenant":"globex","config":{"address":"g@example.com","template":"acme-orders"}}`, 400, "invalid", "config.template")

	emailMust(t, m, 201, "POST", "/v1/topics/orders/events", `{"id":1}`)
	for to, want := range map[string]string{
		"acme-named@example.com":     "Acme plain 1",
		"acme-matched@example.com":   "Acme orders 1!",
		"acme-platform@example.com":  "Platform only 1",
		"globex-named@example.com":   "Platform plain 1",
		"globex-matched@example.com": "Platform orders 1",
	} {
		waitFor(t, 60*time.Second, to+"'s message", func() bool { return len(mail.To(to)) == 1 })
		if got := mail.To(to)[0].Header.Get("Subject"); got != want {
			t.Errorf("%s got %q, want %q", to, got, want)
		}
	}

	// The tenant's templates go with it: a tenant made again under the
	// same id starts with none.
	mustCall(t, m, admin, "DELETE", "/v1/tenants/acme", "", 204)
	wantProblem(t, m, admin, "GET", "/v1/templates?tenant=acme", "", 404, "not-found", "tenant")
	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{}`, 201)
	if got := names(admin, "/v1/templates?tenant=acme"); got != "" {
		t.Errorf("a new acme inherits %q", got)
	}
}
