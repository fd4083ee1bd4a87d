package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// POST /v1/tokens issues a connection token holding scopes of the
// caller's own key, for at most the key's life, and refuses anything else
// with a problem naming the field.
func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	_, reader := e.createKey("read:orders.>")
	issue := func(key, body string) resp {
		return e.do(req{method: "POST", path: "/v1/tokens", key: key, body: []byte(body),
			header: map[string]string{"Content-Type": "application/json"}})
	}

	res := issue(reader, `{"scopes":["read:orders.*"],"ttl":"10m"}`)
	var tr tokenJSON
	if res.status != http.StatusOK || res.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("issue: %d %s (Cache-Control %q)", res.status, res.body, res.header.Get("Cache-Control"))
	}
	decodeInto(t, res.body, &tr)
	if tr.Token == "" || strings.Join(tr.Scopes, ",") != "read:orders.*" {
		t.Fatalf("issued %+v", tr)
	}
	exp, err := time.Parse(time.RFC3339Nano, tr.ExpiresAt)
	if err != nil || time.Until(exp) > 10*time.Minute || time.Until(exp) < 9*time.Minute {
		t.Errorf("expires_at %q: want about 10m from now", tr.ExpiresAt)
	}
	who, err := e.tokens.Verify(tr.Token)
	if err != nil || who.Subject == "" || who.Scopes.Strings()[0] != "read:orders.*" {
		t.Errorf("Verify: %+v %v", who, err)
	}
	// The default ttl is 15 minutes.
	res = issue(reader, `{"scopes":["read:orders.eu"]}`)
	decodeInto(t, res.body, &tr)
	if exp, _ := time.Parse(time.RFC3339Nano, tr.ExpiresAt); time.Until(exp) < 14*time.Minute {
		t.Errorf("default ttl: expires %s", tr.ExpiresAt)
	}

	for _, tc := range []struct {
		key, body string
		code      herald.Code
		field     string
	}{
		{reader, `{"scopes":["read:payments.>"]}`, herald.CodeForbidden, "scopes"},
		{reader, `{"scopes":["read:>"]}`, herald.CodeForbidden, "scopes"},
		{"", `{"scopes":["publish:orders.eu"]}`, herald.CodeInvalid, "scopes"},
		{"", `{"scopes":["admin"]}`, herald.CodeInvalid, "scopes"},
		{reader, `{"scopes":["read:orders.*"],"ttl":"25h"}`, herald.CodeInvalid, "ttl"},
		{reader, `{"scopes":["read:orders.*"],"ttl":"0s"}`, herald.CodeInvalid, "ttl"},
		{reader, `{"scopes":["read:orders.*"],"ttl":"soon"}`, herald.CodeInvalid, "ttl"},
		{reader, `{"scopes":[]}`, herald.CodeInvalid, "scopes"},
		{reader, `{"scopes":["read:orders.*"],"extra":1}`, herald.CodeInvalid, "extra"},
		{"-", `{"scopes":["read:orders.*"]}`, herald.CodeUnauthorized, ""},
	} {
		e.problem(tc.code, tc.field, req{method: "POST", path: "/v1/tokens", key: tc.key, body: []byte(tc.body),
			header: map[string]string{"Content-Type": "application/json"}})
	}
	// Admin may ask for any read scope.
	e.must(http.StatusOK, req{method: "POST", path: "/v1/tokens", body: []byte(`{"scopes":["read:>"]}`),
		header: map[string]string{"Content-Type": "application/json"}}, nil)
}

func decodeInto(t *testing.T, body []byte, out any) {
	t.Helper()
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
}
