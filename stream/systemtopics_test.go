package stream_test

import (
	"strings"
	"testing"
)

// TestWildcardsLeaveOutSystemTopics: a key whose scope is a wildcard
// ("read:>") streams every topic but Herald's own: a pattern stream of it
// gets no herald.* event, live or replayed, and the system topic itself is
// refused; a key whose scope names the system topics, and admin, get them.
func TestWildcardsLeaveOutSystemTopics(t *testing.T) {
	t.Parallel()
	keys := defaultKeys(t)
	keys["wide"] = scopes(t, "read:>")
	keys["suffix"] = scopes(t, "read:*.subscriptions")
	keys["system"] = scopes(t, "read:herald.>")
	n := startNode(t, nodeOptions{keys: keys})
	n.createTopic("herald.subscriptions", 0)
	n.createTopic("orders.subscriptions", 0)
	n.publish(pub{topic: "herald.subscriptions", payload: `{"url":"https://hooks.example.com/?token=secret"}`})
	n.publish(pub{topic: "orders.subscriptions", payload: `{"n":1}`})

	// Replay (since=0) then live: the wildcard keys see only the user topic.
	system, user := 1, 1 // events in each topic
	for _, c := range []struct{ key, pattern string }{{"wide", ">"}, {"suffix", "*.subscriptions"}} {
		ws := n.dialWS(c.key, "")
		ws.subscribe(map[string]any{"id": "all", "topic": c.pattern, "since": 0})
		sse := n.openSSE(c.pattern, c.key, "since=0&format=json", nil)
		n.publish(pub{topic: "herald.subscriptions", payload: `{"live":true}`})
		n.publish(pub{topic: "orders.subscriptions", payload: `{"n":2}`})
		system++
		user++
		for i, f := range ws.events(user) {
			if f.Topic != "orders.subscriptions" || f.Seq != int64(i+1) {
				t.Errorf("%s streaming %s over WebSocket: event %d is %s seq %d", c.key, c.pattern, i, f.Topic, f.Seq)
			}
		}
		for i, ev := range sse.events(user) {
			if !strings.Contains(ev.Data, `"topic":"orders.subscriptions"`) {
				t.Errorf("%s streaming %s over SSE: event %d is %s", c.key, c.pattern, i, ev.Data)
			}
		}
		sse.close()

		ws.send(map[string]any{"op": "subscribe", "id": "sys", "topic": "herald.subscriptions"})
		if f := ws.next(); f.Op != "error" || f.Error.Status != 403 {
			t.Errorf("%s subscribing to herald.subscriptions: %+v, want a 403 error", c.key, f)
		}
		if s, resp := n.getSSE("herald.subscriptions", c.key, "", nil); s != nil || resp.StatusCode != 403 {
			t.Errorf("%s streaming herald.subscriptions over SSE: status %d, want 403", c.key, resp.StatusCode)
		}
	}

	// Resuming from positions that name the system topic gives nothing of it.
	ws := n.dialWS("wide", "")
	ws.subscribe(map[string]any{"id": "all", "topic": ">", "positions": map[string]int64{"herald.subscriptions": 0, "orders.subscriptions": 0}})
	for _, f := range ws.events(user) {
		if f.Topic != "orders.subscriptions" {
			t.Errorf("wide resuming > from a system topic position: got %s seq %d", f.Topic, f.Seq)
		}
	}

	// A wildcard key cannot give a token more than it holds.
	if status, _, body := n.issueToken("wide", `{"scopes":["read:herald.>"]}`); status != 403 {
		t.Errorf("a read:> key asking for a read:herald.> token: %d %s", status, body)
	}
	if status, _, body := n.issueToken("system", `{"scopes":["read:herald.subscriptions"]}`); status != 200 {
		t.Errorf("a read:herald.> key asking for a read:herald.subscriptions token: %d %s", status, body)
	}

	// A scope naming the system topics, and admin, do get them.
	for _, key := range []string{"system", "admin"} {
		ws := n.dialWS(key, "")
		ws.subscribe(map[string]any{"id": "sys", "topic": "herald.subscriptions", "since": 0})
		if f := ws.events(1)[0]; f.Topic != "herald.subscriptions" {
			t.Errorf("%s streaming herald.subscriptions: %s", key, f.Topic)
		}
	}
	ws = n.dialWS("admin", "")
	ws.subscribe(map[string]any{"id": "all", "topic": ">", "since": 0})
	got := map[string]int{}
	for _, f := range ws.events(system + user) {
		got[f.Topic]++
	}
	if got["herald.subscriptions"] != system {
		t.Errorf("admin streaming >: %v, want the system topic too", got)
	}
}
