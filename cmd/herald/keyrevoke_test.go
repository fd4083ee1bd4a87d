package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/stream"
)

// The tests below open streams with a key or one of its tokens and check
// that they end, and the tokens stop working, once the key is deleted or
// has expired.

const revokeSecret = "revoke-secret-0123456789abcdef0123456789"

// mintToken asks base for a connection token with the key.
// token is the answer of POST /v1/tokens.
type token struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

func mintToken(t *testing.T, base, key, body string) token {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/v1/tokens", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr token
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /v1/tokens = %d, %v", resp.StatusCode, err)
	}
	return tr
}

// sseStream is an open SSE stream; ended receives the data of its
// herald.disconnect event ("" if it ended without one). cancel closes it.
type sseStream struct {
	ended  chan string
	cancel context.CancelFunc
}

// streamStatus opens an SSE stream of the topic with the key or, with
// token set, with ?token=, and returns the status; the stream when 200.
func streamStatus(t *testing.T, base, topic, key, token string) (int, *sseStream) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	u := base + "/v1/topics/" + topic + "/stream"
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	req.Header.Set("Accept", "text/event-stream")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		cancel()
		return resp.StatusCode, nil
	}
	t.Cleanup(cancel)
	s := &sseStream{ended: make(chan string, 1), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		disconnect := false
		for sc.Scan() {
			line := sc.Text()
			if line == "event: herald.disconnect" {
				disconnect = true
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok && disconnect {
				s.ended <- d
				return
			}
		}
		s.ended <- ""
	}()
	return 200, s
}

func openStream(t *testing.T, base, topic, key, token string) *sseStream {
	t.Helper()
	status, s := streamStatus(t, base, topic, key, token)
	if s == nil {
		t.Fatalf("SSE %s: status %d", topic, status)
	}
	return s
}

// wantEnded waits for the SSE stream to end with one of the codes.
func (s *sseStream) wantEnded(t *testing.T, what string, codes ...string) {
	t.Helper()
	select {
	case d := <-s.ended:
		for _, c := range codes {
			if strings.Contains(d, `"code":"`+c+`"`) {
				return
			}
		}
		t.Errorf("%s ended with %q, want code %s", what, d, strings.Join(codes, " or "))
	case <-time.After(15 * time.Second):
		t.Errorf("%s still open after 15s", what)
	}
}

// wsStream is an open WebSocket; closed receives how it was closed.
type wsStream struct{ closed chan websocket.CloseError }

func openWS(t *testing.T, base, topic, key, token string) *wsStream {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/stream"
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	h := http.Header{}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	conn, _, err := websocket.Dial(t.Context(), u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	if err := conn.Write(t.Context(), websocket.MessageText, []byte(`{"op":"subscribe","id":"a","topic":"`+topic+`"}`)); err != nil {
		t.Fatal(err)
	}
	_, b, err := conn.Read(t.Context())
	if err != nil || !strings.Contains(string(b), `"subscribed"`) {
		t.Fatalf("subscribe: %s, %v", b, err)
	}
	s := &wsStream{closed: make(chan websocket.CloseError, 1)}
	go func() {
		for {
			if _, _, err := conn.Read(context.Background()); err != nil {
				var ce websocket.CloseError
				errors.As(err, &ce)
				s.closed <- ce
				return
			}
		}
	}()
	return s
}

// wantRevoked waits for the WebSocket to be closed for its key.
func (s *wsStream) wantRevoked(t *testing.T, what string) {
	t.Helper()
	select {
	case ce := <-s.closed:
		if ce.Code != stream.CloseKeyRevoked || ce.Reason != stream.ReasonKeyRevoked {
			t.Errorf("%s closed with %d %q, want %d %q", what, ce.Code, ce.Reason, stream.CloseKeyRevoked, stream.ReasonKeyRevoked)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("%s still open after 15s", what)
	}
}

// TestTokenNeverOutlivesItsKeyEndToEnd: a token asked for with ttl 24h by a
// key that expires in 2 seconds expires with it; after that the token is
// refused, and the streams opened with the key or the token have ended.
func TestTokenNeverOutlivesItsKeyEndToEnd(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.StreamTokenSecret = revokeSecret })
	ctx := t.Context()
	admin := adminClient(m)
	if _, _, err := admin.PutTopic(ctx, "live.orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	k, err := admin.CreateKey(ctx, "short", []string{"read:live.>"}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tr := mintToken(t, m.URL(), k.Secret, `{"scopes":["read:live.>"],"ttl":"24h"}`)
	exp, err := time.Parse(time.RFC3339, tr.ExpiresAt)
	if err != nil || exp.After(k.ExpiresAt) {
		t.Fatalf("a 24h token of a key expiring at %s expires at %s (%v)", k.ExpiresAt, tr.ExpiresAt, err)
	}
	sse := openStream(t, m.URL(), "live.orders", "", tr.Token)
	ws := openWS(t, m.URL(), "live.orders", k.Secret, "")

	sse.wantEnded(t, "the SSE stream of the token", "token-expired", "key-revoked")
	ws.wantRevoked(t, "the WebSocket of the key")
	if status, _ := streamStatus(t, m.URL(), "live.orders", "", tr.Token); status != 401 {
		t.Errorf("the token after its key expired: status %d, want 401", status)
	}
}

// TestKeyDeletionEndsItsStreams: deleting a key ends the streams opened
// with it and with its tokens, and its tokens are refused, at once.
func TestKeyDeletionEndsItsStreams(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.StreamTokenSecret = revokeSecret })
	checkDeletionEndsStreams(t, m.URL(), m.URL())
}

// TestKeyDeletionEndsItsStreamsOnEveryNode: a key deleted through one node
// of a PostgreSQL cluster ends its streams, and its tokens, on the others
// within a few seconds.
func TestKeyDeletionEndsItsStreamsOnEveryNode(t *testing.T) {
	t.Parallel()
	dsn := pgDSN(t)
	both := func(c *Config) { c.DatabaseURL = Secret(dsn); c.StreamTokenSecret = revokeSecret }
	a, _ := testServer(t, t.TempDir(), both)
	b, _ := testServer(t, t.TempDir(), both)
	checkDeletionEndsStreams(t, a.URL(), b.URL())
}

// checkDeletionEndsStreams deletes a key through the node at deleter while
// its streams are open on the node at streamer.
func checkDeletionEndsStreams(t *testing.T, deleter, streamer string) {
	ctx := t.Context()
	admin := client.New(deleter, client.WithKey(testAdminKey))
	if _, _, err := admin.PutTopic(ctx, "live.orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	k, err := admin.CreateKey(ctx, "doomed", []string{"read:live.>"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	tr := mintToken(t, streamer, k.Secret, `{"scopes":["read:live.>"],"ttl":"1h"}`)
	sseKey := openStream(t, streamer, "live.orders", k.Secret, "")
	sseToken := openStream(t, streamer, "live.orders", "", tr.Token)
	wsKey := openWS(t, streamer, "live.orders", k.Secret, "")
	wsToken := openWS(t, streamer, "live.orders", "", tr.Token)

	start := time.Now()
	if err := admin.DeleteKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	sseKey.wantEnded(t, "the SSE stream of the key", "key-revoked")
	sseToken.wantEnded(t, "the SSE stream of the token", "key-revoked")
	wsKey.wantRevoked(t, "the WebSocket of the key")
	wsToken.wantRevoked(t, "the WebSocket of the token")
	t.Logf("streams ended %v after the deletion", time.Since(start).Round(time.Millisecond))
	waitCond(t, "the token refused", 10*time.Second, func() bool {
		status, s := streamStatus(t, streamer, "live.orders", "", tr.Token)
		if s != nil {
			s.cancel()
		}
		return status == 401
	})
}
