package stream_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/stream"
)

// A user's SSE stream over HTTP/2 stays in its handler (no connection to
// take over): the server-side subscription's acknowledgement and events
// with the user's position vector as ids, heartbeats, a resume from
// Last-Event-ID, the client's going away unregistering it at once, and
// the end on shutdown.
func TestUserSSEOverHTTP2(t *testing.T) {
	t.Parallel()
	const topic = "accounts.u42.balance"
	var n *node
	n = startNode(t, nodeOptions{http2: true, users: true, cfg: stream.Config{HeartbeatInterval: 20 * time.Millisecond},
		mux: func(m *http.ServeMux) {
			// The user's token, as the API's authentication makes it.
			m.HandleFunc("GET /u42/stream", func(w http.ResponseWriter, r *http.Request) {
				scopes, err := herald.ParseScopes([]string{"read:accounts.u42.>"})
				if err == nil {
					err = n.hub.ServeWebSocket(w, r, herald.Principal{Subject: "backend", User: "u42", Scopes: scopes})
				}
				if err != nil {
					writeProblem(w, err)
				}
			})
		}})
	n.createTopic(topic, 0)
	n.createTopic("accounts.u7.balance", 0)
	if _, _, err := n.store.PutUserSubscription(t.Context(), "u42", topic, time.Now()); err != nil {
		t.Fatal(err)
	}
	n.publishN(topic, 1, 2)

	c := n.openUserSSE(nil)
	if c.resp.ProtoMajor != 2 {
		t.Fatalf("served over %s, want HTTP/2", c.resp.Proto)
	}
	if ct := c.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	ack := c.next()
	var f struct {
		ID       string `json:"id"`
		AfterSeq int64  `json:"after_seq"`
	}
	if ack == nil || ack.Event != "herald.subscribed" || json.Unmarshal([]byte(ack.Data), &f) != nil ||
		f.ID != "user:"+topic || f.AfterSeq != 2 || ack.ID != topic+"=2" {
		t.Fatalf("first message %+v; want herald.subscribed of user:%s after seq 2 with id %s=2", ack, topic, topic)
	}
	n.publish(pub{topic: "accounts.u7.balance", typ: "test", payload: `{"other":true}`}) // never on u42's stream
	n.publishN(topic, 3, 2)
	for _, want := range []string{"3", "4"} {
		ev := c.next()
		if ev == nil || ev.Event != "test" || ev.ID != topic+"="+want || !strings.Contains(ev.Data, `"seq":`+want) {
			t.Fatalf("event %+v; want seq %s of %s with id %s=%s", ev, want, topic, topic, want)
		}
	}
	waitFor(t, "a heartbeat", func() bool {
		n.publishN(topic, 5, 1)
		return c.next().Comments > 0
	})

	// Gone: unregistered at once, not at a write that fails.
	c.close()
	waitFor(t, "the closed stream to be unregistered", func() bool {
		return n.metric("herald_stream_connections", "transport", "sse") == 0
	})

	// Resumed from an id it wrote: what came after it, once, in order.
	n.publishN(topic, 99, 1)
	r := n.openUserSSE(http.Header{"Last-Event-ID": {topic + "=3"}})
	if ack := r.next(); ack == nil || ack.Event != "herald.subscribed" || ack.ID != topic+"=3" {
		t.Fatalf("resume: first message %+v; want herald.subscribed with id %s=3", ack, topic)
	}
	tp, err := n.store.GetTopic(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	for want := int64(4); want <= tp.HeadSeq; want++ {
		ev := r.next()
		if ev == nil || ev.ID != topic+"="+strconv.FormatInt(want, 10) || !strings.Contains(ev.Data, `"seq":`+strconv.FormatInt(want, 10)+`,`) {
			t.Fatalf("resumed: event %+v; want seq %d (each of 4 to %d once, in order)", ev, want, tp.HeadSeq)
		}
	}

	n.stop()
	var last *sseEvent
	for ev := r.next(); ev != nil; ev = r.next() {
		last = ev
	}
	if last == nil || last.Event != "herald.disconnect" || !strings.Contains(last.Data, "shutdown") {
		t.Errorf("last message %+v; want herald.disconnect for the shutdown", last)
	}
}

// openUserSSE opens the user u42's stream (GET /u42/stream, which serves
// GET /v1/stream with a token of u42) as SSE.
func (n *node) openUserSSE(header http.Header) *sseClient {
	n.t.Helper()
	ctx, cancel := context.WithCancel(n.t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.url+"/u42/stream", nil)
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := n.srv.Client().Do(req)
	if err != nil {
		cancel()
		n.t.Fatalf("GET /u42/stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		body := make([]byte, 2048)
		k, _ := resp.Body.Read(body)
		n.t.Fatalf("user SSE: status %d: %s", resp.StatusCode, body[:k])
	}
	c := &sseClient{t: n.t, resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	n.t.Cleanup(c.close)
	return c
}
