package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldhq/herald/identity/identitytest"
)

const identityDoc = "../../docs/identity.md"

// docServe starts a server with the settings of a documented `herald
// serve` command, read by the real flag parser after fix swaps the page's
// addresses and secrets for the test's.
func docServe(t *testing.T, block string, fix *strings.Replacer) *Main {
	t.Helper()
	var cmd strings.Builder
	for l := range strings.Lines(block) {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") { // comments
			cmd.WriteString(l)
		}
	}
	line := strings.TrimSpace(fix.Replace(strings.ReplaceAll(cmd.String(), "\\\n", " ")))
	words := shellWords(t, line)
	if len(words) < 2 || words[0] != "herald" || words[1] != "serve" {
		t.Fatalf("not a herald serve command: %q", line)
	}
	parsed, err := ParseConfig(words[2:], func(string) string { return "" }, &strings.Builder{})
	if err != nil {
		t.Fatalf("the documented settings do not parse: %v\n%s", err, line)
	}
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		parsed.Addr, parsed.DataDir, parsed.AdminKey, parsed.LogLevel = c.Addr, c.DataDir, c.AdminKey, c.LogLevel
		parsed.AllowPrivateDestinations, parsed.ShutdownTimeout, parsed.ShutdownDrainDelay = c.AllowPrivateDestinations, c.ShutdownTimeout, c.ShutdownDrainDelay
		*c = parsed
	})
	return m
}

// TestDocsIdentity runs docs/identity.md's examples as written against a
// real server and a real OpenID provider (identitytest): a server set up
// by the page's OIDC settings maps a Keycloak-shaped token's realm roles
// and tenant claim, and one set up by its introspection settings maps an
// opaque token's scope and tenant member; the page's curl lines get the
// tokens from the provider's token endpoint and list subscriptions with
// them.
func TestDocsIdentity(t *testing.T) {
	t.Parallel()
	ex := docExamples(t, identityDoc)
	for _, name := range []string{"oidc-serve", "oidc-call", "introspection-serve", "introspection-call"} {
		if ex[name] == "" {
			t.Fatalf("docs/identity.md has no example %s", name)
		}
	}
	p := identitytest.New(t)
	p.AddClient(identitytest.Client{ID: "herald", Secret: "herald-secret"})
	p.AddClient(identitytest.Client{ID: "ops-bot", Secret: "s1", JWT: true, Audience: []string{"herald"},
		Claims: map[string]any{"realm_access": map[string]any{"roles": []string{"herald-admin"}}}})
	p.AddClient(identitytest.Client{ID: "acme-ui", Secret: "s2", JWT: true, Audience: []string{"herald"},
		Claims: map[string]any{"realm_access": map[string]any{"roles": []string{"tenant-admin"}}, "tenant": "acme"}})
	p.AddClient(identitytest.Client{ID: "globex-backend", Secret: "s3", Audience: []string{"herald"},
		Claims: map[string]any{"scope": "subscribe:orders.> read:orders.>", "urn:example:tenant": "globex"}})

	oidc := docServe(t, ex["oidc-serve"], strings.NewReplacer("https://id.example.com/realms/acme-platform", p.Issuer))
	intro := docServe(t, ex["introspection-serve"], strings.NewReplacer(
		"https://id.example.com/oauth/v2/introspect", p.IntrospectionURL(), `"$HERALD_INTROSPECTION_SECRET"`, "herald-secret"))

	// Each server holds a subscription of acme's, of globex's and of the
	// platform's.
	subs := map[*Main]map[string]string{}
	for _, m := range []*Main{oidc, intro} {
		mustCall(t, m, testAdminKey, "PUT", "/v1/topics/orders.created", `{}`, http.StatusCreated)
		subs[m] = map[string]string{}
		for _, tn := range []string{"acme", "globex", ""} {
			body := `{"topic":"orders.created","url":"https://hooks.example.com/` + tn + `"}`
			if tn != "" {
				mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/"+tn, `{}`, http.StatusCreated)
				body = `{"topic":"orders.created","url":"https://hooks.example.com/` + tn + `","tenant":"` + tn + `"}`
			}
			subs[m][tn] = mustCall(t, m, testAdminKey, "POST", "/v1/subscriptions", body, http.StatusCreated)["id"].(string)
		}
	}
	listed := func(m *Main, example, tokenURL, client, secret string) []string {
		t.Helper()
		script := strings.NewReplacer(tokenURL, p.Issuer+"/oauth/token", "http://localhost:8480", m.URL()).Replace(ex[example])
		text := runDocScriptEnv(t, m, script, "CLIENT_ID="+client, "CLIENT_SECRET="+secret)
		var out struct {
			Subscriptions []struct{ ID string }
		}
		if err := json.Unmarshal([]byte(text), &out); err != nil || out.Subscriptions == nil {
			t.Fatalf("%s as %s answered %q", example, client, text)
		}
		var ids []string
		for _, s := range out.Subscriptions {
			ids = append(ids, s.ID)
		}
		return ids
	}
	same := func(got []string, want ...string) bool {
		if len(got) != len(want) {
			return false
		}
		for _, w := range want {
			if !strings.Contains(strings.Join(got, " "), w) {
				return false
			}
		}
		return true
	}

	keycloak := "https://id.example.com/realms/acme-platform/protocol/openid-connect/token"
	if got := listed(oidc, "oidc-call", keycloak, "ops-bot", "s1"); !same(got, subs[oidc]["acme"], subs[oidc]["globex"], subs[oidc][""]) {
		t.Fatalf("herald-admin's list: %v, want all of %v", got, subs[oidc])
	}
	if got := listed(oidc, "oidc-call", keycloak, "acme-ui", "s2"); !same(got, subs[oidc]["acme"]) {
		t.Fatalf("acme's tenant-admin lists %v, want only %s", got, subs[oidc]["acme"])
	}
	zitadel := "https://id.example.com/oauth/v2/token"
	if got := listed(intro, "introspection-call", zitadel, "globex-backend", "s3"); !same(got, subs[intro]["globex"]) {
		t.Fatalf("globex's opaque token lists %v, want only %s", got, subs[intro]["globex"])
	}
	if p.Introspects.Load() == 0 {
		t.Fatal("the opaque token was never introspected")
	}
}

// The console's OpenID sign-in as docs/console.md sets it up: the button
// names the provider, and a sign-in goes to the provider's authorization
// endpoint for the documented client and redirect URI, with PKCE.
func TestDocsConsoleOIDC(t *testing.T) {
	t.Parallel()
	p := identitytest.New(t)
	block := docExamples(t, "../../docs/console.md")["console-oidc-serve"]
	if block == "" {
		t.Fatal("docs/console.md has no example console-oidc-serve")
	}
	m := docServe(t, block, strings.NewReplacer("https://id.example.com/realms/acme-platform", p.Issuer))
	if m.Config.ConsoleOIDCClientID != "herald-console" || m.Config.OIDCTenantClaim != "tenant" {
		t.Fatalf("the documented settings: %+v", m.Config)
	}
	resp, err := http.Get(m.URL() + "/console/session")
	if err != nil {
		t.Fatal(err)
	}
	var s struct{ OIDC struct{ Name, URL string } }
	_ = json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if s.OIDC.Name != "Keycloak" || s.OIDC.URL != "/console/oidc/login" {
		t.Fatalf("the console offers %+v", s.OIDC)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(m.URL() + s.OIDC.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	for _, want := range []string{p.Issuer + "/authorize?", "client_id=herald-console",
		"redirect_uri=" + url.QueryEscape("https://herald.example.com/console/oidc/callback"), "code_challenge_method=S256"} {
		if !strings.Contains(loc, want) {
			t.Fatalf("the sign-in goes to %s, which lacks %s", loc, want)
		}
	}
}
