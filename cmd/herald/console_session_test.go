package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestConsoleSessions signs in to the operator console through the
// server: the key goes into a sealed HttpOnly, SameSite=Strict cookie;
// reads work with the cookie alone, changes only with the session's CSRF
// token; a forged cookie or sign-in from another site is refused; a
// deleted key ends its sessions; signing out clears the cookie. API keys
// keep working in the Authorization header.
func TestConsoleSessions(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	do := func(method, path, body string, hdr ...string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, m.URL()+path, strings.NewReader(body))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp, out
	}
	signIn := func(key string) (cookie, csrf string) {
		t.Helper()
		resp, out := do("POST", "/console/session", `{"key":"`+key+`"}`, "Content-Type", "application/json", "Origin", m.URL())
		if resp.StatusCode != 200 || out["csrf_token"] == "" {
			t.Fatalf("sign-in: %d %v", resp.StatusCode, out)
		}
		sc := resp.Header.Get("Set-Cookie")
		for _, want := range []string{"herald_session=", "HttpOnly", "SameSite=Strict", "Path=/"} {
			if !strings.Contains(sc, want) {
				t.Fatalf("session cookie %q lacks %s", sc, want)
			}
		}
		if strings.Contains(sc, "Secure") || strings.Contains(sc, key) {
			t.Fatalf("session cookie over plain HTTP: %q (no Secure, never the key itself)", sc)
		}
		return strings.SplitN(sc, ";", 2)[0], out["csrf_token"].(string)
	}

	// Sign-in only from this origin, as JSON.
	if resp, _ := do("POST", "/console/session", `{"key":"`+testAdminKey+`"}`, "Content-Type", "application/json", "Origin", "https://evil.example"); resp.StatusCode != 403 {
		t.Fatalf("sign-in from another origin: %d", resp.StatusCode)
	}
	if resp, _ := do("POST", "/console/session", `key=`+testAdminKey, "Content-Type", "application/x-www-form-urlencoded"); resp.StatusCode != 415 {
		t.Fatalf("sign-in by a form post: %d", resp.StatusCode)
	}

	cookie, csrf := signIn(testAdminKey)
	if resp, out := do("GET", "/console/session", "", "Cookie", cookie); resp.StatusCode != 200 || out["signed_in"] != true || out["csrf_token"] != csrf {
		t.Fatalf("session: %d %v", resp.StatusCode, out)
	}
	if resp, _ := do("GET", "/v1/topics", "", "Cookie", cookie); resp.StatusCode != 200 {
		t.Fatalf("a read with the session: %d", resp.StatusCode)
	}
	for _, hdr := range [][]string{{"Cookie", cookie}, {"Cookie", cookie, "X-CSRF-Token", "nope"}} {
		resp, out := do("PUT", "/v1/topics/console.x", `{}`, append(hdr, "Content-Type", "application/json")...)
		if resp.StatusCode != 403 || !strings.Contains(out["detail"].(string), "X-CSRF-Token") {
			t.Fatalf("a change without the CSRF token: %d %v", resp.StatusCode, out)
		}
	}
	if resp, out := do("PUT", "/v1/topics/console.x", `{}`, "Cookie", cookie, "X-CSRF-Token", csrf, "Content-Type", "application/json"); resp.StatusCode != 201 {
		t.Fatalf("a change with the CSRF token: %d %v", resp.StatusCode, out)
	}
	// A forged or altered cookie is no session.
	forged := cookie[:len(cookie)-4] + "AAAA"
	if resp, _ := do("GET", "/v1/topics", "", "Cookie", forged); resp.StatusCode != 401 {
		t.Fatalf("a forged session: %d", resp.StatusCode)
	}
	// Keys still work in the header, beside sessions.
	if resp, _ := do("GET", "/v1/topics", "", "Authorization", "Bearer "+testAdminKey); resp.StatusCode != 200 {
		t.Fatalf("an API key: %d", resp.StatusCode)
	}

	// A session of a key ends when the key is deleted.
	k := mustCall(t, m, testAdminKey, "POST", "/v1/keys", `{"name":"operator","scopes":["admin"]}`, 201)
	kc, _ := signIn(k["secret"].(string))
	if resp, _ := do("GET", "/v1/keys", "", "Cookie", kc); resp.StatusCode != 200 {
		t.Fatalf("the operator key's session: %d", resp.StatusCode)
	}
	mustCall(t, m, testAdminKey, "DELETE", "/v1/keys/"+k["id"].(string), "", 204)
	waitCond(t, "the deleted key's session refused", 60e9, func() bool {
		resp, _ := do("GET", "/v1/keys", "", "Cookie", kc)
		return resp.StatusCode == 401
	})

	// Signing out needs the token, and clears the cookie.
	if resp, _ := do("DELETE", "/console/session", "", "Cookie", cookie); resp.StatusCode != 403 {
		t.Fatalf("sign-out without the CSRF token: %d", resp.StatusCode)
	}
	resp, _ := do("DELETE", "/console/session", "", "Cookie", cookie, "X-CSRF-Token", csrf)
	if resp.StatusCode != 204 || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("sign-out: %d %q", resp.StatusCode, resp.Header.Get("Set-Cookie"))
	}
}
