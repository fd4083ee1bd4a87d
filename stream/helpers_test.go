package stream_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/stream"
)

// testSecret signs the connection tokens of test nodes.
var testSecret = []byte("test-secret-test-secret-test-secret!")

// authenticator establishes who calls from an API key: the API's part,
// played by the tests.
type authenticator interface {
	Authenticate(r *http.Request) (herald.Scopes, string, error)
}

// testKeys authenticates "Authorization: Bearer <name>" with the scopes
// listed for the name: the API's role, played by a map. The subject is
// the name.
type testKeys map[string]herald.Scopes

func (k testKeys) Authenticate(r *http.Request) (herald.Scopes, string, error) {
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil, "", herald.Errorf(herald.CodeUnauthorized, "an API key is required")
	}
	scopes, ok := k[secret]
	if !ok {
		return nil, "", herald.Errorf(herald.CodeUnauthorized, "the API key is not valid")
	}
	return scopes, secret, nil
}

func scopes(t testing.TB, texts ...string) herald.Scopes {
	t.Helper()
	ss, err := herald.ParseScopes(texts)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

// defaultKeys: "admin" may do anything, "reader" reads orders.>.
func defaultKeys(t testing.TB) testKeys {
	return testKeys{
		"admin":  scopes(t, "admin"),
		"reader": scopes(t, "read:orders.>"),
	}
}

// front plays the API in front of the hub, as the API does it: it
// establishes who calls (an API key through auth, or a connection token
// in ?token= whose key must still hold), hands the hub the principal, and
// answers errors as problems. The API's own handlers are tested in
// package api; these tests are about the hub.
type front struct {
	hub    *stream.Hub
	auth   authenticator
	tokens *stream.Tokens
	keys   stream.KeyChecker
}

func (f front) principal(r *http.Request) (herald.Principal, error) {
	var who herald.Principal
	if tok := r.URL.Query().Get("token"); tok != "" {
		if f.tokens == nil {
			return who, herald.Errorf(herald.CodeUnauthorized, "connection tokens are not enabled on this server")
		}
		var err error
		if who, err = f.tokens.Verify(tok); err != nil {
			return who, err
		}
	} else {
		scopes, subject, err := f.auth.Authenticate(r)
		if err != nil {
			return who, err
		}
		who = herald.Principal{Subject: subject, Scopes: scopes}
	}
	if f.keys != nil {
		exp, err := f.keys.CheckKey(r.Context(), who.Subject)
		if herald.IsCode(err, herald.CodeUnauthorized) && !who.Expires.IsZero() {
			return who, herald.Errorf(herald.CodeUnauthorized, "the API key that asked for this connection token was deleted or has expired")
		}
		if err != nil {
			return who, err
		}
		who.KeyExpires = exp
	}
	return who, nil
}

func (f front) handle(serve func(http.ResponseWriter, *http.Request, herald.Principal) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, err := f.principal(r)
		if err == nil {
			err = serve(w, r, who)
		}
		if err != nil {
			writeProblem(w, err)
		}
	}
}

// issueToken serves POST /v1/tokens for the hub's tests: the caller's key
// must hold the scopes asked for, and the token ends with the key.
func (f front) issueToken(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		callerScopes, subject, err := f.auth.Authenticate(r)
		if err != nil {
			return err
		}
		var req struct {
			Scopes []string `json:"scopes"`
			TTL    string   `json:"ttl"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			return herald.Errorf(herald.CodeInvalid, "bad token request: %v", err)
		}
		scopes, err := herald.ParseScopes(req.Scopes)
		if err != nil {
			return err
		}
		for _, s := range scopes {
			if !callerScopes.Allows(s.Action, s.Pattern) {
				return herald.Errorf(herald.CodeForbidden, "the key does not hold %s", s)
			}
		}
		ttl := f.tokens.DefaultTTL()
		if req.TTL != "" {
			if ttl, err = herald.ParseDuration(req.TTL); err != nil {
				return herald.FieldErrorf("ttl", "bad ttl")
			}
		}
		var notAfter time.Time
		if f.keys != nil {
			if notAfter, err = f.keys.CheckKey(r.Context(), subject); err != nil {
				return err
			}
		}
		token, exp, err := f.tokens.Issue(scopes, ttl, subject, notAfter)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(map[string]any{"token": token, "expires_at": exp.Format(time.RFC3339), "scopes": scopes.Strings()})
	}()
	if err != nil {
		writeProblem(w, err)
	}
}

// writeProblem answers err as the API does: application/problem+json of
// its code, with the error's message and field.
func writeProblem(w http.ResponseWriter, err error) {
	code, msg, field := herald.CodeInternal, err.Error(), ""
	if he, ok := errors.AsType[*herald.Error](err); ok {
		code, msg, field = he.Code, he.Message, he.Field
	}
	p := herald.ProblemFor(code)
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": p.Type, "title": p.Title, "status": p.Status, "detail": msg, "field": field})
}

// clock is a settable clock; zero means the real time.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

// node is a Herald stream server for tests: a real SQLite store in a
// file, the real committer and tail cache, the hub as the committer's
// hook, served by httptest on 127.0.0.1.
type node struct {
	t         *testing.T
	path      string
	store     *sqlite.Store
	tail      *engine.Tail
	committer *engine.Committer
	hub       *stream.Hub
	tokens    *stream.Tokens
	reg       *prometheus.Registry
	srv       *httptest.Server
	url       string
	addr      string
	stopOnce  sync.Once
}

type nodeOptions struct {
	cfg      stream.Config
	keys     testKeys
	clock    *clock // the hub's and the tokens' clock
	addr     string // listen here (a restart); "" for a new port
	path     string // the store file; "" for a new one
	mux      func(*http.ServeMux)
	noTokens bool
	http2    bool // serve HTTP/2 over TLS
	users    bool // keep end users' server-side subscriptions in the store
	// auth, if set, authenticates instead of keys (a KeyChecker too,
	// say).
	auth authenticator
	// wrapStore, if set, wraps the store the hub reads (to count reads).
	wrapStore func(stream.Store) stream.Store
}

func startNode(t *testing.T, o nodeOptions) *node {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if o.path == "" {
		o.path = filepath.Join(t.TempDir(), "herald.db")
	}
	if o.keys == nil {
		o.keys = defaultKeys(t)
	}
	if o.clock == nil {
		o.clock = &clock{}
	}
	st, err := sqlite.Open(ctx, o.path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, path: o.path, store: st, reg: prometheus.NewRegistry()}
	n.tail = engine.NewTail(engine.TailConfig{})
	n.committer = engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	if !o.noTokens {
		n.tokens, err = stream.NewTokens(stream.TokensConfig{Secret: testSecret, Now: o.clock.now})
		if err != nil {
			t.Fatal(err)
		}
	}
	var auth authenticator = o.keys
	if o.auth != nil {
		auth = o.auth
	}
	var hubStore stream.Store = st
	if o.wrapStore != nil {
		hubStore = o.wrapStore(st)
	}
	keys, _ := auth.(stream.KeyChecker)
	deps := stream.Deps{Store: hubStore, Tail: n.tail, Keys: keys, Registry: n.reg, Now: o.clock.now}
	if o.users {
		deps.Users = st
	}
	n.hub = stream.NewHub(o.cfg, deps)
	f := front{hub: n.hub, auth: auth, tokens: n.tokens, keys: keys}
	n.committer.OnCommit(n.tail.Add)
	n.committer.OnCommit(n.hub.OnCommit)
	if err := n.hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.committer.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/topics/{topic}/stream", f.handle(func(w http.ResponseWriter, r *http.Request, who herald.Principal) error {
		return n.hub.ServeSSE(w, r, who)
	}))
	mux.HandleFunc("OPTIONS /v1/topics/{topic}/stream", func(w http.ResponseWriter, r *http.Request) {
		if err := n.hub.Preflight(w, r); err != nil {
			writeProblem(w, err)
		}
	})
	mux.HandleFunc("GET /v1/stream", f.handle(func(w http.ResponseWriter, r *http.Request, who herald.Principal) error {
		return n.hub.ServeWebSocket(w, r, who)
	}))
	if n.tokens != nil {
		mux.HandleFunc("POST /v1/tokens", f.issueToken)
	}
	if o.mux != nil {
		o.mux(mux)
	}
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	n.srv = httptest.NewUnstartedServer(mux)
	_ = n.srv.Listener.Close()
	n.srv.Listener = ln
	if o.http2 {
		n.srv.EnableHTTP2 = true
		n.srv.StartTLS()
	} else {
		n.srv.Start()
	}
	n.url, n.addr = n.srv.URL, ln.Addr().String()
	t.Cleanup(n.stop)
	return n
}

// stop shuts the node down as Main does: streams told to reconnect, HTTP
// closed, committer drained, store closed.
func (n *node) stop() {
	n.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.hub.Stop(ctx); err != nil {
			n.t.Errorf("hub.Stop: %v", err)
		}
		n.srv.Close()
		if err := n.committer.Stop(ctx); err != nil {
			n.t.Errorf("committer.Stop: %v", err)
		}
		if err := n.store.Close(); err != nil {
			n.t.Errorf("store.Close: %v", err)
		}
	})
}

// restart stops the node and starts a new one on the same address and
// store file, as a server restart looks to clients.
func (n *node) restart(o nodeOptions) *node {
	n.stop()
	o.addr, o.path = n.addr, n.path
	return startNode(n.t, o)
}

func (n *node) createTopic(name string, retention time.Duration) {
	n.t.Helper()
	tp := herald.Topic{Name: name, Retention: retention}.WithDefaults()
	if _, _, err := n.store.PutTopic(n.t.Context(), tp); err != nil {
		n.t.Fatal(err)
	}
}

// pub is an event to publish.
type pub struct {
	topic, typ, ct string
	payload        string
	at             time.Time
}

// publish commits the events in one transaction through the committer and
// returns their seqs.
func (n *node) publish(events ...pub) []int64 {
	n.t.Helper()
	evs := make([]*herald.Event, len(events))
	for i, p := range events {
		at := p.at
		if at.IsZero() {
			at = time.Now().UTC()
		}
		ct := p.ct
		if ct == "" {
			ct = "application/json"
		}
		evs[i] = &herald.Event{ID: herald.NewID(at), Topic: p.topic, Type: p.typ, ContentType: ct,
			Payload: []byte(p.payload), Time: at}
	}
	res, err := n.committer.Append(n.t.Context(), evs)
	if err != nil {
		n.t.Fatalf("publish: %v", err)
	}
	seqs := make([]int64, len(res))
	for i, r := range res {
		if r.Err != nil {
			n.t.Fatalf("publish %s: %v", events[i].topic, r.Err)
		}
		seqs[i] = r.Seq
	}
	return seqs
}

// publishN publishes n JSON events {"n":i} to the topic, one commit each.
func (n *node) publishN(topic string, from, count int) {
	n.t.Helper()
	for i := from; i < from+count; i++ {
		n.publish(pub{topic: topic, typ: "test", payload: fmt.Sprintf(`{"n":%d}`, i)})
	}
}

func (n *node) wsURL(query string) string {
	u := "ws" + strings.TrimPrefix(n.url, "http") + "/v1/stream"
	if query != "" {
		u += "?" + query
	}
	return u
}

// metric returns the value of a metric with the labels, or 0.
func (n *node) metric(name string, labels ...string) float64 {
	n.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, labels) {
				switch {
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Counter != nil:
					return m.Counter.GetValue()
				}
			}
		}
	}
	return 0
}

func labelsMatch(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// frame is any server frame of the WebSocket protocol.
type frame struct {
	Op         string          `json:"op"`
	ID         string          `json:"id"`
	Sub        string          `json:"sub"`
	Topic      string          `json:"topic"`
	Seq        int64           `json:"seq"`
	EventID    string          `json:"-"`
	Type       string          `json:"type"`
	Key        string          `json:"key"`
	Data       json.RawMessage `json:"data"`
	DataBase64 *string         `json:"data_base64"`
	Recovered  *bool           `json:"recovered"`
	FirstSeq   int64           `json:"first_seq"`
	AfterSeq   *int64          `json:"after_seq"`
	MissedFrom int64           `json:"missed_from"`
	MissedTo   int64           `json:"missed_to"`
	Time       string          `json:"time"`
	Error      *struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
		Field  string `json:"field"`
	} `json:"error"`
}

// wsClient is a raw WebSocket client of the stream protocol.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

// dialWS connects with the API key (or none) and a query string.
func (n *node) dialWS(key, query string) *wsClient {
	n.t.Helper()
	c, resp, err := n.tryDialWS(key, query)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		n.t.Fatalf("dial WebSocket: %v (status %d)", err, status)
	}
	return c
}

func (n *node) tryDialWS(key, query string) (*wsClient, *http.Response, error) {
	return n.dialWSWith(nil, key, query)
}

// dialWSWith dials with the HTTP client hc (nil: the default).
func (n *node) dialWSWith(hc *http.Client, key, query string) (*wsClient, *http.Response, error) {
	h := http.Header{}
	if key != "" {
		h.Set("Authorization", "Bearer "+key)
	}
	ctx, cancel := context.WithTimeout(n.t.Context(), 10*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, n.wsURL(query), &websocket.DialOptions{HTTPHeader: h, HTTPClient: hc})
	if err != nil {
		return nil, resp, err
	}
	conn.SetReadLimit(16 << 20)
	c := &wsClient{t: n.t, conn: conn}
	n.t.Cleanup(func() { _ = conn.CloseNow() })
	return c, resp, nil
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next reads the next frame, failing the test after a deadline.
func (c *wsClient) next() frame {
	c.t.Helper()
	f, err := c.read(20 * time.Second)
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

func (c *wsClient) read(timeout time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(c.t.Context(), timeout)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, fmt.Errorf("frame %s: %w", b, err)
	}
	var id struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &id)
	f.EventID = id.ID
	return f, nil
}

// subscribe sends a subscribe op and returns the acknowledgement.
func (c *wsClient) subscribe(op map[string]any) frame {
	c.t.Helper()
	op["op"] = "subscribe"
	c.send(op)
	f := c.next()
	if f.Op != "subscribed" {
		c.t.Fatalf("subscribe %v: got %+v, want subscribed", op, f)
	}
	return f
}

// events reads n frames that must all be events and returns them.
func (c *wsClient) events(n int) []frame {
	c.t.Helper()
	out := make([]frame, 0, n)
	for len(out) < n {
		f := c.next()
		if f.Op != "event" {
			c.t.Fatalf("frame %d: got %+v, want an event", len(out), f)
		}
		out = append(out, f)
	}
	return out
}

// closeStatus reads until the connection ends and returns the close error.
func (c *wsClient) closeStatus() (websocket.StatusCode, string) {
	c.t.Helper()
	for {
		_, err := c.read(20 * time.Second)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Reason
		}
		return websocket.CloseStatus(err), err.Error()
	}
}

func seqsOf(fs []frame) []int64 {
	out := make([]int64, len(fs))
	for i, f := range fs {
		out[i] = f.Seq
	}
	return out
}

func span(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// sseEvent is one event of an SSE stream.
type sseEvent struct {
	ID, Event, Data string
	Comments        int // comment lines seen before it
}

// sseClient reads an SSE response.
type sseClient struct {
	t      *testing.T
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
	retry  string
	lastID string // what EventSource would send as Last-Event-ID
	// stopOnID makes next return id-only messages, which EventSource
	// records without dispatching anything.
	stopOnID bool
}

// position reads up to the next id-only message and returns its id.
func (c *sseClient) position() string {
	c.t.Helper()
	c.stopOnID = true
	defer func() { c.stopOnID = false }()
	ev := c.next()
	if ev == nil || ev.Data != "" || ev.Event != "" {
		c.t.Fatalf("got %+v, want an id-only message", ev)
	}
	return ev.ID
}

// getSSE opens a stream; header holds extra request headers.
func (n *node) getSSE(topic, key, query string, header http.Header) (*sseClient, *http.Response) {
	n.t.Helper()
	return n.getSSEWith(n.srv.Client(), topic, key, query, header)
}

func (n *node) getSSEWith(hc *http.Client, topic, key, query string, header http.Header) (*sseClient, *http.Response) {
	n.t.Helper()
	ctx, cancel := context.WithCancel(n.t.Context())
	u := n.url + "/v1/topics/" + url.PathEscape(topic) + "/stream"
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		n.t.Fatalf("GET %s: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		return nil, resp
	}
	c := &sseClient{t: n.t, resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel}
	n.t.Cleanup(c.close)
	return c, resp
}

func (n *node) openSSE(topic, key, query string, header http.Header) *sseClient {
	n.t.Helper()
	c, resp := n.getSSE(topic, key, query, header)
	if c == nil {
		body := make([]byte, 2048)
		k, _ := resp.Body.Read(body)
		n.t.Fatalf("SSE %s: status %d: %s", topic, resp.StatusCode, body[:k])
	}
	return c
}

func (c *sseClient) close() {
	c.cancel()
	_ = c.resp.Body.Close()
}

// next reads the next event (nil at the end of the stream), with a
// deadline.
func (c *sseClient) next() *sseEvent {
	c.t.Helper()
	type res struct {
		ev  *sseEvent
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ev, err := c.parse()
		ch <- res{ev, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			c.t.Fatalf("read SSE: %v", r.err)
		}
		return r.ev
	case <-time.After(20 * time.Second):
		c.close()
		<-ch
		c.t.Fatal("timed out reading an SSE event")
		return nil
	}
}

// parse reads one event as EventSource would; comments are counted.
func (c *sseClient) parse() (*sseEvent, error) {
	ev := &sseEvent{}
	var data []string
	hasData := false
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if hasData || ev.Event != "" {
				return nil, fmt.Errorf("stream ended inside an event: %w", err)
			}
			return nil, nil // end of stream
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.ID != "" {
				c.lastID = ev.ID // as EventSource: even without data
			}
			if !hasData {
				if ev.ID != "" && c.stopOnID {
					return ev, nil
				}
				ev = &sseEvent{Comments: ev.Comments} // EventSource dispatches nothing
				continue
			}
			ev.Data = strings.Join(data, "\n")
			return ev, nil
		case strings.HasPrefix(line, ":"):
			ev.Comments++
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.ID = value
			case "event":
				ev.Event = value
			case "data":
				data = append(data, value)
				hasData = true
			case "retry":
				c.retry = value
			}
		}
	}
}

// nextData reads the next event that is not a control event.
func (c *sseClient) events(n int) []*sseEvent {
	c.t.Helper()
	var out []*sseEvent
	for len(out) < n {
		ev := c.next()
		if ev == nil {
			c.t.Fatalf("stream ended after %d events, want %d", len(out), n)
		}
		if strings.HasPrefix(ev.Event, "herald.") {
			c.t.Fatalf("got control event %+v, want a data event", ev)
		}
		out = append(out, ev)
	}
	return out
}

// smallWindowClient is an HTTP client whose connections have a small,
// fixed receive buffer, so a client that stops reading fills the
// server's socket quickly (autotuning would let it take megabytes).
func smallWindowClient(t *testing.T) *http.Client {
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10)
		}); err != nil {
			return err
		}
		return serr
	}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
