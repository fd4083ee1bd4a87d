package stream_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/stream"
)

// revocableKeys plays the API with its KeyChecker: keys expire by the test
// clock and can be deleted, and both are refused from then on.
type revocableKeys struct {
	keys  testKeys
	clock *clock

	mu      sync.Mutex
	expires map[string]time.Time
	deleted map[string]bool
}

func (k *revocableKeys) Authenticate(r *http.Request) (herald.Scopes, string, error) {
	scopes, subject, err := k.keys.Authenticate(r)
	if err == nil {
		_, err = k.CheckKey(r.Context(), subject)
	}
	return scopes, subject, err
}

func (k *revocableKeys) CheckKey(_ context.Context, subject string) (time.Time, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	exp := k.expires[subject]
	if k.deleted[subject] || !exp.IsZero() && !k.clock.now().Before(exp) {
		return time.Time{}, herald.Errorf(herald.CodeUnauthorized, "the API key is not valid")
	}
	return exp, nil
}

func (k *revocableKeys) delete(subject string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.deleted[subject] = true
}

func revocableNode(t *testing.T, expires map[string]time.Time, names ...string) (*node, *revocableKeys, *clock) {
	clk := &clock{}
	keys := &revocableKeys{keys: defaultKeys(t), clock: clk, expires: expires, deleted: map[string]bool{}}
	for _, name := range names {
		keys.keys[name] = scopes(t, "read:orders.>")
	}
	n := startNode(t, nodeOptions{auth: keys, clock: clk,
		cfg: stream.Config{SweepInterval: 10 * time.Millisecond, KeyCheckInterval: 10 * time.Millisecond}})
	n.createTopic("orders.eu", 0)
	return n, keys, clk
}

// wantKeyRevoked checks that the WebSocket was closed for its key.
func wantKeyRevoked(t *testing.T, what string, ws *wsClient) {
	t.Helper()
	if code, reason := ws.closeStatus(); code != websocket.StatusPolicyViolation || reason != stream.ReasonKeyRevoked {
		t.Errorf("%s: closed with %v %q, want %v %q", what, code, reason, websocket.StatusPolicyViolation, stream.ReasonKeyRevoked)
	}
}

// wantDisconnect checks that the SSE stream ended with herald.disconnect
// of one of the codes.
func wantDisconnect(t *testing.T, what string, sse *sseClient, codes ...string) {
	t.Helper()
	for {
		ev := sse.next()
		if ev == nil {
			t.Errorf("%s: the stream ended without herald.disconnect", what)
			return
		}
		if ev.Event == "herald.disconnect" {
			for _, code := range codes {
				if strings.Contains(ev.Data, `"code":"`+code+`"`) {
					return
				}
			}
			t.Errorf("%s: %s, want code %s", what, ev.Data, strings.Join(codes, " or "))
			return
		}
	}
}

// TestTokenNeverOutlivesItsKey: a token asked for with a 24h ttl by a key
// that expires in 2 seconds expires with the key; once the key has
// expired, its token is refused and the streams opened with either end.
func TestTokenNeverOutlivesItsKey(t *testing.T) {
	t.Parallel()
	expiry := time.Now().Add(2 * time.Second)
	n, _, clk := revocableNode(t, map[string]time.Time{"short": expiry}, "short")
	_, tr, body := n.issueToken("short", `{"scopes":["read:orders.>"],"ttl":"24h"}`)
	exp, err := time.Parse(time.RFC3339, tr.ExpiresAt)
	if err != nil {
		t.Fatalf("token: %s", body)
	}
	if exp.After(expiry) {
		t.Errorf("a 24h token of a key expiring at %s expires at %s", expiry, exp)
	}
	q := "token=" + url.QueryEscape(tr.Token)
	withToken := n.openSSE("orders.eu", "", q, nil)
	withKey := n.dialWS("short", "")
	withKey.subscribe(map[string]any{"id": "a", "topic": "orders.eu"})

	clk.advance(3 * time.Second) // past the key's expiry
	// The token expires with its key: either may be seen first.
	wantDisconnect(t, "SSE with the token", withToken, "token-expired", "key-revoked")
	wantKeyRevoked(t, "WebSocket with the key", withKey)
	if c, resp := n.getSSE("orders.eu", "", q, nil); c != nil || resp.StatusCode != 401 {
		t.Errorf("the token after its key expired: status %d", resp.StatusCode)
	}
}

// TestStreamsOfADeletedKeyEnd: once a key is deleted (here: as another
// node would see it, through CheckKey only), its tokens are refused and
// every stream opened with it or with its tokens ends with key-revoked;
// other keys' streams go on. Revoke closes them at once.
func TestStreamsOfADeletedKeyEnd(t *testing.T) {
	t.Parallel()
	n, keys, _ := revocableNode(t, nil, "doomed", "other")
	_, tr, body := n.issueToken("doomed", `{"scopes":["read:orders.>"],"ttl":"1h"}`)
	if tr.Token == "" {
		t.Fatal(body)
	}
	q := "token=" + url.QueryEscape(tr.Token)
	sseKey := n.openSSE("orders.eu", "doomed", "", nil)
	sseToken := n.openSSE("orders.eu", "", q, nil)
	wsKey := n.dialWS("doomed", "")
	wsToken := n.dialWS("", q)
	for _, ws := range []*wsClient{wsKey, wsToken} {
		ws.subscribe(map[string]any{"id": "a", "topic": "orders.eu"})
	}
	survivor := n.dialWS("other", "")
	survivor.subscribe(map[string]any{"id": "a", "topic": "orders.eu"})

	keys.delete("doomed")
	wantDisconnect(t, "SSE with the key", sseKey, "key-revoked")
	wantDisconnect(t, "SSE with the token", sseToken, "key-revoked")
	wantKeyRevoked(t, "WebSocket with the key", wsKey)
	wantKeyRevoked(t, "WebSocket with the token", wsToken)
	c, resp := n.getSSE("orders.eu", "", q, nil)
	if c != nil || resp.StatusCode != 401 {
		t.Fatalf("a token of the deleted key: status %d", resp.StatusCode)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "deleted or has expired") {
		t.Errorf("a token of the deleted key: %s", b)
	}
	n.publish(pub{topic: "orders.eu", payload: "{}"})
	survivor.events(1)

	// Revoke, as the API calls it when it deletes a key, ends them at
	// once, whatever the checker says.
	ws := n.dialWS("other", "")
	n.hub.Revoke("other")
	wantKeyRevoked(t, "WebSocket of a revoked key", ws)
	wantKeyRevoked(t, "the other WebSocket of a revoked key", survivor)
}
