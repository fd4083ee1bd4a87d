package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldhq/herald/identity/identitytest"
)

// oidcConsole runs a server whose console offers sign-in with an
// in-process OpenID provider: client herald-console, people in the
// provider's groups platform-ops (admin) and tenant-admin (their org's
// subscriptions), org_id naming their tenant.
func oidcConsole(t *testing.T) (*Main, *identitytest.Provider) {
	t.Helper()
	p := identitytest.New(t)
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		c.ConsoleOIDCIssuer, c.ConsoleOIDCName = p.Issuer, "Test IdP"
		c.ConsoleOIDCClientID, c.ConsoleOIDCClientSecret = "herald-console", "console-secret"
		c.ConsoleOIDCScopes = "openid profile"
		c.OIDCRolesClaim, c.OIDCTenantClaim = "groups", "org_id"
		c.OIDCRoleScopes = "platform-ops=admin;tenant-admin=subscribe:orders.> read:orders.>"
	})
	// The redirect URI is known once the server listens.
	p.AddClient(identitytest.Client{ID: "herald-console", Secret: "console-secret", JWT: true,
		RedirectURIs: []string{m.URL() + "/console/oidc/callback"}})
	return m, p
}

// An operator signs in to the console with the OpenID provider alone and
// runs Herald from it: the same sealed HttpOnly session as a key's, the
// roles the provider vouches for, every change and the sign-in itself in
// the audit log under the person's subject; signing out ends the session.
func TestConsoleOIDCSignIn(t *testing.T) {
	t.Parallel()
	m, p := oidcConsole(t)
	p.SetUser(&identitytest.User{Subject: "alice", Claims: map[string]any{"groups": []string{"platform-ops"}, "name": "Alice"}})
	b := startBrowser(t)

	b.open(m.URL() + "/console/")
	b.waitText("#login-oidc", "Sign in with Test IdP", false)
	b.click("#login-oidc")
	b.waitText("#nav", "Subscriptions", false)
	b.waitText("#subject", "alice", false)
	if p.Logins.Load() != 1 {
		t.Fatalf("the provider saw %d sign-ins, want 1", p.Logins.Load())
	}
	var href string
	b.eval(`location.href + " " + document.cookie`, &href)
	if strings.Contains(href, "code=") || strings.Contains(href, "herald_session") {
		t.Fatalf("the code or the session is visible to the page: %s", href)
	}

	b.goTo("#/topics")
	b.fill(map[string]string{"#topic-name": "orders"}, "#topic-create")
	b.waitText("#topics", "orders", false)
	b.goTo("#/tenants")
	b.fill(map[string]string{"#tenant-id": "acme", "#tenant-name": "Acme"}, "#tenant-create")
	b.waitText("#tenants", "acme", false)

	// The audit log names the person for the sign-in and the changes.
	entries := mustCall(t, m, testAdminKey, "GET", "/v1/audit?principal=oidc:alice", "", http.StatusOK)["entries"].([]any)
	routes := map[string]bool{}
	for _, e := range entries {
		routes[e.(map[string]any)["route"].(string)] = true
	}
	for _, want := range []string{"/console/oidc/callback", "/v1/topics/{topic}", "/v1/tenants/{id}"} {
		if !routes[want] {
			t.Fatalf("the audit log of oidc:alice lacks %s: %v", want, entries)
		}
	}
	b.goTo("#/audit")
	b.waitText("#audit", "/console/oidc/callback", true)

	b.click("#signout")
	b.waitFor("#login-oidc")
	var signedIn bool
	b.eval(`fetch('/console/session', {cache: 'no-store'}).then(r => r.json()).then(s => s.signed_in)`, &signedIn)
	if signedIn {
		t.Fatal("still signed in after signing out")
	}
}

// oidcBrowser is a browser without a page: a cookie jar, redirects
// followed by hand.
type oidcBrowser struct {
	t   *testing.T
	c   *http.Client
	jar *cookiejar.Jar
}

func newOIDCBrowser(t *testing.T) *oidcBrowser {
	jar, _ := cookiejar.New(nil)
	return &oidcBrowser{t: t, jar: jar, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (ob *oidcBrowser) get(u string) (*http.Response, string) {
	ob.t.Helper()
	resp, err := ob.c.Get(u)
	if err != nil {
		ob.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// start begins a sign-in at the console and follows the provider until
// it sends the browser back; it returns the callback URL and the state
// the console asked for.
func (ob *oidcBrowser) start(m *Main) (callback, state string) {
	ob.t.Helper()
	resp, body := ob.get(m.URL() + "/console/oidc/login")
	if resp.StatusCode != http.StatusFound {
		ob.t.Fatalf("start a sign-in: %d %s", resp.StatusCode, body)
	}
	at, _ := url.Parse(resp.Header.Get("Location"))
	q := at.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || len(q.Get("state")) < 40 {
		ob.t.Fatalf("the authorization request lacks PKCE S256, a nonce or a strong state: %s", at)
	}
	next := at.String()
	for range 10 {
		if strings.HasPrefix(next, m.URL()+"/console/oidc/callback") {
			return next, q.Get("state")
		}
		resp, body := ob.get(next)
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			ob.t.Fatalf("at the provider %s: %d %s", next, resp.StatusCode, body)
		}
		loc, _ := resp.Request.URL.Parse(resp.Header.Get("Location"))
		next = loc.String()
	}
	ob.t.Fatalf("the provider never sent the browser back")
	return "", ""
}

// finish calls the callback and returns the status and page.
func (ob *oidcBrowser) finish(callback string) (int, string) {
	ob.t.Helper()
	resp, body := ob.get(callback)
	return resp.StatusCode, body
}

func (ob *oidcBrowser) session(m *Main) map[string]any {
	ob.t.Helper()
	_, body := ob.get(m.URL() + "/console/session")
	var s map[string]any
	_ = json.Unmarshal([]byte(body), &s)
	return s
}

// A sign-in with the provider is refused when its answer is not this
// browser's: another browser's state, no sign-in begun, a code traded
// with another sign-in's PKCE verifier, an ID token with another nonce,
// a person who cancelled or maps to no scope. None leaves a session. A
// tenant's person gets a session limited to the tenant.
func TestConsoleOIDCRefusals(t *testing.T) {
	t.Parallel()
	m, p := oidcConsole(t)
	p.SetUser(&identitytest.User{Subject: "alice", Claims: map[string]any{"groups": []string{"platform-ops"}}})
	mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/acme", `{}`, http.StatusCreated)
	mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/globex", `{}`, http.StatusCreated)
	mustCall(t, m, testAdminKey, "PUT", "/v1/topics/orders.created", `{}`, http.StatusCreated)

	refused := func(ob *oidcBrowser, callback string, status int, why string) {
		t.Helper()
		got, page := ob.finish(callback)
		if got != status || !strings.Contains(page, why) {
			t.Fatalf("callback %s = %d %q, want %d and %q", callback, got, page, status, why)
		}
		if s := ob.session(m); s["signed_in"] != false {
			t.Fatalf("a refused sign-in left a session: %v", s)
		}
	}

	// The state is another's (a forged or swapped answer).
	ob := newOIDCBrowser(t)
	cb, state := ob.start(m)
	refused(ob, strings.Replace(cb, "state="+url.QueryEscape(state), "state=forged", 1), 400, "state")

	// A browser that began no sign-in (a link from someone else).
	cb, _ = newOIDCBrowser(t).start(m)
	refused(newOIDCBrowser(t), cb, 400, "started no sign-in")

	// A code of one sign-in brought back with another's state: the
	// provider refuses the other's PKCE verifier.
	ob = newOIDCBrowser(t)
	first, firstState := ob.start(m)
	_, secondState := ob.start(m) // the login cookie is now the second's
	refused(ob, strings.Replace(first, "state="+url.QueryEscape(firstState), "state="+url.QueryEscape(secondState), 1), 401, "invalid_grant")

	// An ID token for another nonce.
	p.SetBadNonce(true)
	ob = newOIDCBrowser(t)
	cb, _ = ob.start(m)
	refused(ob, cb, 401, "nonce")
	p.SetBadNonce(false)

	// The person cancels at the provider.
	p.SetUser(nil)
	ob = newOIDCBrowser(t)
	cb, _ = ob.start(m)
	refused(ob, cb, 401, "access_denied")

	// A person whose groups map to nothing.
	p.SetUser(&identitytest.User{Subject: "mallory", Claims: map[string]any{"groups": []string{"visitors"}}})
	ob = newOIDCBrowser(t)
	cb, _ = ob.start(m)
	refused(ob, cb, 403, "no Herald scope")

	p.SetUser(&identitytest.User{Subject: "bob", Claims: map[string]any{"groups": []string{"tenant-admin"}, "org_id": "acme"}})
	ob = newOIDCBrowser(t)
	cb, _ = ob.start(m)
	if status, page := ob.finish(cb); status != http.StatusSeeOther {
		t.Fatalf("bob's sign-in: %d %s", status, page)
	}
	s := ob.session(m)
	if s["signed_in"] != true || s["subject"] != "oidc:bob" {
		t.Fatalf("bob's session: %v", s)
	}
	// Bob works in acme only: globex's subscription is as if it did not exist.
	theirs := mustCall(t, m, testAdminKey, "POST", "/v1/subscriptions", `{"topic":"orders.created","url":"https://globex.example.com/hook","tenant":"globex"}`, http.StatusCreated)["id"].(string)
	if resp, _ := ob.get(m.URL() + "/v1/subscriptions/" + theirs); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bob reads globex's subscription: %d", resp.StatusCode)
	}
	if resp, _ := ob.get(m.URL() + "/v1/keys"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob lists keys: %d", resp.StatusCode)
	}
	// A change needs the session's CSRF token, as a key's session does.
	post := func(csrf string) int {
		req, _ := http.NewRequest("POST", m.URL()+"/v1/subscriptions", strings.NewReader(`{"topic":"orders.created","url":"https://acme.example.com/hook"}`))
		req.Header.Set("Content-Type", "application/json")
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		resp, err := ob.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(""); got != http.StatusForbidden {
		t.Fatalf("a change without the CSRF token: %d", got)
	}
	if got := post(s["csrf_token"].(string)); got != http.StatusCreated {
		t.Fatalf("bob's subscription: %d", got)
	}
	entries := mustCall(t, m, testAdminKey, "GET", "/v1/audit?principal=oidc:bob", "", http.StatusOK)["entries"].([]any)
	if len(entries) != 2 || entries[1].(map[string]any)["route"] != "/console/oidc/callback" || entries[1].(map[string]any)["tenant"] != "acme" {
		t.Fatalf("bob's audit log: %v", entries)
	}
	// The callback is good once: its login cookie is spent.
	if status, _ := ob.finish(cb); status != http.StatusBadRequest {
		t.Fatalf("the same callback again: %d", status)
	}
}
