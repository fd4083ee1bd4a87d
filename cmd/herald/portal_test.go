package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// mintPortalLink asks for a portal link of the tenant as the admin and
// returns its id and token, checking the URL carries the token in its
// fragment only.
func mintPortalLink(t *testing.T, m *Main, tenant, body string) (id, token string) {
	t.Helper()
	out := mustCall(t, m, testAdminKey, "POST", "/v1/tenants/"+tenant+"/portal-links", body, http.StatusCreated)
	id, _ = out["id"].(string)
	token, _ = out["token"].(string)
	link, _ := out["url"].(string)
	u, err := url.Parse(link)
	if err != nil || id == "" || token == "" {
		t.Fatalf("portal link %v: bad id, token or url (%v)", out, err)
	}
	if u.Path != "/console/portal" || u.RawQuery != "" || u.Fragment != "token="+token {
		t.Fatalf("portal link URL %q: want /console/portal#token=<token>, the token in the fragment only", link)
	}
	return id, token
}

// A portal link is a key bound to one tenant: it manages that tenant's
// webhook subscriptions and nothing else, cannot extend itself, and stops
// working when revoked or expired.
func TestPortalLinks(t *testing.T) {
	t.Parallel()
	m, logs := testServer(t, t.TempDir(), func(c *Config) { c.PublicURL = "https://herald.example.com" })
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(receiver.Close)
	for _, tn := range []string{"acme", "globex"} {
		mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/"+tn, `{"name":"`+tn+`"}`, http.StatusCreated)
	}
	mustCall(t, m, testAdminKey, "PUT", "/v1/topics/orders", `{}`, http.StatusCreated)
	theirs := mustCall(t, m, testAdminKey, "POST", "/v1/subscriptions",
		`{"topic":"orders","url":"`+receiver.URL+`/globex","verification":"none","tenant":"globex"}`, http.StatusCreated)["id"].(string)
	platform := mustCall(t, m, testAdminKey, "POST", "/v1/subscriptions",
		`{"topic":"orders","url":"`+receiver.URL+`/platform","verification":"none"}`, http.StatusCreated)["id"].(string)

	out := mustCall(t, m, testAdminKey, "POST", "/v1/tenants/acme/portal-links", `{"expires_in":"30m"}`, http.StatusCreated)
	if got, _ := out["url"].(string); !strings.HasPrefix(got, "https://herald.example.com/console/portal#token=hrld_") {
		t.Fatalf("portal link url %q: want it under public-url", got)
	}
	exp, err := time.Parse(time.RFC3339Nano, out["expires_at"].(string))
	if err != nil || exp.Before(time.Now().Add(29*time.Minute)) || exp.After(time.Now().Add(31*time.Minute)) {
		t.Fatalf("expires_at %v: want about 30 minutes from now (%v)", out["expires_at"], err)
	}
	linkID, token := mintPortalLink(t, m, "acme", "")

	// The portal sees and manages only acme's subscriptions.
	mine := mustCall(t, m, token, "POST", "/v1/subscriptions",
		`{"topic":"orders","url":"`+receiver.URL+`/acme"}`, http.StatusCreated)
	if mine["tenant"] != "acme" {
		t.Fatalf("a subscription made through the portal belongs to %v, want acme", mine["tenant"])
	}
	myID := mine["id"].(string)
	if got := ids(mustCall(t, m, token, "GET", "/v1/subscriptions", "", http.StatusOK), "subscriptions"); len(got) != 1 || got[0] != myID {
		t.Fatalf("the portal lists %v, want only its own %s", got, myID)
	}
	for _, other := range []string{theirs, platform} {
		for _, c := range [][2]string{
			{"GET", ""}, {"PATCH", `{"description":"x"}`}, {"DELETE", ""}, {"POST", "/pause"}, {"GET", "/attempts"},
			{"GET", "/dead-letters"}, {"POST", "/dead-letters/redrive"}, {"POST", "/replay"}, {"POST", "/secret:rotate"}, {"POST", "/test"},
		} {
			path, body := "/v1/subscriptions/"+other, ""
			if strings.HasPrefix(c[1], "/") {
				path += c[1]
			} else {
				body = c[1]
			}
			wantProblem(t, m, token, c[0], path, body, http.StatusNotFound, "not-found", "")
		}
	}
	wantProblem(t, m, token, "POST", "/v1/subscriptions", `{"topic":"orders","url":"`+receiver.URL+`/x","tenant":"globex"}`,
		http.StatusNotFound, "not-found", "tenant")
	mustCall(t, m, token, "POST", "/v1/subscriptions/"+myID+"/secret:rotate", "", http.StatusOK)
	mustCall(t, m, token, "POST", "/v1/subscriptions/"+myID+"/pause", "", http.StatusOK)
	mustCall(t, m, token, "GET", "/v1/subscriptions/"+myID+"/attempts", "", http.StatusOK)

	// Only webhooks, and none of the platform's objects.
	wantProblem(t, m, token, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"archive","config":{"destination":"file:///tmp/x","format":"jsonl"}}`,
		http.StatusForbidden, "forbidden", "channel")
	wantProblem(t, m, token, "GET", "/v1/keys", "", http.StatusForbidden, "forbidden", "")
	wantProblem(t, m, token, "GET", "/v1/tenants", "", http.StatusForbidden, "forbidden", "")
	wantProblem(t, m, token, "GET", "/v1/tenants/globex", "", http.StatusNotFound, "not-found", "")
	wantProblem(t, m, token, "POST", "/v1/topics/orders/events", `{}`, http.StatusForbidden, "forbidden", "")
	wantProblem(t, m, token, "GET", "/v1/topics/orders/events", "", http.StatusForbidden, "forbidden", "")

	// A link cannot mint links (it would outlive its expiry), for its own
	// tenant or, as if it did not exist, another's.
	wantProblem(t, m, token, "POST", "/v1/tenants/acme/portal-links", "", http.StatusForbidden, "forbidden", "")
	wantProblem(t, m, token, "POST", "/v1/tenants/globex/portal-links", "", http.StatusNotFound, "not-found", "")
	// A tenant's own backend key may mint its links, not another's.
	backend := mustCall(t, m, testAdminKey, "POST", "/v1/keys", `{"name":"acme backend","scopes":["subscribe:>"],"tenant":"acme"}`, http.StatusCreated)["secret"].(string)
	mustCall(t, m, backend, "POST", "/v1/tenants/acme/portal-links", `{"expires_in":"5m"}`, http.StatusCreated)
	wantProblem(t, m, backend, "POST", "/v1/tenants/globex/portal-links", "", http.StatusNotFound, "not-found", "")
	wantProblem(t, m, backend, "DELETE", "/v1/tenants/globex/portal-links/"+linkID, "", http.StatusNotFound, "not-found", "")

	// Bad input names the field.
	wantProblem(t, m, testAdminKey, "POST", "/v1/tenants/acme/portal-links", `{"expires_in":"30d"}`, http.StatusBadRequest, "invalid", "expires_in")
	wantProblem(t, m, testAdminKey, "POST", "/v1/tenants/nobody/portal-links", "", http.StatusNotFound, "not-found", "")

	// The list shows live links without their secrets; revoking one
	// refuses its token on the next request.
	list := mustCall(t, m, testAdminKey, "GET", "/v1/tenants/acme/portal-links", "", http.StatusOK)
	links, _ := list["portal_links"].([]any)
	if len(links) != 3 {
		t.Fatalf("portal links %v: want the 3 minted", list)
	}
	for _, l := range links {
		if _, ok := l.(map[string]any)["token"]; ok {
			t.Fatalf("the list shows a token: %v", l)
		}
	}
	mustCall(t, m, testAdminKey, "DELETE", "/v1/tenants/acme/portal-links/"+linkID, "", http.StatusNoContent)
	wantProblem(t, m, token, "GET", "/v1/subscriptions", "", http.StatusUnauthorized, "unauthorized", "")
	wantProblem(t, m, testAdminKey, "DELETE", "/v1/tenants/acme/portal-links/"+linkID, "", http.StatusNotFound, "not-found", "link")
	if strings.Contains(logs.String(), token) {
		t.Fatal("the server log holds a portal token")
	}
}

// The portal-link example of docs/console.md works as written.
func TestDocsConsolePortalLink(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	out := runDocScript(t, m, docExamples(t, "../../docs/console.md")["portal-link"])
	if !strings.Contains(out, `"tenant":"acme"`) || !strings.Contains(out, "/console/portal#token=hrld_") {
		t.Fatalf("the example answered %s", out)
	}
}

// GET /v1/cluster/nodes lists this node alone on SQLite, and every live
// member on PostgreSQL, each node marking itself; admins only.
func TestClusterNodes(t *testing.T) {
	t.Parallel()
	nodeIDs := func(m *Main) (all []string, self string) {
		for _, n := range mustCall(t, m, testAdminKey, "GET", "/v1/cluster/nodes", "", http.StatusOK)["nodes"].([]any) {
			nm := n.(map[string]any)
			all = append(all, nm["id"].(string))
			if nm["self"] == true {
				self = nm["id"].(string)
				if _, ok := nm["dispatching"].(float64); !ok {
					t.Fatalf("the answering node has no dispatching count: %v", nm)
				}
			}
		}
		return all, self
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		m, _ := testServer(t, t.TempDir(), nil)
		all, self := nodeIDs(m)
		if len(all) != 1 || self != m.dispatcher.NodeID() {
			t.Fatalf("nodes %v, self %q: want this node (%s) alone", all, self, m.dispatcher.NodeID())
		}
		mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/acme", `{}`, http.StatusCreated)
		_, token := mintPortalLink(t, m, "acme", "")
		wantProblem(t, m, token, "GET", "/v1/cluster/nodes", "", http.StatusForbidden, "forbidden", "")
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn := pgDSN(t)
		both := func(c *Config) { c.DatabaseURL = Secret(dsn) }
		a, _ := testServer(t, t.TempDir(), both)
		b, _ := testServer(t, t.TempDir(), both)
		eventually(t, "both nodes in each node's list", func() bool {
			allA, selfA := nodeIDs(a)
			allB, selfB := nodeIDs(b)
			return len(allA) == 2 && len(allB) == 2 && selfA == a.dispatcher.NodeID() && selfB == b.dispatcher.NodeID() && selfA != selfB
		})
	})
}
