package api

import (
	"bytes"
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
)

// ListenerConfig bounds the connections a Listener hands to the HTTP server.
// Zero means no bound.
type ListenerConfig struct {
	// MaxConns bounds the open connections, streams included.
	MaxConns int
	// MaxConnsPerAddr bounds the open connections from one remote IP
	// address, so one client cannot take every slot of MaxConns.
	MaxConnsPerAddr int
}

// Listener is the API's net.Listener. It keeps the number of open
// connections within its bounds, so a flood of idle or slow connections
// can neither exhaust the process's open files nor keep authenticated
// clients out. When a new connection would go over a bound, the oldest
// connection within that bound that has not yet authenticated (carried a
// request with valid credentials; see ConnContext) is closed to make room;
// when every one has, the new connection is answered at once with a 503
// problem (Retry-After: 1) and closed, before any of its request is read.
// So clients without credentials only ever take each other's slots.
//
// It also rewrites the plain-text answers net/http gives to requests it
// cannot parse (control characters in a header, a malformed request line,
// headers over the size limit) into problems, so every error a client sees
// has the API's shape.
//
// Its methods are safe for concurrent use; connections release their slot
// when closed, hijacked ones (WebSockets) included.
type Listener struct {
	net.Listener
	cfg ListenerConfig
	log *slog.Logger

	open    prometheus.Gauge
	refused *prometheus.CounterVec
	evicted *prometheus.CounterVec

	mu     sync.Mutex
	total  int
	byAddr map[string]int
	// unproven holds the open connections that have not authenticated,
	// oldest first: the ones closed to make room.
	unproven list.List
}

// The bounds a connection can meet, the label values of
// herald_http_connections_refused_total and ..._evicted_total.
const (
	boundMaxConns        = "max-conns"
	boundMaxConnsPerAddr = "max-conns-per-addr"
)

// NewListener wraps ln. A nil logger discards; metrics go to reg (nil: not
// registered).
func NewListener(ln net.Listener, cfg ListenerConfig, log *slog.Logger, reg prometheus.Registerer) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Listener{
		Listener: ln,
		cfg:      cfg,
		log:      log,
		byAddr:   make(map[string]int),
		open: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_http_connections",
			Help: "Open client connections to the API, streams included.",
		})),
		refused: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_http_connections_refused_total",
			Help: "New client connections refused because every connection within http.max-conns or http.max-conns-per-addr had authenticated, by bound.",
		}, []string{"reason"})),
		evicted: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_http_connections_evicted_total",
			Help: "Client connections that had not authenticated, closed to make room for a new one under http.max-conns or http.max-conns-per-addr, by bound.",
		}, []string{"reason"})),
	}
}

// Accept returns the next connection within the bounds, making room or
// answering and closing the ones over them.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := remoteIP(c.RemoteAddr())
		lc, victim, bound := l.admit(c, addr)
		if victim != nil {
			l.evicted.WithLabelValues(bound).Inc()
			l.log.LogAttrs(context.Background(), slog.LevelDebug, "connection closed to make room",
				slog.String("remote_addr", victim.addr), slog.String("reason", bound))
			_ = victim.Conn.Close() // its server goroutine sees the error and ends
		}
		if lc == nil {
			l.refuse(c, addr, bound)
			continue
		}
		return lc, nil
	}
}

// admit takes a slot for c from addr, closing the oldest unauthenticated
// connection within a full bound to free one (victim, which admit has
// already released). It returns nil, and the bound, when none is free.
func (l *Listener) admit(c net.Conn, addr string) (lc, victim *limitedConn, bound string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.cfg.MaxConnsPerAddr > 0 && l.byAddr[addr] >= l.cfg.MaxConnsPerAddr:
		bound = boundMaxConnsPerAddr
	case l.cfg.MaxConns > 0 && l.total >= l.cfg.MaxConns:
		bound = boundMaxConns
	}
	if bound != "" {
		// Freeing one of addr's slots frees one of the total too.
		victim = l.oldestUnproven(addr, bound == boundMaxConnsPerAddr)
		if victim == nil {
			return nil, nil, bound
		}
		l.releaseLocked(victim)
	}
	lc = &limitedConn{Conn: c, l: l, addr: addr}
	lc.unproven = l.unproven.PushBack(lc)
	l.total++
	l.byAddr[addr]++
	l.open.Inc()
	return lc, victim, bound
}

// oldestUnproven returns the oldest connection that has not authenticated,
// from addr when sameAddr is set, or nil. l.mu is held.
func (l *Listener) oldestUnproven(addr string, sameAddr bool) *limitedConn {
	for e := l.unproven.Front(); e != nil; e = e.Next() {
		if c := e.Value.(*limitedConn); !sameAddr || c.addr == addr {
			return c
		}
	}
	return nil
}

// release gives c's slot back, once.
func (l *Listener) release(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(c)
}

func (l *Listener) releaseLocked(c *limitedConn) {
	if c.released {
		return
	}
	c.released = true
	if c.unproven != nil {
		l.unproven.Remove(c.unproven)
		c.unproven = nil
	}
	l.total--
	if l.byAddr[c.addr]--; l.byAddr[c.addr] <= 0 {
		delete(l.byAddr, c.addr)
	}
	l.open.Dec()
}

// prove marks c as authenticated: it is no longer closed to make room.
func (l *Listener) prove(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.unproven != nil {
		l.unproven.Remove(c.unproven)
		c.unproven = nil
	}
}

type connKey struct{}

// ConnContext is the http.Server's ConnContext for a server on a Listener:
// it lets the API tell the Listener which connections have authenticated.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*limitedConn); ok {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// connAuthenticated marks the connection that carried the request of ctx as
// having presented valid credentials (see Listener).
func connAuthenticated(ctx context.Context) {
	if lc, ok := ctx.Value(connKey{}).(*limitedConn); ok {
		lc.l.prove(lc)
	}
}

// refuseWriteTimeout bounds the write of the 503 to a refused connection;
// the answer fits in a fresh socket's buffer, so it is a guard only.
const refuseWriteTimeout = time.Second

// refuse answers c with a 503 problem and closes it. The answer goes out
// before the request is read, which HTTP/1.1 clients accept; one still
// sending may see the connection reset instead.
func (l *Listener) refuse(c net.Conn, addr, reason string) {
	l.refused.WithLabelValues(reason).Inc()
	detail := fmt.Sprintf("too many connections: the server holds at most %d at once; retry later", l.cfg.MaxConns)
	if reason == boundMaxConnsPerAddr {
		detail = fmt.Sprintf("too many connections from your address: at most %d at once; close idle ones or retry later", l.cfg.MaxConnsPerAddr)
	}
	id := herald.NewID(time.Now())
	l.log.LogAttrs(context.Background(), slog.LevelDebug, "connection refused",
		slog.String("request_id", id), slog.String("remote_addr", addr), slog.String("reason", reason))
	_ = c.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	_, _ = c.Write(rawProblem(http.StatusServiceUnavailable, herald.CodeUnavailable, detail, id, "Retry-After: 1\r\n"))
	_ = c.Close()
}

// remoteIP is the address connections are counted by: the IP of a TCP
// peer, the whole address otherwise.
func remoteIP(a net.Addr) string {
	if a == nil {
		return ""
	}
	s := a.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

// limitedConn holds a slot of its Listener until closed. Its unproven
// and released fields are guarded by the Listener's mu.
type limitedConn struct {
	net.Conn
	l        *Listener
	addr     string
	unproven *list.Element // in l.unproven until it authenticates
	released bool
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.l.release(c)
	return err
}

// CloseWrite half-closes a TCP connection, as net/http does before it
// closes one whose client may still be sending.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Write passes p on, unless it is net/http's own plain-text answer to a
// request it could not parse, which it replaces with a problem.
func (c *limitedConn) Write(p []byte) (int, error) {
	if status, text, ok := parseProtocolError(p); ok {
		id := herald.NewID(time.Now())
		c.l.log.LogAttrs(context.Background(), slog.LevelDebug, "malformed request",
			slog.String("request_id", id), slog.String("remote_addr", c.addr), slog.Int("status", status), slog.String("err", text))
		code, detail := protocolProblem(status, text)
		if _, err := c.Conn.Write(rawProblem(status, code, detail, id, "")); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// goErrorHeaders are the headers net/http's server writes, and only there,
// when it answers a request it could not parse (net/http's conn.serve):
// "HTTP/1.1 <status>[: <text>]" + goErrorHeaders + a plain-text body, in
// one Write, then it closes the connection. A handler's response never
// looks like this: the server adds Date and the API X-Request-Id to every
// one. TestListenerProtocolErrors pins the format, so a Go release that
// changes it fails the test rather than the rewrite going quiet.
var goErrorHeaders = []byte("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")

// parseProtocolError recognizes net/http's answer to an unparsable request
// and returns its status and its text ("invalid header value", or "" when
// it gives none).
func parseProtocolError(p []byte) (status int, text string, ok bool) {
	rest, ok := bytes.CutPrefix(p, []byte("HTTP/1.1 "))
	if !ok || len(rest) < 3 {
		return 0, "", false
	}
	line, body, ok := bytes.Cut(rest, goErrorHeaders)
	if !ok || bytes.Contains(line, []byte("\r\n")) {
		return 0, "", false
	}
	status, err := strconv.Atoi(string(line[:3]))
	if err != nil || status < 400 || status > 599 {
		return 0, "", false
	}
	// The body is "<status> <reason>[: <text>]", or a bare text.
	_, after, _ := bytes.Cut(body, []byte(": "))
	if !bytes.HasPrefix(body, line[:3]) {
		after = body
	}
	return status, string(after), true
}

// protocolProblem describes a request net/http refused before any handler
// saw it.
func protocolProblem(status int, text string) (herald.Code, string) {
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		return herald.CodeTooLarge, "the request headers are over the server's limit"
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return herald.CodeUnsupported, "the request cannot be served: " + text
	}
	switch text {
	case "", "invalid header value", "invalid header name":
		// net/http says no more, or no more than this, of which header.
		return herald.CodeInvalid, "the request is not well-formed HTTP/1.1: a header holds a control character (header values may hold visible characters, spaces and tabs only), a CR or LF breaks a header line, or a line lacks its colon"
	}
	return herald.CodeInvalid, "the request is not well-formed HTTP/1.1: " + text
}

// rawProblem is a whole HTTP/1.1 response carrying a problem, for answers
// written on a connection before or without a handler; extra holds more
// header lines, each ending in CRLF. The connection is closed after it.
func rawProblem(status int, code herald.Code, detail, requestID, extra string) []byte {
	cp := herald.ProblemFor(code)
	body, err := marshalJSON(problem{Type: cp.Type, Title: cp.Title, Status: status, Detail: detail, RequestID: requestID})
	if err != nil { // cannot happen: every member is a string or an int
		body = []byte(`{"type":"` + cp.Type + `","status":` + strconv.Itoa(status) + "}\n")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: %s\r\n%s\r\n",
		status, http.StatusText(status), problemContentType, len(body), requestID, extra)
	b.Write(body)
	return b.Bytes()
}
