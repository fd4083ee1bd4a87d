package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/client"
)

// rawConn is a client connection written and read by hand, to send what
// no well-behaved client would: a body announced and never sent.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// guardTimeout bounds every read of a rawConn: a server that never
// answers fails the test instead of hanging it. It is not a measure of
// speed: the tests that rely on it configure timeouts that would only
// expire far later, or never.
const guardTimeout = 30 * time.Second

// dialRaw connects to m from the loopback address from (127.0.0.x),
// skipping where the system does not route the whole of 127/8 to loopback.
func dialRaw(t *testing.T, m *Main, from string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", m.Addr())
	if err != nil {
		t.Skipf("cannot dial from %s (loopback aliases unavailable?): %v", from, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(guardTimeout))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// sendHead writes a request's head: the method and path, the headers and
// the blank line, and no body.
func (r *rawConn) sendHead(method, path string, headers ...string) {
	r.t.Helper()
	head := method + " " + path + " HTTP/1.1\r\nHost: herald\r\n"
	for _, h := range headers {
		head += h + "\r\n"
	}
	if _, err := io.WriteString(r.c, head+"\r\n"); err != nil {
		r.t.Fatalf("write request head: %v", err)
	}
}

// response reads one response and its body.
func (r *rawConn) response() (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		r.t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("read response body: %v", err)
	}
	return resp, string(body)
}

// closedByServer waits for the server to close the connection: reading
// on ends (at EOF, or with a reset when the client was still sending)
// before the guard timeout.
func (r *rawConn) closedByServer() {
	r.t.Helper()
	_, err := r.br.ReadByte()
	if ne, ok := errors.AsType[net.Error](err); err == nil || ok && ne.Timeout() {
		r.t.Fatalf("reading on: %v; want the server to close the connection", err)
	}
}

// problemType is the type of a problem body ("" if it is none).
func problemType(resp *http.Response, body string) string {
	var p struct{ Type string }
	if resp.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal([]byte(body), &p) != nil {
		return ""
	}
	return strings.TrimPrefix(p.Type, "https://herald.dev/problems/")
}

// TestRefusalDoesNotWaitForTheBody sends requests that announce a body and
// send none of it. A bad or missing key is answered 401 at once and the
// connection closed, and so is any refusal made before the body is read;
// the read timeout is an hour here, so only that could answer.
func TestRefusalDoesNotWaitForTheBody(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.HTTPReadTimeout = time.Hour })
	if _, _, err := adminClient(m).PutTopic(t.Context(), "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		headers []string
		status  int
		typ     string
	}{
		{"bad key", []string{"Authorization: Bearer hrld_not-a-key"}, 401, "unauthorized"},
		{"no key", nil, 401, "unauthorized"},
		{"unknown topic", []string{"Authorization: Bearer " + testAdminKey}, 404, "not-found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/topics/orders/events"
			if tc.typ == "not-found" {
				path = "/v1/topics/nowhere/events"
			}
			c := dialRaw(t, m, "127.0.0.1")
			c.sendHead("POST", path, append(tc.headers, "Content-Type: application/json", "Content-Length: 1000")...)
			resp, body := c.response()
			if resp.StatusCode != tc.status || problemType(resp, body) != tc.typ {
				t.Fatalf("got %d %s; want a %d %s problem", resp.StatusCode, body, tc.status, tc.typ)
			}
			c.closedByServer()
		})
	}
}

// TestSlowBodyIsCutAtTheReadTimeout trickles a body a byte at a time, far
// slower than it could ever complete: at http.read-timeout the request is
// answered 408 and the connection closed, and nothing is stored.
func TestSlowBodyIsCutAtTheReadTimeout(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.HTTPReadTimeout = 300 * time.Millisecond })
	ac := adminClient(m)
	if _, _, err := ac.PutTopic(t.Context(), "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, m, "127.0.0.1")
	c.sendHead("POST", "/v1/topics/orders/events", "Authorization: Bearer "+testAdminKey, "Content-Length: 1000")
	trickle(t, c.c)
	resp, body := c.response()
	if resp.StatusCode != http.StatusRequestTimeout || problemType(resp, body) != "request-timeout" {
		t.Fatalf("got %d %s; want a 408 request-timeout problem", resp.StatusCode, body)
	}
	c.closedByServer()
	page, err := ac.ListEvents(t.Context(), "orders", 0, 10)
	if err != nil || len(page.Events) != 0 {
		t.Fatalf("the cut request stored %d events (%v)", len(page.Events), err)
	}
}

// trickle writes one byte of body every 50ms until the connection fails:
// a client slower than any read timeout the tests set.
func trickle(t *testing.T, c net.Conn) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped })
	go func() {
		defer close(stopped)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := c.Write([]byte{'x'}); err != nil {
				return
			}
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	}()
}

// TestSlowClientsCannotStarveOthers holds as many slow-body connections
// from one address as it may have, with a valid key and a read timeout of
// an hour: more from that address are refused with a 503 problem at once,
// while an admin from another address is served; a slot comes back when a
// slow connection closes.
func TestSlowClientsCannotStarveOthers(t *testing.T) {
	t.Parallel()
	const perAddr = 4
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		c.HTTPReadTimeout = time.Hour
		c.HTTPMaxConnsPerAddr = perAddr
		c.HTTPMaxConns = 64
	})
	ctx := t.Context()
	ac := adminClient(m)
	if _, _, err := ac.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	k, err := ac.CreateKey(ctx, "producer", []string{"publish:orders"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A slow client asks to be told when its body is wanted (100
	// Continue), which is once its key was accepted, and then sends one
	// byte of it.
	slow := func() *rawConn {
		c := dialRaw(t, m, "127.0.0.2")
		c.sendHead("POST", "/v1/topics/orders/events", "Authorization: Bearer "+k.Secret, "Content-Length: 1000", "Expect: 100-continue")
		return c
	}
	var held []*rawConn
	for range perAddr {
		c := slow()
		if resp, body := c.response(); resp.StatusCode != http.StatusContinue {
			t.Fatalf("slow connection: %d %s, want 100 Continue", resp.StatusCode, body)
		}
		_, _ = c.c.Write([]byte("{"))
		held = append(held, c)
	}
	for range 3 * perAddr {
		c := slow()
		resp, body := c.response()
		if resp.StatusCode != http.StatusServiceUnavailable || problemType(resp, body) != "unavailable" ||
			!strings.Contains(body, "too many connections from your address") {
			t.Fatalf("slow connection %d from one address: %d %s; want a 503 problem", perAddr+1, resp.StatusCode, body)
		}
	}

	// The admin, from another address, is served: on a fresh connection
	// (a new client) and through the Go client.
	admin := dialRaw(t, m, "127.0.0.1")
	admin.sendHead("GET", "/v1/topics", "Authorization: Bearer "+testAdminKey)
	if resp, body := admin.response(); resp.StatusCode != 200 {
		t.Fatalf("the admin got %d %s while slow clients held their connections", resp.StatusCode, body)
	}
	if _, err := ac.Publish(ctx, "orders", []byte(`{}`), client.PublishOptions{ContentType: "application/json"}); err != nil {
		t.Fatalf("the admin cannot publish while slow clients held their connections: %v", err)
	}

	// Closing a slow connection gives its slot back.
	_ = held[0].c.Close()
	deadline := time.Now().Add(guardTimeout)
	for {
		c := dialRaw(t, m, "127.0.0.2")
		c.sendHead("GET", "/healthz")
		resp, _ := c.response()
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a closed connection did not come back: %d", resp.StatusCode)
		}
	}
}

// TestUnauthenticatedFloodCannotStarveOthers fills every connection slot
// from many addresses with requests whose headers never end, so none has
// authenticated: an admin still gets in (the oldest of them is closed to
// make room), and so do streams and slow-but-authenticated requests that
// were open before; those are not closed.
func TestUnauthenticatedFloodCannotStarveOthers(t *testing.T) {
	t.Parallel()
	const maxConns = 12
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		c.HTTPReadTimeout = time.Hour
		c.HTTPMaxConns = maxConns
		c.HTTPMaxConnsPerAddr = 4
	})
	ctx := t.Context()
	ac := adminClient(m)
	if _, _, err := ac.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	// An authenticated producer (its first request proves it), halfway
	// through the body of its second.
	producer := dialRaw(t, m, "127.0.0.20")
	producer.sendHead("GET", "/v1/topics/orders", "Authorization: Bearer "+testAdminKey)
	if resp, body := producer.response(); resp.StatusCode != 200 {
		t.Fatalf("producer: %d %s", resp.StatusCode, body)
	}
	producer.sendHead("POST", "/v1/topics/orders/events", "Authorization: Bearer "+testAdminKey, "Content-Length: 8")
	_, _ = io.WriteString(producer.c, "{")
	// A browser's stream, authenticated by a connection token.
	sse := openSSEWithToken(t, m, "orders")

	// The flood: three times the slots, from eight addresses.
	for i := range 3 * maxConns {
		c := dialRaw(t, m, fmt.Sprintf("127.0.0.%d", 30+i%8))
		_, _ = io.WriteString(c.c, "GET /v1/topics HTTP/1.1\r\nHost: herald\r\nX-Slow: ")
	}

	admin := dialRaw(t, m, "127.0.0.1")
	admin.sendHead("GET", "/v1/topics", "Authorization: Bearer "+testAdminKey)
	if resp, body := admin.response(); resp.StatusCode != 200 {
		t.Fatalf("the admin got %d %s while unauthenticated connections filled every slot", resp.StatusCode, body)
	}
	// The producer's connection was kept: its request completes. The
	// stream was kept: it carries the event.
	_, _ = io.WriteString(producer.c, `"n":1 }`)
	if resp, body := producer.response(); resp.StatusCode != 201 {
		t.Fatalf("the authenticated producer got %d %s after the flood", resp.StatusCode, body)
	}
	select {
	case d, ok := <-sse:
		if !ok || d != `{"n":1 }` {
			t.Fatalf("the stream after the flood: %q (open %v), want the event", d, ok)
		}
	case <-time.After(guardTimeout):
		t.Fatal("the stream carried nothing after the flood")
	}
}

// openSSEWithToken follows topic over SSE authenticated by a connection
// token, as a browser does, and returns the data lines it receives.
func openSSEWithToken(t *testing.T, m *Main, topic string) <-chan string {
	t.Helper()
	ctx := t.Context()
	req, _ := http.NewRequestWithContext(ctx, "POST", m.URL()+"/v1/tokens", strings.NewReader(`{"scopes":["read:`+topic+`"]}`))
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
	sreq, _ := http.NewRequestWithContext(ctx, "GET", m.URL()+"/v1/topics/"+topic+"/stream?token="+tok.Token, nil)
	sreq.Header.Set("Accept", "text/event-stream")
	// A connection of its own, which only the token authenticates.
	tr := &http.Transport{}
	sresp, err := (&http.Client{Transport: tr}).Do(sreq)
	if err != nil || sresp.StatusCode != 200 {
		t.Fatalf("open SSE: %v %v", sresp, err)
	}
	t.Cleanup(func() { sresp.Body.Close(); tr.CloseIdleConnections() })
	data := make(chan string, 10)
	go func() {
		defer close(data)
		sc := bufio.NewScanner(sresp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				data <- strings.TrimSpace(d)
			}
		}
	}()
	return data
}

// TestStreamsOutliveTheReadTimeout opens an SSE stream and a WebSocket with
// a read timeout of 200ms, waits for a slow body opened after them to be
// cut (so their own read deadlines, had they any, have passed), and checks
// both still carry traffic: the timeout is for request bodies only.
func TestStreamsOutliveTheReadTimeout(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.HTTPReadTimeout = 200 * time.Millisecond })
	ctx := t.Context()
	ac := adminClient(m)
	if _, _, err := ac.PutTopic(ctx, "live", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}

	sreq, _ := http.NewRequestWithContext(ctx, "GET", m.URL()+"/v1/topics/live/stream", nil)
	sreq.Header.Set("Accept", "text/event-stream")
	sreq.Header.Set("Authorization", "Bearer "+testAdminKey)
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil || sresp.StatusCode != 200 {
		t.Fatalf("open SSE: %v %v", sresp, err)
	}
	defer sresp.Body.Close()
	sseData := make(chan string, 10)
	go func() {
		defer close(sseData)
		sc := bufio.NewScanner(sresp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
				sseData <- strings.TrimSpace(d)
			}
		}
	}()

	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(m.URL(), "http")+"/v1/stream",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + testAdminKey}}})
	if err != nil {
		t.Fatalf("open WebSocket: %v", err)
	}
	defer ws.CloseNow()

	// A slow body opened now is cut at its read deadline, which is later
	// than the streams' would be.
	c := dialRaw(t, m, "127.0.0.1")
	c.sendHead("POST", "/v1/topics/live/events", "Authorization: Bearer "+testAdminKey, "Content-Length: 10")
	if resp, body := c.response(); resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body: %d %s, want 408", resp.StatusCode, body)
	}

	if _, err := ac.Publish(ctx, "live", []byte(`{"n":1}`), client.PublishOptions{ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	select {
	case d, ok := <-sseData:
		if !ok || d != `{"n":1}` {
			t.Fatalf("SSE after the read timeout: %q (open %v), want the event", d, ok)
		}
	case <-time.After(guardTimeout):
		t.Fatal("SSE: no event after the read timeout")
	}

	wctx, cancel := context.WithTimeout(ctx, guardTimeout)
	defer cancel()
	if err := ws.Write(wctx, websocket.MessageText, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatalf("WebSocket write after the read timeout: %v", err)
	}
	_, msg, err := ws.Read(wctx)
	if err != nil || !strings.Contains(string(msg), `"pong"`) {
		t.Fatalf("WebSocket after the read timeout: %s, %v; want a pong", msg, err)
	}
}

// TestIdleConnectionsAreClosed checks http.idle-timeout: a keep-alive
// connection with no next request is closed by the server.
func TestIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.HTTPIdleTimeout = 100 * time.Millisecond })
	c := dialRaw(t, m, "127.0.0.1")
	c.sendHead("GET", "/healthz")
	if resp, body := c.response(); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("got %d (close %v) %s; want 200 on a kept-alive connection", resp.StatusCode, resp.Close, body)
	}
	c.closedByServer()
}

// TestMalformedRequestsGetProblems sends headers net/http refuses before
// any handler runs: the answer is still a problem, not Go's plain text.
func TestMalformedRequestsGetProblems(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	for _, header := range []string{"Herald-Event-Key: a\x01b", "Herald-Event-Type: a\rb", "Idempotency-Key: a\x7fb"} {
		c := dialRaw(t, m, "127.0.0.1")
		c.sendHead("POST", "/v1/topics/orders/events", "Authorization: Bearer "+testAdminKey, header, "Content-Length: 0")
		resp, body := c.response()
		if resp.StatusCode != 400 || problemType(resp, body) != "invalid" || !strings.Contains(body, "control character") {
			t.Fatalf("header %q: %d %s %s; want a 400 invalid problem", header, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}
