package stream_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/stream"
)

// issueToken asks the node's token endpoint for a token with the key.
func (n *node) issueToken(key, body string) (int, stream.TokenResponse, string) {
	n.t.Helper()
	req, err := http.NewRequest(http.MethodPost, n.url+"/v1/tokens", strings.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := n.srv.Client().Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var tr stream.TokenResponse
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, &tr); err != nil {
			n.t.Fatal(err)
		}
		if resp.Header.Get("Cache-Control") != "no-store" {
			n.t.Errorf("token response Cache-Control %q", resp.Header.Get("Cache-Control"))
		}
	}
	return resp.StatusCode, tr, string(raw)
}

func TestTokenEndpoint(t *testing.T) {
	clk := &clock{}
	n := startNode(t, nodeOptions{clock: clk})
	status, tr, body := n.issueToken("reader", `{"scopes":["read:orders.*"],"ttl":"10m"}`)
	if status != 200 || tr.Token == "" || strings.Join(tr.Scopes, ",") != "read:orders.*" {
		t.Fatalf("issue: %d %s", status, body)
	}
	exp, err := time.Parse(time.RFC3339, tr.ExpiresAt)
	if err != nil || exp.Sub(clk.now()) > 10*time.Minute || exp.Sub(clk.now()) < 9*time.Minute {
		t.Errorf("expires_at %q: want about 10m from now", tr.ExpiresAt)
	}
	got, subject, err := n.tokens.Verify(tr.Token)
	if err != nil || subject != "reader" || got.Strings()[0] != "read:orders.*" {
		t.Errorf("Verify: %v %q %v", got, subject, err)
	}
	// The default ttl is 15 minutes.
	if _, tr, _ := n.issueToken("reader", `{"scopes":["read:orders.eu"]}`); tr.ExpiresAt == "" {
		t.Error("no ttl: no token")
	} else if exp, _ := time.Parse(time.RFC3339, tr.ExpiresAt); exp.Sub(clk.now()) < 14*time.Minute {
		t.Errorf("default ttl: expires %s", tr.ExpiresAt)
	}

	for _, tc := range []struct {
		key, body string
		status    int
		detail    string
	}{
		{"reader", `{"scopes":["read:payments.>"]}`, 403, "does not hold scope"},
		{"reader", `{"scopes":["read:>"]}`, 403, "does not hold scope"},
		{"admin", `{"scopes":["publish:orders.eu"]}`, 400, "only read and subscribe"},
		{"admin", `{"scopes":["admin"]}`, 400, "only read and subscribe"},
		{"reader", `{"scopes":["read:orders.*"],"ttl":"25h"}`, 400, "at most 1d"},
		{"reader", `{"scopes":["read:orders.*"],"ttl":"0s"}`, 400, "ttl"},
		{"reader", `{"scopes":["read:orders.*"],"ttl":"soon"}`, 400, "ttl"},
		{"reader", `{"scopes":[]}`, 400, "at least one scope"},
		{"reader", `{"scopes":["read:orders.*"],"extra":1}`, 400, "JSON object"},
		{"reader", `{"scopes":["read:orders.*"]} {}`, 400, "one JSON object"},
		{"", `{"scopes":["read:orders.*"]}`, 401, "API key"},
	} {
		status, _, body := n.issueToken(tc.key, tc.body)
		if status != tc.status || !strings.Contains(body, tc.detail) {
			t.Errorf("%s %s: %d %s; want %d with %q", tc.key, tc.body, status, body, tc.status, tc.detail)
		}
	}
	admin := func() string {
		_, tr, _ := n.issueToken("admin", `{"scopes":["read:>"]}`)
		return tr.Token
	}()
	if admin == "" {
		t.Error("admin could not get a read:> token")
	}
}

// A token opens streams within its scopes only; an expired, forged or
// altered token is refused with a clear problem; an open connection ends
// when its token expires.
func TestTokenAuthForStreams(t *testing.T) {
	clk := &clock{}
	n := startNode(t, nodeOptions{clock: clk, cfg: stream.Config{SweepInterval: 10 * time.Millisecond}})
	n.createTopic("orders.eu", 0)
	n.createTopic("payments.eu", 0)
	_, tr, body := n.issueToken("admin", `{"scopes":["read:orders.*"],"ttl":"10m"}`)
	if tr.Token == "" {
		t.Fatal(body)
	}
	q := "token=" + url.QueryEscape(tr.Token)

	ws := n.dialWS("", q) // no Authorization header: the token is enough
	ws.subscribe(map[string]any{"id": "a", "topic": "orders.eu"})
	for _, topic := range []string{"payments.eu", "orders.>"} {
		ws.send(map[string]any{"op": "subscribe", "id": "b", "topic": topic})
		if f := ws.next(); f.Op != "error" || f.Error.Status != 403 {
			t.Errorf("subscribe %s with a read:orders.* token: %+v", topic, f)
		}
	}
	sse := n.openSSE("orders.eu", "", q, nil)
	if c, resp := n.getSSE("payments.eu", "", q, nil); c != nil || resp.StatusCode != 403 {
		t.Errorf("SSE out of the token's scope: status %d", resp.StatusCode)
	}
	n.publish(pub{topic: "orders.eu", payload: "{}"})
	ws.events(1)
	sse.events(1)

	// Forged and altered tokens.
	other, err := stream.NewTokens(stream.TokensConfig{Secret: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := other.Issue(scopes(t, "read:>"), time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tr.Token, ".")
	altered := parts[0] + "." + parts[1] + "x." + parts[2]
	for name, tok := range map[string]string{"forged": forged, "altered": altered, "garbage": "abc", "huge": strings.Repeat("a", 5000)} {
		c, resp := n.getSSE("orders.eu", "", "token="+url.QueryEscape(tok), nil)
		if c != nil || resp.StatusCode != 401 {
			t.Errorf("%s token: status %d", name, resp.StatusCode)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "the connection token is not valid") {
			t.Errorf("%s token: %s", name, b)
		}
	}

	// Expiry: new connections are refused, open ones end.
	clk.advance(11 * time.Minute)
	c, resp := n.getSSE("orders.eu", "", q, nil)
	if c != nil || resp.StatusCode != 401 {
		t.Fatalf("expired token: status %d", resp.StatusCode)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), "expired") {
		t.Errorf("expired token problem: %s", b)
	}
	if _, resp, err := n.tryDialWS("", q); err == nil || resp.StatusCode != 401 {
		t.Errorf("expired token WebSocket: %v", err)
	}
	if code, reason := ws.closeStatus(); code != websocket.StatusPolicyViolation || reason != stream.ReasonTokenExpired {
		t.Errorf("open WebSocket at expiry: %v %q", code, reason)
	}
	ev := sse.next()
	if ev == nil || ev.Event != "herald.disconnect" || !strings.Contains(ev.Data, "token-expired") {
		t.Errorf("open SSE at expiry: %+v", ev)
	}
}

// Connections opened with a token count against the key that asked for
// it.
func TestTokenConnectionsCountForTheirKey(t *testing.T) {
	n := startNode(t, nodeOptions{cfg: stream.Config{MaxConnsPerSubject: 1}})
	_, tr, _ := n.issueToken("reader", `{"scopes":["read:orders.*"]}`)
	n.dialWS("reader", "")
	if _, resp, err := n.tryDialWS("", "token="+url.QueryEscape(tr.Token)); err == nil || resp.StatusCode != 429 {
		t.Errorf("token of a key at its limit: %v", err)
	}
}

func TestNewTokensChecksTheSecret(t *testing.T) {
	if _, err := stream.NewTokens(stream.TokensConfig{Secret: []byte("short")}); err == nil {
		t.Error("a 5-byte secret was accepted")
	}
	tk, err := stream.NewTokens(stream.TokensConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tk.Issue(herald.Scopes{{Action: herald.ActionPublish, Pattern: "x"}}, time.Minute, "k"); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("Issue with a publish scope: %v", err)
	}
	if _, _, err := tk.Issue(scopes(t, "read:x"), 48*time.Hour, "k"); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("Issue for 48h: %v", err)
	}
}
