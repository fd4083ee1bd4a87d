package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/client"
)

// userToken asks for a connection token for user with the scopes.
func userToken(t *testing.T, m *Main, user string, scopes ...string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"scopes": scopes, "user": user, "ttl": "10m"})
	status, b := apiCall(t, m, "POST", "/v1/tokens", string(body), "Content-Type", "application/json")
	var tok struct {
		Token  string   `json:"token"`
		Scopes []string `json:"scopes"`
	}
	_ = json.Unmarshal(b, &tok)
	if status == 200 && !strings.Contains(strings.Join(tok.Scopes, " "), user) && strings.Contains(strings.Join(scopes, " "), "{user}") {
		t.Fatalf("token scopes %v do not name the user", tok.Scopes)
	}
	return status, tok.Token
}

type wsFrame struct {
	Op    string          `json:"op"`
	ID    string          `json:"id"`
	Sub   string          `json:"sub"`
	Topic string          `json:"topic"`
	Seq   int64           `json:"seq"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Status int    `json:"status"`
		Detail string `json:"detail"`
	} `json:"error"`
}

// wsUser opens a WebSocket with the token and returns its frames.
func wsUser(t *testing.T, m *Main, token, positions string) (*websocket.Conn, <-chan wsFrame) {
	t.Helper()
	u := strings.Replace(m.URL(), "http", "ws", 1) + "/v1/stream?token=" + url.QueryEscape(token)
	if positions != "" {
		u += "&positions=" + url.QueryEscape(positions)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ws, _, err := websocket.Dial(t.Context(), u, nil)
	if err != nil {
		cancel()
		t.Fatalf("dial: %v", err)
	}
	frames := make(chan wsFrame, 100)
	go func() {
		defer close(frames)
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var f wsFrame
			if json.Unmarshal(b, &f) == nil {
				frames <- f
			}
		}
	}()
	t.Cleanup(func() { cancel(); ws.CloseNow() })
	return ws, frames
}

// next returns the next frame that matches, failing at the deadline.
func next(t *testing.T, frames <-chan wsFrame, what string, match func(wsFrame) bool) wsFrame {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("the connection ended waiting for %s", what)
			}
			if match(f) {
				return f
			}
		case <-deadline:
			t.Fatalf("no %s", what)
		}
	}
}

// TestUserSubscriptions: a backend subscribes its users on the server;
// every connection of the user receives those topics without subscribing,
// resumes them after a reconnect, follows changes made while it is open,
// and a token scoped with {user} can read its own user's topics only.
func TestUserSubscriptions(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.StreamTokenSecret = "stream-secret-0123456789abcdef0123456789" })
	c := adminClient(m)
	ctx := t.Context()
	for _, tp := range []string{"accounts.u42.balance", "accounts.u42.tx", "accounts.u7.balance"} {
		if _, _, err := c.PutTopic(ctx, tp, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	put := func(user, topic string, want int) {
		t.Helper()
		if status, b := apiCall(t, m, "PUT", "/v1/users/"+user+"/subscriptions/"+topic, ""); status != want {
			t.Fatalf("PUT %s %s = %d %s; want %d", user, topic, status, b, want)
		}
	}
	put("u42", "accounts.u42.balance", http.StatusCreated)
	put("u42", "accounts.u42.balance", http.StatusOK)
	put("u7", "accounts.u7.balance", http.StatusCreated)
	if status, _ := apiCall(t, m, "PUT", "/v1/users/u42/subscriptions/no.such.topic", ""); status != http.StatusNotFound {
		t.Errorf("PUT to an unknown topic = %d; want 404", status)
	}
	if status, _ := apiCall(t, m, "PUT", "/v1/users/bad%20id/subscriptions/accounts.u42.tx", ""); status != http.StatusBadRequest {
		t.Errorf("PUT for a bad user id = %d; want 400", status)
	}
	status, body := apiCall(t, m, "GET", "/v1/users/u42/subscriptions", "")
	if status != 200 || !strings.Contains(string(body), `"topic":"accounts.u42.balance"`) {
		t.Fatalf("GET subscriptions = %d %s", status, body)
	}

	status, tok := userToken(t, m, "u42", "read:accounts.{user}.>")
	if status != 200 {
		t.Fatalf("token = %d", status)
	}
	if status, _ := userToken(t, m, "", "read:accounts.{user}.>"); status != http.StatusBadRequest {
		t.Errorf("a {user} scope without a user = %d; want 400", status)
	}
	ws, frames := wsUser(t, m, tok, "")
	next(t, frames, "the server-side subscription", func(f wsFrame) bool { return f.Op == "subscribed" && f.ID == "user:accounts.u42.balance" })

	pub := func(topic, data string) int64 {
		t.Helper()
		r, err := c.Publish(ctx, topic, []byte(data), client.PublishOptions{ContentType: "application/json"})
		if err != nil {
			t.Fatal(err)
		}
		return r.Seq
	}
	pub("accounts.u7.balance", `{"other":true}`) // another user's: never seen
	pub("accounts.u42.balance", `{"balance":1}`)
	f := next(t, frames, "the user's event", func(f wsFrame) bool { return f.Op == "event" })
	if f.Sub != "user:accounts.u42.balance" || string(f.Data) != `{"balance":1}` {
		t.Fatalf("event = %+v", f)
	}
	// Subscribing on the socket is held to the token's scopes.
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","id":"spy","topic":"accounts.u7.balance","since":0}`)); err != nil {
		t.Fatal(err)
	}
	if f := next(t, frames, "the answer to a subscribe outside the scopes", func(f wsFrame) bool { return f.ID == "spy" }); f.Op != "error" || f.Error == nil || f.Error.Status != 403 {
		t.Fatalf("subscribe to another user's topic = %+v; want a 403 error", f)
	}
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","id":"own","topic":"accounts.u42.tx"}`)); err != nil {
		t.Fatal(err)
	}
	next(t, frames, "the socket subscription", func(f wsFrame) bool { return f.Op == "subscribed" && f.ID == "own" })

	// A subscription added while the user is connected reaches the
	// connection; one removed ends there.
	put("u42", "accounts.u42.tx", http.StatusCreated)
	next(t, frames, "the new server-side subscription", func(f wsFrame) bool { return f.Op == "subscribed" && f.ID == "user:accounts.u42.tx" })
	if status, _ := apiCall(t, m, "DELETE", "/v1/users/u42/subscriptions/accounts.u42.tx", ""); status != http.StatusNoContent {
		t.Fatalf("DELETE = %d", status)
	}
	next(t, frames, "the removed subscription's end", func(f wsFrame) bool { return f.Op == "unsubscribed" && f.ID == "user:accounts.u42.tx" })

	// Presence.
	waitCond(t, "the user's connection counted", 10*time.Second, func() bool {
		_, b := apiCall(t, m, "GET", "/v1/users/u42/connections", "")
		return strings.Contains(string(b), `"connections":1,"nodes":[{`)
	})

	// Reconnect from the last position: the events published meanwhile
	// arrive, once.
	last := f.Seq
	ws.Close(websocket.StatusNormalClosure, "")
	s2 := pub("accounts.u42.balance", `{"balance":2}`)
	s3 := pub("accounts.u42.balance", `{"balance":3}`)
	_, frames = wsUser(t, m, tok, `{"accounts.u42.balance":`+jsonInt(last)+`}`)
	for _, want := range []int64{s2, s3} {
		f := next(t, frames, "a resumed event", func(f wsFrame) bool { return f.Op == "event" })
		if f.Seq != want || f.Sub != "user:accounts.u42.balance" {
			t.Fatalf("resumed event = %+v; want seq %d", f, want)
		}
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestUserPresenceEvents: with stream.presence-events on, a user's first
// connection publishes herald.user.joined to herald.presence
// and its last one closing herald.user.left; a second connection of the
// same user publishes nothing; a user that wants them reads the topic
// with a key like any other topic. Without the setting nothing is
// published.
func TestUserPresenceEvents(t *testing.T) {
	t.Parallel()
	secret := func(c *Config) { c.StreamTokenSecret = "stream-secret-0123456789abcdef0123456789" }
	m, _ := testServer(t, t.TempDir(), func(c *Config) { secret(c); c.StreamPresenceEvents = true })
	c := adminClient(m)
	ctx := t.Context()
	type presence struct {
		Type string
		Key  string
		Body struct {
			User        string `json:"user"`
			Connections int    `json:"connections"`
			Time        string `json:"time"`
		}
	}
	read := func(c *client.Client) []presence {
		page, err := c.ListEvents(ctx, "herald.presence", 0, 100)
		if err != nil {
			return nil
		}
		var out []presence
		for _, e := range page.Events {
			p := presence{Type: e.Type, Key: e.Key}
			if err := json.Unmarshal(e.Payload, &p.Body); err != nil {
				t.Fatalf("presence payload %s: %v", e.Payload, err)
			}
			out = append(out, p)
		}
		return out
	}
	_, tok := userToken(t, m, "u42", "read:accounts.{user}.>")
	ws1, _ := wsUser(t, m, tok, "")
	waitCond(t, "herald.user.joined", 60*time.Second, func() bool { return len(read(c)) >= 1 })
	ws2, _ := wsUser(t, m, tok, "") // a second tab: not a join
	waitCond(t, "both connections counted", 60*time.Second, func() bool {
		_, b := apiCall(t, m, "GET", "/v1/users/u42/connections", "")
		return strings.Contains(string(b), `"connections":2`)
	})
	ws1.Close(websocket.StatusNormalClosure, "")
	ws2.Close(websocket.StatusNormalClosure, "")
	waitCond(t, "herald.user.left", 60*time.Second, func() bool { return len(read(c)) >= 2 })
	got := read(c)
	if len(got) != 2 {
		t.Fatalf("presence events %+v; want one join and one leave", got)
	}
	j, l := got[0], got[1]
	if j.Type != "herald.user.joined" || j.Key != "u42" || j.Body.User != "u42" || j.Body.Connections != 1 || j.Body.Time == "" {
		t.Errorf("join = %+v", j)
	}
	if l.Type != "herald.user.left" || l.Key != "u42" || l.Body.Connections != 0 || l.Body.User != "u42" {
		t.Errorf("leave = %+v", l)
	}
	// Off by default: no topic, no events.
	m2, _ := testServer(t, t.TempDir(), secret)
	_, tok2 := userToken(t, m2, "u42", "read:accounts.{user}.>")
	ws3, _ := wsUser(t, m2, tok2, "")
	waitCond(t, "the connection counted", 10*time.Second, func() bool {
		_, b := apiCall(t, m2, "GET", "/v1/users/u42/connections", "")
		return strings.Contains(string(b), `"connections":1`)
	})
	ws3.Close(websocket.StatusNormalClosure, "")
	if _, err := adminClient(m2).GetTopic(ctx, "herald.presence"); !isStatus(err, 404) {
		t.Errorf("herald.presence without stream.presence-events: %v; want 404", err)
	}
}
