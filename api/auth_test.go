package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func TestAuthProblems(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("orders", "")
	e.putTopic("other", "")
	_, pub := e.createKey("publish:orders")

	// Expired keys exist in the store but are refused like unknown ones.
	expiredSecret, hash := herald.NewKeySecret()
	if err := e.store.CreateKey(t.Context(), herald.APIKey{ID: herald.NewKeyID(), Name: "old", Hash: hash,
		Prefix: expiredSecret[:8], Scopes: herald.Scopes{{Action: herald.ActionAdmin}},
		CreatedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}

	unauth := []struct {
		name   string
		header string
	}{
		{"no header", ""},
		{"not bearer", "Basic dXNlcjpwYXNz"},
		{"unknown key", "Bearer hrld_unknownunknownunknownunknownunknownunkno"},
		{"expired key", "Bearer " + expiredSecret},
		{"empty bearer", "Bearer "},
	}
	var unknownDetail, expiredDetail string
	for _, c := range unauth {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			r := req{method: "GET", path: "/v1/topics", key: "-", header: map[string]string{}}
			if c.header != "" {
				r.header["Authorization"] = c.header
			}
			res := e.do(r)
			p := decodeProblem(t, res)
			if res.status != http.StatusUnauthorized || p.Type != herald.ProblemTypeBase+"unauthorized" {
				t.Fatalf("got %d %+v", res.status, p)
			}
			if !strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q", res.header.Get("WWW-Authenticate"))
			}
			switch c.name {
			case "unknown key":
				unknownDetail = p.Detail
			case "expired key":
				expiredDetail = p.Detail
			}
		})
	}
	if unknownDetail != expiredDetail {
		t.Errorf("unknown key says %q but expired key says %q: the answer tells them apart", unknownDetail, expiredDetail)
	}

	forbidden := []req{
		{method: "POST", path: "/v1/topics/other/events", body: []byte("x"), key: pub},
		{method: "GET", path: "/v1/topics/orders/events", key: pub},
		{method: "GET", path: "/v1/topics/orders/events/some-id", key: pub},
		{method: "GET", path: "/v1/topics/orders", key: pub},
		{method: "GET", path: "/v1/topics/missing", key: pub}, // no scope: 403 before 404, so existence does not leak
		{method: "PUT", path: "/v1/topics/orders", key: pub},
		{method: "DELETE", path: "/v1/topics/orders", key: pub},
		{method: "GET", path: "/v1/keys", key: pub},
		{method: "POST", path: "/v1/keys", body: []byte(`{}`), key: pub},
		{method: "DELETE", path: "/v1/keys/key_x", key: pub},
	}
	for _, r := range forbidden {
		t.Run("forbidden "+r.method+" "+r.path, func(t *testing.T) {
			e.with(t).problem(herald.CodeForbidden, "", r)
		})
	}
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/orders/events", body: []byte("x"), key: pub}, nil)

	p := e.problem(herald.CodeNotFound, "", req{method: "GET", path: "/v1/nothing-here"})
	if !strings.Contains(p.Detail, "/v1/nothing-here") {
		t.Errorf("404 detail %q", p.Detail)
	}
	res := e.do(req{method: "PATCH", path: "/v1/topics/orders"})
	p = decodeProblem(t, res)
	if res.status != http.StatusMethodNotAllowed || p.Type != herald.ProblemTypeBase+"method-not-allowed" {
		t.Errorf("PATCH: %d %+v", res.status, p)
	}
	if allow := res.header.Get("Allow"); !strings.Contains(allow, "PUT") || !strings.Contains(allow, "DELETE") {
		t.Errorf("Allow %q", allow)
	}
	if got := metricValue(t, e.reg, "herald_http_requests_total", map[string]string{"route": "unmatched", "code": "405"}); got != 1 {
		t.Errorf("unmatched 405 counted %v times", got)
	}
}

func TestKeyLifecycle(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("orders.eu", "")

	var created keyJSON
	r := e.must(http.StatusCreated, req{method: "POST", path: "/v1/keys",
		body: []byte(`{"name":"ci","scopes":["publish:orders.>","read:orders.*"],"expires_in":"30d"}`)}, &created)
	if !strings.HasPrefix(created.Secret, herald.KeySecretPrefix) || !strings.HasPrefix(created.Secret, created.Prefix) || len(created.Prefix) != 8 {
		t.Errorf("secret %q prefix %q", created.Secret, created.Prefix)
	}
	if !strings.HasPrefix(created.ID, "key_") || created.Name != "ci" || created.ExpiresAt == "" || len(created.Scopes) != 2 {
		t.Errorf("created %+v", created)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("secret response is cacheable: %q", r.header.Get("Cache-Control"))
	}

	list := e.must(http.StatusOK, req{method: "GET", path: "/v1/keys"}, nil)
	if strings.Contains(string(list.body), created.Secret) || strings.Contains(string(list.body), `"secret"`) {
		t.Fatalf("key list shows the secret: %s", list.body)
	}
	var keys keyListJSON
	if err := json.Unmarshal(list.body, &keys); err != nil || len(keys.Keys) != 1 || keys.Keys[0].ID != created.ID || keys.Keys[0].Prefix != created.Prefix {
		t.Fatalf("list %s (err %v)", list.body, err)
	}

	// The key works, within its scopes.
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/orders.eu/events", body: []byte("x"), key: created.Secret}, nil)
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/orders.eu/events", key: created.Secret}, nil)

	// Deleted through this server: refused on the very next request, even
	// though it was just cached.
	e.must(http.StatusNoContent, req{method: "DELETE", path: "/v1/keys/" + created.ID}, nil)
	e.problem(herald.CodeUnauthorized, "", req{method: "POST", path: "/v1/topics/orders.eu/events", body: []byte("x"), key: created.Secret})
	e.problem(herald.CodeNotFound, anyField, req{method: "DELETE", path: "/v1/keys/" + created.ID})
	e.must(http.StatusOK, req{method: "GET", path: "/v1/keys"}, &keys)
	if len(keys.Keys) != 0 {
		t.Errorf("keys after delete: %+v", keys.Keys)
	}

	// A key created with admin scope can manage keys.
	_, admin := e.createKey("admin")
	e.must(http.StatusOK, req{method: "GET", path: "/v1/keys", key: admin}, nil)

	invalid := []struct{ body, field string }{
		{`{"scopes":["admin"]}`, "name"},
		{`{"name":"x"}`, "scopes"},
		{`{"name":"x","scopes":[]}`, "scopes"},
		{`{"name":"x","scopes":["write:orders"]}`, "scopes"},
		{`{"name":"x","scopes":["publish:a..b"]}`, "scopes"},
		{`{"name":"x","scopes":["admin"],"expires_in":"soon"}`, "expires_in"},
		{`{"name":"x","scopes":["admin"],"expires_in":"-1h"}`, "expires_in"},
		{`{"name":"` + strings.Repeat("n", maxKeyNameLen+1) + `","scopes":["admin"]}`, "name"},
		{`{"name":"a\u0000b","scopes":["admin"]}`, "name"},
		{`{"name":"x","scopes":["admin"],"role":"root"}`, "role"},
	}
	for _, c := range invalid {
		t.Run(c.body, func(t *testing.T) {
			e.with(t).problem(herald.CodeInvalid, c.field, req{method: "POST", path: "/v1/keys", body: []byte(c.body)})
		})
	}
	e.problem(herald.CodeInvalid, "", req{method: "POST", path: "/v1/keys"})
}

func TestInsecureNoAuth(t *testing.T) {
	e := newEnv(t, Config{InsecureNoAuth: true})
	e.must(http.StatusCreated, req{method: "PUT", path: "/v1/topics/dev", key: "-"}, nil)
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/dev/events", body: []byte("x"), key: "-"}, nil)
	e.must(http.StatusOK, req{method: "GET", path: "/v1/keys", key: "-"}, nil)
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics", key: "hrld_garbage"}, nil)
}

func TestKeyCacheTTL(t *testing.T) {
	e := newEnv(t, Config{})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	c := newKeyCache(e.store, time.Second, time.Second, 2, clock)

	id, secret := e.createKey("read:a")
	hash := [32]byte(herald.HashKeySecret(secret))
	if k, err := c.lookup(t.Context(), hash); err != nil || k.ID != id {
		t.Fatalf("lookup: %+v %v", k, err)
	}
	// Deleted behind the cache's back (another node): still served while fresh…
	if err := e.store.DeleteKey(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.lookup(t.Context(), hash); err != nil {
		t.Fatalf("fresh cached key: %v", err)
	}
	// …and refused once the TTL has passed.
	now = now.Add(time.Second)
	if _, err := c.lookup(t.Context(), hash); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("stale key: err %v, want not-found", err)
	}
	if c.len() != 0 {
		t.Errorf("cache holds %d entries after the key went", c.len())
	}

	// The cache stays within its size.
	for range 5 {
		_, s := e.createKey("read:a")
		if _, err := c.lookup(t.Context(), [32]byte(herald.HashKeySecret(s))); err != nil {
			t.Fatal(err)
		}
		if c.len() > 2 {
			t.Fatalf("cache grew to %d entries, bound 2", c.len())
		}
	}
}
