package api

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// listenerServer serves h through a Listener with cfg.
func listenerServer(t *testing.T, cfg ListenerConfig, h http.Handler, maxHeaderBytes int) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.MaxHeaderBytes = maxHeaderBytes
	srv.Config.ConnContext = ConnContext
	srv.Listener = NewListener(srv.Listener, cfg, nil, nil)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// dialFrom connects to addr from the loopback address from (127.0.0.x), or
// skips where the system does not route the whole of 127/8 to loopback.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s (loopback aliases unavailable?): %v", from, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // a guard: a hang fails the test
	return c
}

// roundTrip sends raw on c and reads one response.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) (*http.Response, []byte) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	return readResponse(t, br)
}

func readResponse(t *testing.T, br *bufio.Reader) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

// wantProblem checks that resp is a problem of the code with the status,
// and returns it.
func wantProblem(t *testing.T, resp *http.Response, body []byte, status int, code herald.Code) problem {
	t.Helper()
	var p problem
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != problemContentType || json.Unmarshal(body, &p) != nil {
		t.Fatalf("got %d %q %s; want a %d problem", resp.StatusCode, resp.Header.Get("Content-Type"), body, status)
	}
	if p.Type != herald.ProblemTypeBase+string(code) || p.Status != status || p.Detail == "" ||
		p.RequestID == "" || p.RequestID != resp.Header.Get("X-Request-Id") {
		t.Fatalf("problem %+v (X-Request-Id %q); want type %s, status %d, a detail and the request id", p, resp.Header.Get("X-Request-Id"), code, status)
	}
	return p
}

// TestListenerLimits checks the connection bounds. Over a bound, the
// oldest connection that has not authenticated is closed to make room;
// when all have, the new one is answered 503 at once. A closed connection
// frees its slot.
func TestListenerLimits(t *testing.T) {
	t.Parallel()
	srv := listenerServer(t, ListenerConfig{MaxConns: 3, MaxConnsPerAddr: 2},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == "yes" { // what principal does for a valid key
				connAuthenticated(r.Context())
			}
			_, _ = io.WriteString(w, "ok")
		}), 0)
	addr := srv.Listener.Addr().String()

	type conn struct {
		net.Conn
		br *bufio.Reader
	}
	dial := func(from string) conn {
		c := dialFrom(t, from, addr)
		return conn{c, bufio.NewReader(c)}
	}
	// served sends a request on c, authenticated or not, and wants 200.
	served := func(c conn, auth bool) {
		t.Helper()
		raw := "GET / HTTP/1.1\r\nHost: herald\r\n\r\n"
		if auth {
			raw = "GET / HTTP/1.1\r\nHost: herald\r\nAuthorization: yes\r\n\r\n"
		}
		resp, body := roundTrip(t, c, c.br, raw)
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("from %s: %d %s, want 200 ok", c.LocalAddr(), resp.StatusCode, body)
		}
	}
	closed := func(c conn) {
		t.Helper()
		if _, err := c.br.ReadByte(); err == nil {
			t.Fatalf("%s: the connection is still open", c.LocalAddr())
		}
	}
	refused := func(c conn, detail string) {
		t.Helper()
		resp, body := readResponse(t, c.br) // answered before any request is sent
		p := wantProblem(t, resp, body, http.StatusServiceUnavailable, herald.CodeUnavailable)
		if !strings.Contains(p.Detail, detail) || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("refusal: %+v, Retry-After %q; want a detail with %q", p, resp.Header.Get("Retry-After"), detail)
		}
		closed(c)
	}

	// Per address: an idle connection that never authenticated makes room.
	a1, a2 := dial("127.0.0.1"), dial("127.0.0.1")
	served(a1, true)
	served(a2, false) // served, but without credentials
	a3 := dial("127.0.0.1")
	closed(a2)
	served(a3, true)
	refused(dial("127.0.0.1"), "too many connections from your address: at most 2") // a1, a3 authenticated

	// In all: the same, across addresses.
	b1 := dial("127.0.0.2") // the third connection: the total is full
	served(b1, false)
	c1 := dial("127.0.0.3")
	closed(b1)
	served(c1, true)
	refused(dial("127.0.0.4"), "the server holds at most 3") // a1, a3, c1 authenticated

	// Closing a connection gives its slot back.
	_ = a1.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dial("127.0.0.4")
		resp, _ := roundTrip(t, c, c.br, "GET / HTTP/1.1\r\nHost: herald\r\n\r\n")
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed connection's slot was not given back: %d", resp.StatusCode)
		}
	}
}

// TestListenerProtocolErrors checks that requests net/http refuses before
// any handler runs get problems, not its plain text, and that a handler's
// own plain-text answer is left alone. It pins net/http's format: a Go
// release that changes it fails here.
func TestListenerProtocolErrors(t *testing.T) {
	t.Parallel()
	srv := listenerServer(t, ListenerConfig{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "400 Bad Request: the handler's own words", http.StatusBadRequest)
	}), 4<<10)
	addr := srv.Listener.Addr().String()

	for _, tc := range []struct {
		name   string
		raw    string
		status int
		code   herald.Code
		detail string
	}{
		{"control character in a header value", "GET / HTTP/1.1\r\nHost: h\r\nHerald-Event-Key: a\x01b\r\n\r\n", 400, herald.CodeInvalid, "control character"},
		{"CR in a header value", "GET / HTTP/1.1\r\nHost: h\r\nHerald-Event-Key: a\rb\r\n\r\n", 400, herald.CodeInvalid, "control character"},
		{"DEL in a header value", "GET / HTTP/1.1\r\nHost: h\r\nHerald-Event-Type: a\x7fb\r\n\r\n", 400, herald.CodeInvalid, "control character"},
		{"LF in a header value", "GET / HTTP/1.1\r\nHost: h\r\nHerald-Event-Key: a\nb\r\n\r\n", 400, herald.CodeInvalid, "not well-formed"},
		{"bad header name", "GET / HTTP/1.1\r\nHost: h\r\nBad\x01Name: x\r\n\r\n", 400, herald.CodeInvalid, ""},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, herald.CodeInvalid, "missing required Host header"},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: zip\r\n\r\n", 501, herald.CodeUnsupported, "transfer encoding"},
		{"headers too large", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", 431, herald.CodeTooLarge, "headers are over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.1", addr)
			br := bufio.NewReader(c)
			resp, body := roundTrip(t, c, br, tc.raw)
			p := wantProblem(t, resp, body, tc.status, tc.code)
			if !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("detail %q, want it to contain %q", p.Detail, tc.detail)
			}
		})
	}

	// A handler's response, even a plain-text 400, passes unchanged.
	c := dialFrom(t, "127.0.0.1", addr)
	resp, body := roundTrip(t, c, bufio.NewReader(c), "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || string(body) != "400 Bad Request: the handler's own words\n" {
		t.Fatalf("the handler's answer was changed: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
