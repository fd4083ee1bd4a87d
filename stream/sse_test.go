package stream_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/stream"
)

// An SSE client receives each event once with its seq as id, its type as
// event name and its payload as data lines, byte for byte as EventSource
// will hand it over; payloads that would not survive are base64.
func TestSSEDeliversEventsAsEventSourceReadsThem(t *testing.T) {
	n := startNode(t, nodeOptions{cfg: stream.Config{HeartbeatInterval: 50 * time.Millisecond, SweepInterval: 10 * time.Millisecond,
		SSERetry: 1500 * time.Millisecond}})
	n.createTopic("orders.eu", 0)
	c := n.openSSE("orders.eu", "reader", "", nil)

	payloads := []struct {
		typ, ct, payload string
	}{
		{"order.created", "application/json", `{"id":1,"note":"a"}`},
		{"", "text/plain", "line one\nline two\n\n  indented\n"},
		{"order.binary", "application/octet-stream", "\x00\x01\xff"},
		{"order.crlf", "text/plain", "windows\r\nline"},
		{"order.tricky", "text/plain", "base64,not really"},
		{"order.empty", "text/plain", ""},
	}
	for _, p := range payloads {
		n.publish(pub{topic: "orders.eu", typ: p.typ, ct: p.ct, payload: p.payload})
	}
	got := c.events(len(payloads))
	if c.retry != "1500" {
		t.Errorf("retry field = %q, want 1500", c.retry)
	}
	for i, p := range payloads {
		ev := got[i]
		if ev.ID != strconv.Itoa(i+1) {
			t.Errorf("event %d: id %q, want %d", i, ev.ID, i+1)
		}
		wantName := p.typ
		if wantName == "" {
			wantName = "message"
		}
		if ev.Event != wantName {
			t.Errorf("event %d: event %q, want %q", i, ev.Event, wantName)
		}
		data := ev.Data
		if b64, ok := strings.CutPrefix(data, stream.SSEBase64Prefix); ok {
			raw, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				t.Fatalf("event %d: bad base64 %q", i, b64)
			}
			data = string(raw)
		}
		if data != p.payload {
			t.Errorf("event %d: payload %q, want %q", i, data, p.payload)
		}
	}
	// Idle, the stream carries comment heartbeats; the next event counts
	// the comments seen before it.
	waitFor(t, "heartbeats", func() bool {
		n.publish(pub{topic: "orders.eu", typ: "ping", payload: "{}"})
		return c.next().Comments > 0
	})
}

// The JSON format sends each event as the JSON object of the WebSocket
// frames, with its metadata.
func TestSSEJSONFormat(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	c := n.openSSE("orders.eu", "reader", "format=json", nil)
	n.publish(pub{topic: "orders.eu", typ: "order.created", payload: `{"total":12}`},
		pub{topic: "orders.eu", typ: "order.blob", ct: "application/octet-stream", payload: "\x00ab"})
	evs := c.events(2)
	var first, second struct {
		Topic      string          `json:"topic"`
		Seq        int64           `json:"seq"`
		Type       string          `json:"type"`
		Data       json.RawMessage `json:"data"`
		DataBase64 string          `json:"data_base64"`
	}
	if err := json.Unmarshal([]byte(evs[0].Data), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(evs[1].Data), &second); err != nil {
		t.Fatal(err)
	}
	if first.Topic != "orders.eu" || first.Seq != 1 || first.Type != "order.created" || string(first.Data) != `{"total":12}` {
		t.Errorf("first = %+v", first)
	}
	if raw, _ := base64.StdEncoding.DecodeString(second.DataBase64); string(raw) != "\x00ab" || second.Seq != 2 {
		t.Errorf("second = %+v", second)
	}
}

// Resuming with Last-Event-ID (what EventSource sends) or ?since= gives
// exactly the events after the position; a time gives those at or after
// it.
func TestSSEResume(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	n.publishN("orders.eu", 1, 5)
	mid := time.Now().UTC()
	n.publishN("orders.eu", 6, 3)

	c := n.openSSE("orders.eu", "reader", "", http.Header{"Last-Event-ID": {"3"}})
	if got := ids(c.events(5)); got != "4,5,6,7,8" {
		t.Errorf("Last-Event-ID 3: ids %s", got)
	}
	n.publishN("orders.eu", 9, 1)
	if got := ids(c.events(1)); got != "9" {
		t.Errorf("live after replay: ids %s", got)
	}

	c2 := n.openSSE("orders.eu", "reader", "since=7", nil)
	if got := ids(c2.events(2)); got != "8,9" {
		t.Errorf("since=7: ids %s", got)
	}
	c3 := n.openSSE("orders.eu", "reader", "since="+url.QueryEscape(mid.Format(time.RFC3339Nano)), nil)
	if got := ids(c3.events(4)); got != "6,7,8,9" {
		t.Errorf("since=<time>: ids %s", got)
	}
	// Last-Event-ID wins over since (EventSource repeats the URL).
	c4 := n.openSSE("orders.eu", "reader", "since=1", http.Header{"Last-Event-ID": {"8"}})
	if got := ids(c4.events(1)); got != "9" {
		t.Errorf("Last-Event-ID 8 with since=1: ids %s", got)
	}
}

// A stream that starts live and gets no event before it drops still
// resumes without loss: it is told its position when it starts, in an
// id-only message that EventSource records.
func TestSSELiveStreamResumesBeforeAnyEvent(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	n.createTopic("orders.us", 0)
	n.publishN("orders.eu", 1, 2)

	c := n.openSSE("orders.eu", "reader", "", nil)
	if id := c.position(); id != "2" {
		t.Fatalf("initial id %q, want the head seq 2", id)
	}
	c.close()
	n.publishN("orders.eu", 3, 2)
	c2 := n.openSSE("orders.eu", "reader", "", http.Header{"Last-Event-ID": {"2"}})
	if got := ids(c2.events(2)); got != "3,4" {
		t.Errorf("resumed: %s", got)
	}

	// A pattern: the id marks the start; topics not seen yet resume from
	// it (less a margin, which can only add older events, never lose one).
	p := n.openSSE("orders.*", "reader", "", nil)
	mark := p.position()
	if !strings.HasPrefix(mark, "@") || strings.Contains(mark, ",") {
		t.Fatalf("pattern initial id %q, want @<ms>", mark)
	}
	p.close()
	n.publish(pub{topic: "orders.us", payload: `{"away":1}`}, pub{topic: "orders.eu", payload: `{"away":2}`})
	p2 := n.openSSE("orders.*", "reader", "", http.Header{"Last-Event-ID": {mark}})
	got := map[string]bool{}
	for !got[`{"away":1}`] || !got[`{"away":2}`] {
		got[p2.events(1)[0].Data] = true
	}
}

// A pattern stream covers every matching topic; its ids are position maps
// that resume each topic where it stopped, including topics it had not
// seen yet.
func TestSSEPatternResume(t *testing.T) {
	n := startNode(t, nodeOptions{})
	for _, tp := range []string{"orders.eu", "orders.us", "orders.asia", "payments.eu"} {
		n.createTopic(tp, 0)
	}
	c := n.openSSE("orders.*", "reader", "", nil)
	n.publish(pub{topic: "orders.eu", payload: `{"a":1}`}, pub{topic: "payments.eu", payload: `{}`},
		pub{topic: "orders.us", payload: `{"a":2}`})
	evs := c.events(2)
	last := evs[1].ID
	if !strings.HasPrefix(last, "@") || !strings.Contains(last, "orders.eu=1") || !strings.Contains(last, "orders.us=1") {
		t.Fatalf("pattern id %q: want @<ms>,orders.eu=1,orders.us=1", last)
	}
	c.close()

	// While it is away: a topic it has seen and one it has not.
	n.publish(pub{topic: "orders.eu", payload: `{"a":3}`}, pub{topic: "orders.asia", payload: `{"a":4}`})
	c2 := n.openSSE("orders.*", "reader", "", http.Header{"Last-Event-ID": {last}})
	got := map[string]bool{}
	for _, ev := range c2.events(2) {
		got[ev.Data] = true
	}
	if !got[`{"a":3}`] || !got[`{"a":4}`] {
		t.Errorf("resumed pattern stream got %v, want the two events published while away", got)
	}
}

// Problems before the stream starts: bad topic, bad filter, no
// credentials, no scope, unknown topic, bad Last-Event-ID.
func TestSSERefusals(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	n.createTopic("payments.eu", 0)
	cases := []struct {
		name, topic, key, query string
		header                  http.Header
		status                  int
		detail                  string
	}{
		{"no key", "orders.eu", "", "", nil, 401, "API key"},
		{"unknown key", "orders.eu", "nobody", "", nil, 401, "not valid"},
		{"out of scope", "payments.eu", "reader", "", nil, 403, "payments.eu"},
		{"pattern wider than scope", ">", "reader", "", nil, 403, "no read or subscribe scope"},
		{"unknown topic", "orders.nope", "reader", "", nil, 404, ""},
		{"bad pattern", "orders.>.x", "reader", "", nil, 400, "pattern"},
		{"bad filter", "orders.eu", "reader", "filter=" + url.QueryEscape(`{"types":[]}`), nil, 400, ""},
		{"bad since", "orders.eu", "reader", "since=yesterday", nil, 400, "since"},
		{"bad format", "orders.eu", "reader", "format=xml", nil, 400, "format"},
		{"bad Last-Event-ID", "orders.eu", "reader", "", http.Header{"Last-Event-ID": {"x"}}, 400, "Last-Event-ID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, resp := n.getSSE(tc.topic, tc.key, tc.query, tc.header)
			if c != nil {
				t.Fatalf("stream opened; want status %d", tc.status)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("status %d %s: %s; want %d problem", resp.StatusCode, resp.Header.Get("Content-Type"), body, tc.status)
			}
			if !strings.Contains(string(body), tc.detail) {
				t.Errorf("problem %s lacks %q", body, tc.detail)
			}
		})
	}
}

func ids(evs []*sseEvent) string {
	var b []string
	for _, e := range evs {
		b = append(b, e.ID)
	}
	return strings.Join(b, ",")
}

// Over HTTP/2 the stream stays in its handler: the same events, resume,
// heartbeats and the end on shutdown.
func TestSSEOverHTTP2(t *testing.T) {
	n := startNode(t, nodeOptions{http2: true, cfg: stream.Config{HeartbeatInterval: 20 * time.Millisecond}})
	n.createTopic("orders.eu", 0)
	n.publishN("orders.eu", 1, 3)
	c := n.openSSE("orders.eu", "reader", "", http.Header{"Last-Event-ID": {"1"}})
	if c.resp.ProtoMajor != 2 {
		t.Fatalf("served over %s, want HTTP/2", c.resp.Proto)
	}
	if got := ids(c.events(2)); got != "2,3" {
		t.Errorf("resume: %s", got)
	}
	waitFor(t, "a heartbeat", func() bool {
		n.publishN("orders.eu", 4, 1)
		return c.next().Comments > 0
	})
	n.stop()
	var last *sseEvent
	for ev := c.next(); ev != nil; ev = c.next() {
		last = ev
	}
	if last == nil || last.Event != "herald.disconnect" || !strings.Contains(last.Data, "shutdown") {
		t.Errorf("last event %+v", last)
	}
}

// A client that goes away is unregistered at once, not at the next
// heartbeat (an hour away here): its place under the key's limit is free
// for a new stream and the gauges drop. Over HTTP/1 the hub watches the
// taken-over connection for the close; over HTTP/2 the request's context
// ends.
func TestSSEClientGoneIsUnregistered(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2 %v", h2), func(t *testing.T) {
			n := startNode(t, nodeOptions{http2: h2, cfg: stream.Config{MaxConnsPerSubject: 1, HeartbeatInterval: time.Hour}})
			n.createTopic("orders.eu", 0)
			c := n.openSSE("orders.eu", "reader", "", nil)
			c.position()
			if got := n.metric("herald_stream_connections", "transport", "sse"); got != 1 {
				t.Fatalf("connections gauge %v with one stream open", got)
			}
			if c2, resp := n.getSSE("orders.eu", "reader", "", nil); c2 != nil || resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("second stream of a key at its limit: status %d", resp.StatusCode)
			} else {
				resp.Body.Close()
			}

			c.close()
			waitFor(t, "the closed stream to be unregistered", func() bool {
				return n.metric("herald_stream_connections", "transport", "sse") == 0 &&
					n.metric("herald_stream_subscriptions") == 0
			})
			c3 := n.openSSE("orders.eu", "reader", "", nil) // refused with 429 while the old one counts
			n.publishN("orders.eu", 1, 1)
			if got := ids(c3.events(1)); got != "1" {
				t.Errorf("new stream: ids %s", got)
			}
		})
	}
}

// A client sends nothing after its request: the stream of one that does
// is closed, and its place freed. A request with a body is refused.
func TestSSEClientThatSendsIsClosed(t *testing.T) {
	n := startNode(t, nodeOptions{cfg: stream.Config{MaxConnsPerSubject: 1, HeartbeatInterval: time.Hour}})
	n.createTopic("orders.eu", 0)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, n.url+"/v1/topics/orders.eu/stream", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer reader")
	resp, err := n.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a request with a body: status %d, want 400", resp.StatusCode)
	}

	nc, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(nc, "GET /v1/topics/orders.eu/stream HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer reader\r\n\r\n", n.addr)
	br := bufio.NewReader(nc)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream's start: %v", err)
		}
		if strings.HasPrefix(line, "HTTP/1.1 ") && !strings.HasPrefix(line, "HTTP/1.1 200 ") {
			t.Fatalf("status line %q", line)
		}
		if strings.HasPrefix(line, "id: ") {
			break // the stream has started
		}
	}
	if _, err := nc.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	// The end is a FIN, or a reset for the bytes the server left unread.
	if rest, err := io.ReadAll(br); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the stream goes on after the client wrote (read %q)", rest)
	}
	waitFor(t, "the stream to be unregistered", func() bool {
		return n.metric("herald_stream_connections", "transport", "sse") == 0
	})
	n.openSSE("orders.eu", "reader", "", nil)
}

// Clients that leave while events and heartbeats are written to them: the
// writer's failed writes and the client's close end each stream once, the
// gauges return to zero and Stop still waits for every stream.
func TestSSEClientsLeavingWhileWritten(t *testing.T) {
	n := startNode(t, nodeOptions{cfg: stream.Config{HeartbeatInterval: 5 * time.Millisecond, SweepInterval: 5 * time.Millisecond}})
	n.createTopic("orders.eu", 0)
	var cs []*sseClient
	for range 20 {
		cs = append(cs, n.openSSE("orders.eu", "reader", "", nil))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for _, c := range cs {
			c.close()
		}
	})
	n.publishN("orders.eu", 1, 20)
	wg.Wait()
	waitFor(t, "every stream to be unregistered", func() bool {
		return n.metric("herald_stream_connections", "transport", "sse") == 0 &&
			n.metric("herald_stream_subscriptions") == 0
	})
	kept := n.openSSE("orders.eu", "reader", "", nil)
	n.publishN("orders.eu", 21, 1)
	kept.events(1)
	n.stop() // fails the test if Stop gives up waiting
}
