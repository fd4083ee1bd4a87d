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
// tokenResponse is the answer of POST /v1/tokens.
type tokenResponse struct {
	Token     string   `json:"token"`
	ExpiresAt string   `json:"expires_at"`
	Scopes    []string `json:"scopes"`
}

func (n *node) issueToken(key, body string) (int, tokenResponse, string) {
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
	var tr tokenResponse
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, &tr); err != nil {
			n.t.Fatal(err)
		}
	}
	return resp.StatusCode, tr, string(raw)
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
	forged, _, err := other.Issue(scopes(t, "read:>"), time.Hour, "admin", time.Time{})
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
	if _, _, err := tk.Issue(herald.Scopes{{Action: herald.ActionPublish, Pattern: "x"}}, time.Minute, "k", time.Time{}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("Issue with a publish scope: %v", err)
	}
	if _, _, err := tk.Issue(scopes(t, "read:x"), 48*time.Hour, "k", time.Time{}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("Issue for 48h: %v", err)
	}
}

// Issue caps a token's expiry at notAfter (its key's), and Verify gives
// back who holds it.
func TestTokensIssueAndVerify(t *testing.T) {
	clk := &clock{}
	tk, err := stream.NewTokens(stream.TokensConfig{Secret: testSecret, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	keyEnds := clk.now().Add(time.Minute)
	tok, exp, err := tk.Issue(scopes(t, "read:orders.*"), time.Hour, "key_1", keyEnds)
	if err != nil || exp.After(keyEnds) || keyEnds.Sub(exp) > time.Second {
		t.Fatalf("Issue capped at the key's end: expires %v, %v; want %v", exp, err, keyEnds)
	}
	who, err := tk.Verify(tok)
	if err != nil || who.Subject != "key_1" || !who.Expires.Equal(exp) || who.Scopes.Strings()[0] != "read:orders.*" {
		t.Errorf("Verify = %+v, %v", who, err)
	}
	clk.advance(2 * time.Minute)
	if _, err := tk.Verify(tok); !herald.IsCode(err, herald.CodeUnauthorized) {
		t.Errorf("Verify after expiry: %v, want unauthorized", err)
	}
}
