package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// TestStreamsThroughTheServer follows a topic over SSE with a browser
// connection token and over the Go client's WebSocket, across a server
// restart, and checks every event arrives once and in order.
func TestStreamsThroughTheServer(t *testing.T) {
	dir := t.TempDir()
	const secret = "stream-secret-0123456789abcdef0123456789"
	cfg := func(c *Config) { c.StreamTokenSecret = secret; c.Addr = "127.0.0.1:0" }
	m, _ := testServer(t, dir, cfg)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "live.orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}

	// A token limited to reading live.>, as a browser would get it.
	req, _ := http.NewRequestWithContext(ctx, "POST", m.URL()+"/v1/tokens", strings.NewReader(`{"scopes":["read:live.>"],"ttl":"10m"}`))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != 200 || tok.Token == "" {
		t.Fatalf("POST /v1/tokens = %d", resp.StatusCode)
	}

	sseCtx, cancelSSE := context.WithCancel(ctx)
	defer cancelSSE()
	sreq, _ := http.NewRequestWithContext(sseCtx, "GET", m.URL()+"/v1/topics/live.orders/stream?since=0&token="+url.QueryEscape(tok.Token), nil)
	sreq.Header.Set("Accept", "text/event-stream")
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	if sresp.StatusCode != 200 {
		t.Fatalf("SSE with a token = %d", sresp.StatusCode)
	}
	sseData := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(sresp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				sseData <- strings.TrimSpace(d)
			}
		}
		close(sseData)
	}()

	ws, err := c.Stream(ctx, "live.>", 0, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	for i := 1; i <= 5; i++ {
		if _, err := c.Publish(ctx, "live.orders", fmt.Appendf(nil, `{"n":%d}`, i), client.PublishOptions{ContentType: "application/json"}); err != nil {
			t.Fatal(err)
		}
	}
	next := func(want int64) {
		t.Helper()
		nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		ev, err := ws.Next(nctx)
		if err != nil || ev.Seq != want {
			t.Fatalf("websocket event = seq %d, %v; want seq %d", ev.Seq, err, want)
		}
	}
	for i := int64(1); i <= 5; i++ {
		next(i)
	}
	for i := 1; i <= 5; i++ {
		select {
		case d := <-sseData:
			if d != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("SSE event %d data = %q", i, d)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("SSE event %d did not arrive", i)
		}
	}

	// Restart the server on the same address and data: the WebSocket
	// client reconnects and resumes after seq 5, with no gap or duplicate.
	addr := m.Addr()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m2, _ := testServer(t, dir, func(c *Config) { cfg(c); c.Addr = addr })
	c2 := adminClient(m2)
	for i := 6; i <= 8; i++ {
		if _, err := c2.Publish(ctx, "live.orders", fmt.Appendf(nil, `{"n":%d}`, i), client.PublishOptions{ContentType: "application/json"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(6); i <= 8; i++ {
		next(i)
	}
}

// TestStreamsAcrossNodes: a client streaming from one node sees events
// published through another node of the same PostgreSQL cluster.
func TestStreamsAcrossNodes(t *testing.T) {
	dsn := pgDSN(t)
	const secret = "cluster-secret-0123456789abcdef012345678"
	both := func(c *Config) { c.DatabaseURL = Secret(dsn); c.StreamTokenSecret = secret }
	a, _ := testServer(t, t.TempDir(), both)
	b, _ := testServer(t, t.TempDir(), both)
	ctx := t.Context()
	ca, cb := adminClient(a), adminClient(b)
	if _, _, err := ca.PutTopic(ctx, "x.node", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	ws, err := cb.Stream(ctx, "x.node", 0, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for i := 1; i <= 5; i++ {
		if _, err := ca.Publish(ctx, "x.node", fmt.Appendf(nil, `{"n":%d}`, i), client.PublishOptions{ContentType: "application/json"}); err != nil {
			t.Fatal(err)
		}
	}
	for want := int64(1); want <= 5; want++ {
		nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		ev, err := ws.Next(nctx)
		cancel()
		if err != nil || ev.Seq != want {
			t.Fatalf("event on node B = seq %d, %v; want %d (published on node A)", ev.Seq, err, want)
		}
	}
}

// TestStreamsOfDeletedTopicAcrossNodes: a topic deleted through one node ends
// the streams of it on every node with not-found, and once it is created
// again, a new stream gets its events live from seq 1, though the node had
// streamed the old topic further, and none of the old events the node
// still holds in its tail cache.
func TestStreamsOfDeletedTopicAcrossNodes(t *testing.T) {
	dsn := pgDSN(t)
	both := func(c *Config) { c.DatabaseURL = Secret(dsn) }
	a, _ := testServer(t, t.TempDir(), both)
	b, _ := testServer(t, t.TempDir(), both)
	ca, cb := adminClient(a), adminClient(b)
	// The streaming node publishes the old topic, so its tail cache holds
	// it; the new topic's events come from the other node.
	t.Run("deleted on another node", func(t *testing.T) { deleteAndRecreate(t, "x.remote", ca, cb, cb, ca) })
	t.Run("deleted on the streaming node", func(t *testing.T) { deleteAndRecreate(t, "x.local", ca, ca, ca, cb) })
}

// deleteAndRecreate streams topic on the streamer node while oldPub
// publishes to it, deletes it through deleter, creates it again, and
// streams it again while newPub publishes.
func deleteAndRecreate(t *testing.T, topic string, deleter, streamer, oldPub, newPub *client.Client) {
	ctx := t.Context()
	publish := func(c *client.Client, n int, which string) {
		t.Helper()
		for i := range n {
			if _, err := c.Publish(ctx, topic, fmt.Appendf(nil, `{%q:%d}`, which, i+1), client.PublishOptions{ContentType: "application/json"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	next := func(ws *client.Stream) (client.Event, error) {
		nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return ws.Next(nctx)
	}
	expect := func(ws *client.Stream, to int64, which string) {
		t.Helper()
		for want := int64(1); want <= to; want++ {
			ev, err := next(ws)
			if err != nil || ev.Seq != want {
				t.Fatalf("%s topic: event = seq %d, %v; want %d", which, ev.Seq, err, want)
			}
			if p := fmt.Sprintf(`{%q:%d}`, which, want); string(ev.Payload) != p {
				t.Fatalf("%s topic: event %d is %s, want %s", which, want, ev.Payload, p)
			}
		}
	}

	if _, _, err := deleter.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	old, err := streamer.Stream(ctx, topic, 0, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	publish(oldPub, 5, "old")
	expect(old, 5, "old")

	if err := deleter.DeleteTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if ev, err := next(old); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("the stream after the deletion: %+v, %v; want a not-found error", ev, err)
	}

	if _, _, err := deleter.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	renewed, err := streamer.Stream(ctx, topic, 0, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer renewed.Close()
	publish(newPub, 6, "new")
	expect(renewed, 6, "new")
}
