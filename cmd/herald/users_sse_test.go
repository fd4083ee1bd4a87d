package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// sseMessage is one message of an SSE stream, with the id in force after
// it (EventSource's lastEventId).
type sseMessage struct {
	Event, Data, LastID string
}

// userSSE opens GET /v1/stream as SSE with the token, sending lastID as
// Last-Event-ID when set; it returns the status and, when 200, the
// messages.
func userSSE(t *testing.T, base, token, lastID, positions string) (int, []byte, <-chan sseMessage, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	u := base + "/v1/stream?token=" + url.QueryEscape(token)
	if positions != "" {
		u += "&positions=" + url.QueryEscape(positions)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return resp.StatusCode, b, nil, nil
	}
	t.Cleanup(cancel)
	msgs := make(chan sseMessage, 100)
	go func() {
		defer close(msgs)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var m sseMessage
		last := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if m.Event != "" || m.Data != "" {
					m.LastID = last
					msgs <- m
				}
				m = sseMessage{}
			case strings.HasPrefix(line, "id: "):
				last = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				m.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				m.Data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return 200, nil, msgs, cancel
}

// nextSSE returns the next message that matches, failing at the deadline.
func nextSSE(t *testing.T, msgs <-chan sseMessage, what string, match func(sseMessage) bool) sseMessage {
	t.Helper()
	deadline := time.After(45 * time.Second)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("the stream ended waiting for %s", what)
			}
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s within 45s", what)
		}
	}
}

// TestUserSubscriptionsOverSSE runs the real binary: a user token's
// GET /v1/stream with Accept: text/event-stream carries the user's
// server-side subscriptions as SSE, as its WebSocket would: it follows
// subscriptions added and removed while it is open, every event's id is
// the position vector of the user's topics, and a reconnect sending that
// id as Last-Event-ID (as EventSource does) gets what was published
// meanwhile, once, in order. Tokens without a user, and ids that are not
// the stream's, are refused with a problem.
func TestUserSubscriptionsOverSSE(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real process; skipped with -short")
	}
	t.Parallel()
	p := startProc(t, "--data-dir", t.TempDir(), "--admin-key", testAdminKey)
	c := client.New(p.url, client.WithKey(testAdminKey))
	ctx := t.Context()
	const bal, tx, other = "accounts.u42.balance", "accounts.u42.tx", "accounts.u7.balance"
	for _, tp := range []string{bal, tx, other} {
		if _, _, err := c.PutTopic(ctx, tp, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	call := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, p.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	token := func(body string) string {
		t.Helper()
		status, b := call("POST", "/v1/tokens", body)
		var tok struct {
			Token string `json:"token"`
		}
		if status != 200 || json.Unmarshal(b, &tok) != nil {
			t.Fatalf("POST /v1/tokens %s = %d %s", body, status, b)
		}
		return tok.Token
	}
	pub := func(topic, data string) int64 {
		t.Helper()
		r, err := c.Publish(ctx, topic, []byte(data), client.PublishOptions{ContentType: "application/json", Type: "account_balanceupdated"})
		if err != nil {
			t.Fatal(err)
		}
		return r.Seq
	}
	type wire struct {
		Topic string          `json:"topic"`
		Seq   int64           `json:"seq"`
		Data  json.RawMessage `json:"data"`
	}
	event := func(m sseMessage) wire {
		t.Helper()
		var w wire
		if err := json.Unmarshal([]byte(m.Data), &w); err != nil {
			t.Fatalf("event data %q: %v", m.Data, err)
		}
		return w
	}

	if status, b := call("PUT", "/v1/users/u42/subscriptions/"+bal, ""); status != http.StatusCreated {
		t.Fatalf("PUT subscription = %d %s", status, b)
	}
	tok := token(`{"user":"u42","scopes":["read:accounts.{user}.>"],"ttl":"10m"}`)

	// Refusals: a token of no user, and an id this stream did not write.
	if status, b, _, _ := userSSE(t, p.url, token(`{"scopes":["read:accounts.>"],"ttl":"10m"}`), "", ""); status != http.StatusBadRequest || !bytes.Contains(b, []byte("user token")) {
		t.Errorf("SSE with a token of no user = %d %s; want a 400 problem", status, b)
	}
	if status, b, _, _ := userSSE(t, p.url, tok, "17", ""); status != http.StatusBadRequest || !bytes.Contains(b, []byte("Last-Event-ID")) {
		t.Errorf("SSE with Last-Event-ID 17 = %d %s; want a 400 problem naming Last-Event-ID", status, b)
	}

	status, b, msgs, cancel := userSSE(t, p.url, tok, "", "")
	if status != 200 {
		t.Fatalf("SSE = %d %s", status, b)
	}
	ack := nextSSE(t, msgs, "the server-side subscription", func(m sseMessage) bool { return m.Event == "herald.subscribed" })
	if !strings.Contains(ack.Data, `"id":"user:`+bal+`"`) || ack.LastID != bal+"=0" {
		t.Fatalf("subscribed = %+v; want user:%s with id %s=0", ack, bal, bal)
	}
	pub(other, `{"other":true}`) // another user's topic: never on this stream
	s1 := pub(bal, `{"balance":1}`)
	m := nextSSE(t, msgs, "the user's event", func(m sseMessage) bool { return !strings.HasPrefix(m.Event, "herald.") })
	if w := event(m); m.Event != "account_balanceupdated" || w.Topic != bal || w.Seq != s1 || string(w.Data) != `{"balance":1}` || m.LastID != bal+"=1" {
		t.Fatalf("event = %+v; want %s seq %d with id %s=1", m, bal, s1, bal)
	}

	// Subscriptions added and removed while the stream is open.
	if status, b := call("PUT", "/v1/users/u42/subscriptions/"+tx, ""); status != http.StatusCreated {
		t.Fatalf("PUT second subscription = %d %s", status, b)
	}
	nextSSE(t, msgs, "the added subscription", func(m sseMessage) bool {
		return m.Event == "herald.subscribed" && strings.Contains(m.Data, `"user:`+tx+`"`)
	})
	pub(tx, `{"tx":1}`)
	m = nextSSE(t, msgs, "the added topic's event", func(m sseMessage) bool { return !strings.HasPrefix(m.Event, "herald.") })
	if w := event(m); w.Topic != tx || m.LastID != bal+"=1,"+tx+"=1" {
		t.Fatalf("event = %+v; want %s with id %s=1,%s=1", m, tx, bal, tx)
	}
	if status, b := call("DELETE", "/v1/users/u42/subscriptions/"+tx, ""); status != http.StatusNoContent {
		t.Fatalf("DELETE = %d %s", status, b)
	}
	nextSSE(t, msgs, "the removed subscription's end", func(m sseMessage) bool {
		return m.Event == "herald.unsubscribed" && strings.Contains(m.Data, `"user:`+tx+`"`)
	})
	waitCond(t, "the SSE connection counted in presence", 45*time.Second, func() bool {
		_, b := call("GET", "/v1/users/u42/connections", "")
		return bytes.Contains(b, []byte(`"connections":1,`))
	})

	// Reconnect with the last id, as EventSource does: what came
	// meanwhile arrives once, in order, then live events.
	last := m.LastID
	cancel()
	waitCond(t, "the closed stream gone from presence", 45*time.Second, func() bool {
		_, b := call("GET", "/v1/users/u42/connections", "")
		return bytes.Contains(b, []byte(`"connections":0`))
	})
	s2 := pub(bal, `{"balance":2}`)
	s3 := pub(bal, `{"balance":3}`)
	_, _, msgs, _ = userSSE(t, p.url, tok, last, "")
	for _, want := range []int64{s2, s3} {
		m := nextSSE(t, msgs, "a resumed event", func(m sseMessage) bool { return !strings.HasPrefix(m.Event, "herald.") })
		if w := event(m); w.Topic != bal || w.Seq != want {
			t.Fatalf("resumed event = %+v; want %s seq %d", m, bal, want)
		}
	}
	s4 := pub(bal, `{"balance":4}`)
	m = nextSSE(t, msgs, "a live event after the resume", func(m sseMessage) bool { return !strings.HasPrefix(m.Event, "herald.") })
	if w := event(m); w.Seq != s4 || m.LastID != bal+"=4" {
		t.Fatalf("live event = %+v; want seq %d with id %s=4 (the topic unsubscribed meanwhile left out)", m, s4, bal)
	}

	// ?positions= resumes too (a client that keeps its own positions).
	_, _, msgs, _ = userSSE(t, p.url, tok, "", `{"`+bal+`":2}`)
	m = nextSSE(t, msgs, "an event resumed from ?positions=", func(m sseMessage) bool { return !strings.HasPrefix(m.Event, "herald.") })
	if w := event(m); w.Seq != s3 {
		t.Fatalf("event resumed from positions = %+v; want seq %d", m, s3)
	}
}
