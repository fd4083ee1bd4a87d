package stream_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/stream"
)

// One WebSocket carries several subscriptions: a pattern matches one
// segment, a filter selects by type and payload, and each event names the
// subscription it is for.
func TestWebSocketPatternsAndFilters(t *testing.T) {
	n := startNode(t, nodeOptions{})
	for _, tp := range []string{"orders.eu", "orders.us", "orders.eu.returns", "payments.eu"} {
		n.createTopic(tp, 0)
	}
	c := n.dialWS("admin", "")
	ack := c.subscribe(map[string]any{"id": "all-orders", "topic": "orders.*"})
	if ack.ID != "all-orders" || ack.Topic != "orders.*" || ack.Recovered == nil || !*ack.Recovered || ack.Time == "" {
		t.Fatalf("ack = %+v", ack)
	}
	c.subscribe(map[string]any{"id": "big", "topic": "orders.>",
		"filter": map[string]any{"types": []string{"order.created"}, "payload": map[string]any{"total": []any{map[string]any{"numeric": []any{">", 100}}}}}})
	c.subscribe(map[string]any{"topic": "payments.eu"}) // id defaults to the topic

	n.publish(
		pub{topic: "orders.eu", typ: "order.created", payload: `{"total":50}`},
		pub{topic: "orders.us", typ: "order.created", payload: `{"total":500}`},
		pub{topic: "orders.eu.returns", typ: "order.created", payload: `{"total":900}`},
		pub{topic: "orders.eu", typ: "order.cancelled", payload: `{"total":700}`},
		pub{topic: "payments.eu", typ: "payment.captured", ct: "application/octet-stream", payload: "\x01\x02"},
	)
	want := map[string][]string{
		"all-orders":  {"orders.eu#1", "orders.us#1", "orders.eu#2"},
		"big":         {"orders.us#1", "orders.eu.returns#1"},
		"payments.eu": {"payments.eu#1"},
	}
	got := map[string][]string{}
	for _, f := range c.events(6) {
		got[f.Sub] = append(got[f.Sub], fmt.Sprintf("%s#%d", f.Topic, f.Seq))
		if f.Sub == "payments.eu" {
			if f.DataBase64 == nil || f.Data != nil {
				t.Errorf("binary payload: data %s, data_base64 %v", f.Data, f.DataBase64)
			} else if raw, _ := base64.StdEncoding.DecodeString(*f.DataBase64); string(raw) != "\x01\x02" {
				t.Errorf("binary payload decoded to %q", raw)
			}
		} else if f.Data == nil || f.EventID == "" || f.Type == "" || f.Time == "" {
			t.Errorf("event frame lacks fields: %+v", f)
		}
	}
	for sub, w := range want {
		if strings.Join(got[sub], " ") != strings.Join(w, " ") {
			t.Errorf("sub %s got %v, want %v", sub, got[sub], w)
		}
	}
}

// Subscribing from a position replays the log and then goes live,
// without a gap or a duplicate, even while events are being published;
// a client that drops resumes from the last seq it got.
func TestWebSocketReplayJoinsLiveWithoutGapOrDuplicate(t *testing.T) {
	n := startNode(t, nodeOptions{cfg: stream.Config{ReplayPage: 7}})
	n.createTopic("orders.eu", 0)
	const total = 300
	n.publishN("orders.eu", 1, 40)

	var wg sync.WaitGroup
	wg.Go(func() { n.publishN("orders.eu", 41, total-40) })

	// Clients join at different moments of the publishing, from 0 and
	// from the middle.
	clients := make([]*wsClient, 6)
	froms := []int64{0, 10, 0, 39, 0, 25}
	for i := range clients {
		clients[i] = n.dialWS("reader", "")
		clients[i].subscribe(map[string]any{"id": "s", "topic": "orders.eu", "since": froms[i]})
	}
	for i, c := range clients {
		got := seqsOf(c.events(int(total - froms[i])))
		if fmt.Sprint(got) != fmt.Sprint(span(froms[i]+1, total)) {
			t.Errorf("client %d from %d: got %v", i, froms[i], got)
		}
	}
	wg.Wait()

	// A drop, events while away, a resume from the last seq.
	c := clients[0]
	_ = c.conn.CloseNow()
	n.publishN("orders.eu", total+1, 5)
	c2 := n.dialWS("reader", "")
	c2.subscribe(map[string]any{"id": "s", "topic": "orders.eu", "since": total})
	if got := seqsOf(c2.events(5)); fmt.Sprint(got) != fmt.Sprint(span(total+1, total+5)) {
		t.Errorf("after resume: %v", got)
	}
	n.publishN("orders.eu", total+6, 1)
	if got := seqsOf(c2.events(1)); got[0] != total+6 {
		t.Errorf("live after resume: %v", got)
	}

	// A live subscription to a topic is told the seq it starts after, and
	// gets what follows it.
	c3 := n.dialWS("reader", "")
	ack := c3.subscribe(map[string]any{"id": "live", "topic": "orders.eu"})
	if ack.AfterSeq == nil || *ack.AfterSeq != total+6 {
		t.Errorf("live ack after_seq = %v, want %d", ack.AfterSeq, total+6)
	}
	n.publishN("orders.eu", total+7, 1)
	if got := seqsOf(c3.events(1)); got[0] != total+7 {
		t.Errorf("live: %v", got)
	}
}

// A pattern resumes per topic: listed positions for the topics seen, and
// since for the others.
func TestWebSocketPatternPositions(t *testing.T) {
	n := startNode(t, nodeOptions{})
	for _, tp := range []string{"orders.eu", "orders.us", "orders.asia"} {
		n.createTopic(tp, 0)
	}
	n.publishN("orders.eu", 1, 4)
	n.publishN("orders.us", 1, 3)
	mark := time.Now().UTC()
	n.publishN("orders.asia", 1, 2)

	c := n.dialWS("reader", "")
	c.subscribe(map[string]any{"id": "p", "topic": "orders.*",
		"positions": map[string]int64{"orders.eu": 2, "orders.us": 3},
		"since":     mark.Format(time.RFC3339Nano)})
	got := map[string][]int64{}
	for _, f := range c.events(4) {
		got[f.Topic] = append(got[f.Topic], f.Seq)
	}
	if fmt.Sprint(got) != "map[orders.asia:[1 2] orders.eu:[3 4]]" {
		t.Errorf("got %v", got)
	}

	// Without since, topics not listed are live only.
	c2 := n.dialWS("reader", "")
	c2.subscribe(map[string]any{"id": "p", "topic": "orders.*", "positions": map[string]int64{"orders.eu": 3}})
	n.publishN("orders.us", 4, 1)
	evs := c2.events(2)
	if evs[0].Topic != "orders.eu" || evs[0].Seq != 4 || evs[1].Topic != "orders.us" || evs[1].Seq != 4 {
		t.Errorf("positions without since: %+v", evs)
	}
}

// After unsubscribe is acknowledged, no event of that subscription comes.
func TestWebSocketUnsubscribe(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	n.createTopic("orders.us", 0)
	c := n.dialWS("reader", "")
	c.subscribe(map[string]any{"id": "eu", "topic": "orders.eu"})
	c.subscribe(map[string]any{"id": "us", "topic": "orders.us"})
	n.publish(pub{topic: "orders.eu", payload: "{}"})
	if f := c.events(1)[0]; f.Sub != "eu" {
		t.Fatalf("got %+v", f)
	}
	c.send(map[string]any{"op": "unsubscribe", "id": "eu"})
	if f := c.next(); f.Op != "unsubscribed" || f.ID != "eu" {
		t.Fatalf("got %+v, want unsubscribed", f)
	}
	n.publish(pub{topic: "orders.eu", payload: "{}"}, pub{topic: "orders.us", payload: "{}"})
	if f := c.events(1)[0]; f.Sub != "us" {
		t.Fatalf("after unsubscribe got %+v, want only us", f)
	}
	c.send(map[string]any{"op": "unsubscribe", "id": "eu"})
	if f := c.next(); f.Op != "error" || f.Error.Status != 404 || f.ID != "eu" {
		t.Fatalf("second unsubscribe: %+v", f)
	}
	c.send(map[string]any{"op": "ping"})
	if f := c.next(); f.Op != "pong" {
		t.Fatalf("ping: %+v", f)
	}
	if got := n.metric("herald_stream_subscriptions"); got != 1 {
		t.Errorf("herald_stream_subscriptions = %v, want 1", got)
	}
}

// Bad operations get error frames with problems; the connection stays.
func TestWebSocketErrors(t *testing.T) {
	n := startNode(t, nodeOptions{cfg: stream.Config{MaxSubscriptionsPerConn: 2}})
	n.createTopic("orders.eu", 0)
	c := n.dialWS("reader", "")
	cases := []struct {
		op     map[string]any
		status int
		field  string
	}{
		{map[string]any{"op": "subscribe", "id": "x", "topic": "payments.eu"}, 403, "topic"},
		{map[string]any{"op": "subscribe", "id": "x", "topic": "orders..eu"}, 400, "topic"},
		{map[string]any{"op": "subscribe", "id": "x", "topic": "orders.nope"}, 404, "topic"},
		{map[string]any{"op": "subscribe", "id": "x", "topic": "orders.eu", "since": "soon"}, 400, "since"},
		{map[string]any{"op": "subscribe", "id": "x", "topic": "orders.eu", "since": -1}, 400, "since"},
		{map[string]any{"op": "subscribe", "id": "x", "topic": "orders.*", "positions": map[string]int64{"payments.eu": 1}}, 400, "positions"},
		{map[string]any{"op": "subscribe", "id": "x", "topic": "orders.eu", "filter": map[string]any{"nope": 1}}, 400, "filter.nope"},
		{map[string]any{"op": "subscribe", "id": strings.Repeat("i", 129), "topic": "orders.eu"}, 400, "id"},
		{map[string]any{"op": "dance"}, 400, "op"},
		{map[string]any{"op": "unsubscribe"}, 400, "id"},
	}
	for _, tc := range cases {
		c.send(tc.op)
		f := c.next()
		if f.Op != "error" || f.Error == nil || f.Error.Status != tc.status || f.Error.Field != tc.field {
			t.Errorf("%v: got %+v (error %+v), want status %d field %q", tc.op, f, f.Error, tc.status, tc.field)
		}
	}
	if err := c.conn.Write(t.Context(), websocket.MessageText, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if f := c.next(); f.Op != "error" || f.Error.Status != 400 {
		t.Errorf("not JSON: %+v", f)
	}
	c.subscribe(map[string]any{"id": "a", "topic": "orders.eu"})
	c.send(map[string]any{"op": "subscribe", "id": "a", "topic": "orders.eu"})
	if f := c.next(); f.Op != "error" || f.Error.Status != 409 {
		t.Errorf("duplicate id: %+v", f)
	}
	c.subscribe(map[string]any{"id": "b", "topic": "orders.eu"})
	c.send(map[string]any{"op": "subscribe", "id": "c", "topic": "orders.eu"})
	if f := c.next(); f.Op != "error" || f.Error.Status != 429 || !strings.Contains(f.Error.Detail, "limit is 2") {
		t.Errorf("over the subscription limit: %+v", f.Error)
	}
	// Still working.
	n.publish(pub{topic: "orders.eu", payload: "{}"})
	if evs := c.events(2); evs[0].Seq != 1 || evs[1].Seq != 1 {
		t.Errorf("events after errors: %+v", evs)
	}
}

// Connections are limited per key, messages by size; a non-WebSocket
// request gets a problem.
func TestWebSocketLimits(t *testing.T) {
	n := startNode(t, nodeOptions{cfg: stream.Config{MaxConnsPerSubject: 2, MaxMessageBytes: 1024}})
	n.createTopic("orders.eu", 0)
	a := n.dialWS("reader", "")
	n.dialWS("reader", "")
	_, resp, err := n.tryDialWS("reader", "")
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection of a key: err %v, resp %v; want 429", err, resp)
	}
	// SSE counts against the same limit.
	if c, resp := n.getSSE("orders.eu", "reader", "", nil); c != nil || resp.StatusCode != 429 {
		t.Fatalf("SSE over the limit: status %d", resp.StatusCode)
	}
	n.dialWS("admin", "") // another key is not affected

	a.send(map[string]any{"op": "subscribe", "topic": "orders.eu", "id": strings.Repeat("x", 2000)})
	if code, _ := a.closeStatus(); code != websocket.StatusMessageTooBig {
		t.Errorf("oversized message: close %v, want 1009", code)
	}
	// The closed connection frees its place.
	waitFor(t, "a free connection slot", func() bool {
		c, _, err := n.tryDialWS("reader", "")
		if err == nil {
			_ = c.conn.CloseNow()
		}
		return err == nil
	})

	plain, err := http.NewRequest(http.MethodGet, n.url+"/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	plain.Header.Set("Authorization", "Bearer reader")
	resp2, err := n.srv.Client().Do(plain)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 400 || resp2.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("plain GET /v1/stream: %d %s", resp2.StatusCode, resp2.Header.Get("Content-Type"))
	}
}

// The origin of a browser must be the server's own or an allowed one.
func TestOrigins(t *testing.T) {
	n := startNode(t, nodeOptions{cfg: stream.Config{AllowedOrigins: []string{"https://app.example.com", "*.example.org"}}})
	n.createTopic("orders.eu", 0)
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"https://app.example.com", true},
		{"http://app.example.com", false},
		{"https://x.example.org", true},
		{"https://evil.example.net", false},
		{n.url, true},
	} {
		c, resp := n.getSSE("orders.eu", "reader", "", http.Header{"Origin": {tc.origin}})
		if (c != nil) != tc.ok {
			t.Errorf("SSE from %s: status %d", tc.origin, resp.StatusCode)
		}
		if c != nil && tc.origin != n.url && resp.Header.Get("Access-Control-Allow-Origin") != tc.origin {
			t.Errorf("SSE from %s: Access-Control-Allow-Origin %q", tc.origin, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		h := http.Header{"Authorization": {"Bearer reader"}, "Origin": {tc.origin}}
		conn, resp2, err := websocket.Dial(t.Context(), n.wsURL(""), &websocket.DialOptions{HTTPHeader: h})
		if (err == nil) != tc.ok {
			t.Errorf("WebSocket from %s: err %v", tc.origin, err)
		}
		if err == nil {
			_ = conn.CloseNow()
		} else if resp2 != nil && resp2.StatusCode != 403 {
			t.Errorf("WebSocket from %s: status %d, want 403", tc.origin, resp2.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodOptions, n.url+"/v1/topics/orders.eu/stream", nil)
	req.Header.Set("Origin", "https://app.example.com")
	resp, err := n.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

// Event frames of every header length (7-bit, 16-bit and 64-bit payload
// lengths) arrive intact, also when many are queued at once and leave in
// batched writes larger than one write buffer.
func TestWebSocketFrameSizes(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.createTopic("sizes", 0)
	c := n.dialWS("admin", "")
	c.subscribe(map[string]any{"topic": "sizes"})

	// A JSON string payload of n bytes: a quote, n-2 letters, a quote.
	payload := func(size int) string { return `"` + strings.Repeat("a", size-2) + `"` }
	sizes := []int{2, 60, 125, 126, 127, 1000, 65535, 65536, 70000}
	for i := range 150 { // one commit of many mid-sized events: batched writes
		sizes = append(sizes, 500+i*7)
	}
	var evs []pub
	for _, s := range sizes {
		evs = append(evs, pub{topic: "sizes", typ: "size", payload: payload(s)})
	}
	n.publish(evs[:9]...)
	n.publish(evs[9:]...)
	got := c.events(len(sizes))
	for i, f := range got {
		if f.Seq != int64(i+1) || string(f.Data) != payload(sizes[i]) {
			t.Fatalf("event %d: seq %d, %d bytes of data, want seq %d with %d bytes", i, f.Seq, len(f.Data), i+1, sizes[i])
		}
	}
}

// Every op is answered exactly once, in the order the ops were sent:
// subscribe by subscribed or error, unsubscribe by unsubscribed or
// error, ping by pong; a subscription's events and gaps come after its
// subscribed and before its unsubscribed. An unsubscribe that reaches the
// server while its subscription is still being planned used to swallow
// the subscribe's answer. The sequence repeats many times, because that
// depends on how the reader and the writer interleave.
func TestWebSocketEveryOpIsAnsweredInOrder(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	n.createTopic("stream.demo", 0)
	for i := range 10 {
		typ := "live.tick"
		if i%3 == 0 {
			typ = "other.tick"
		}
		n.publish(pub{topic: "stream.demo", typ: typ, payload: fmt.Sprintf(`{"n":%d}`, i)})
	}
	c := n.dialWS("admin", "")
	ops := []map[string]any{
		{"op": "subscribe", "id": "eu", "topic": "stream.demo", "since": 4, "filter": map[string]any{"types": []string{"live.*"}}},
		{"op": "subscribe", "id": "all", "topic": "stream.*", "since": 0},
		{"op": "subscribe", "id": "gone", "topic": "stream.nope", "since": 0}, // fails in the plan, after the op is read
		{"op": "subscribe", "id": "now", "topic": "stream.demo"},
		{"op": "ping"},
		{"op": "unsubscribe", "id": "eu"},
		{"op": "unsubscribe", "id": "all"},
		{"op": "unsubscribe", "id": "now"},
	}
	want := []string{"subscribed eu", "subscribed all", "error gone", "subscribed now", "pong ",
		"unsubscribed eu", "unsubscribed all", "unsubscribed now"}
	const rounds = 300
	for round := range rounds {
		for _, op := range ops {
			c.send(op)
		}
		var got []string
		open := map[string]bool{}
		for len(got) < len(want) {
			f, err := c.read(20 * time.Second)
			if err != nil {
				t.Fatalf("round %d: answers %q, want %q: %v", round, got, want, err)
			}
			switch f.Op {
			case "event", "gap":
				if !open[f.Sub] {
					t.Fatalf("round %d: %s of %q outside its subscription (answers so far %q)", round, f.Op, f.Sub, got)
				}
				continue
			case "subscribed":
				open[f.ID] = true
			case "unsubscribed", "error":
				delete(open, f.ID)
			}
			got = append(got, f.Op+" "+f.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: answers %q, want %q", round, got, want)
		}
	}
}

// A text frame must be UTF-8 (RFC 6455 8.1): one that is not closes the
// connection with 1007, rather than being decoded with its bad bytes
// replaced.
func TestWebSocketInvalidUTF8Closes1007(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	n.createTopic("orders.eu", 0)
	c := n.dialWS("reader", "")
	c.subscribe(map[string]any{"id": "ok", "topic": "orders.eu"})
	if err := c.conn.Write(t.Context(), websocket.MessageText, []byte("{\"op\":\"ping\",\"id\":\"\xff\xfe\"}")); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := c.read(20 * time.Second)
		if err != nil {
			if code := websocket.CloseStatus(err); code != websocket.StatusInvalidFramePayloadData {
				t.Fatalf("close status %v (%v), want 1007", code, err)
			}
			break
		}
		if f.Op == "pong" {
			t.Fatalf("a frame of invalid UTF-8 was answered: %+v", f)
		}
	}
	waitFor(t, "the connection to be unregistered", func() bool {
		return n.metric("herald_stream_connections", "transport", "websocket") == 0
	})
}
