package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/stream"
)

// env is a whole API over a real SQLite store and the real committer.
type env struct {
	t        *testing.T
	api      *Server
	srv      *httptest.Server
	store    *sqlite.Store
	reg      *prometheus.Registry
	admin    string // bootstrap admin secret
	logs     *lockedBuffer
	defaultK string       // key sent when a request names none
	feed     *engine.Feed // what the API reports; tests listen to it
	tokens   *stream.Tokens
}

// testTokenSecret signs the connection tokens of test servers.
var testTokenSecret = []byte("api-test-secret-api-test-secret!")

// startHub serves the environment's streams with a real hub that hears
// the API's notices, until the test ends.
func (e *env) startHub(cfg stream.Config) *stream.Hub {
	e.t.Helper()
	hub := stream.NewHub(cfg, stream.Deps{Store: e.store, Keys: e.api})
	if err := hub.Start(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hub.Stop(ctx); err != nil {
			e.t.Errorf("stop hub: %v", err)
		}
	})
	e.api.SetStreams(hub)
	e.feed.Listen(engine.StageConsumer, hub.Listener())
	return hub
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	return newEnvAuto(t, cfg, false)
}

// newEnvAuto is newEnv with a publisher that creates unknown topics when
// autoCreate is set.
func newEnvAuto(t *testing.T, cfg Config, autoCreate bool) *env {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })

	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	committer := engine.NewCommitter(st, engine.CommitterConfig{}, logger, reg)
	if err := committer.Start(context.Background()); err != nil {
		t.Fatalf("start committer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := committer.Stop(ctx); err != nil {
			t.Errorf("stop committer: %v", err)
		}
	})

	admin, hash := herald.NewKeySecret()
	if cfg.AdminKeyHash == nil {
		cfg.AdminKeyHash = hash
	}
	feed := engine.NewFeed()
	topics := engine.NewTopics(st, engine.TopicsConfig{})
	tokens, err := stream.NewTokens(stream.TokensConfig{Secret: testTokenSecret})
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, Deps{
		Store:     st,
		Topics:    topics,
		Publisher: engine.NewPublisher(topics, committer, engine.PublisherConfig{AutoCreateTopics: autoCreate}, logger, reg),
		Notices:   feed,
		Tokens:    tokens,
		Logger:    logger,
		Registry:  reg,
	})
	s.SetReady(true)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &env{t: t, api: s, srv: srv, store: st, reg: reg, admin: admin, logs: logs, defaultK: admin, feed: feed, tokens: tokens}
}

// with returns a copy of e that reports to t (a subtest).
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// resp is a finished response with its body read.
type resp struct {
	status int
	header http.Header
	body   []byte
}

// req describes one request; zero fields mean: no body, the default key.
type req struct {
	method string
	path   string
	body   []byte
	header map[string]string
	key    string // "-" sends no Authorization header
	// chunked hides the length so the server must count the bytes itself.
	chunked bool
}

func (e *env) do(r req) resp {
	e.t.Helper()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
		if r.chunked {
			body = io.MultiReader(body) // not a *bytes.Reader: no Content-Length
		}
	}
	hr, err := http.NewRequestWithContext(e.t.Context(), r.method, e.srv.URL+r.path, body)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	switch r.key {
	case "":
		hr.Header.Set("Authorization", "Bearer "+e.defaultK)
	case "-":
	default:
		hr.Header.Set("Authorization", "Bearer "+r.key)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", r.method, r.path, err)
	}
	if res.Header.Get("X-Request-Id") == "" {
		e.t.Errorf("%s %s: no X-Request-Id in the response", r.method, r.path)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// must sends r and fails the test unless the status is want; it decodes
// the JSON body into out when out is not nil.
func (e *env) must(want int, r req, out any) resp {
	e.t.Helper()
	res := e.do(r)
	if res.status != want {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", r.method, r.path, res.status, want, res.body)
	}
	if out != nil {
		if err := json.Unmarshal(res.body, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", r.method, r.path, res.body, err)
		}
	}
	return res
}

// anyField accepts whatever field a problem names: not-found errors come
// from the store, which may name the missing thing.
const anyField = "*"

// problem sends r and checks that it fails with a problem of the code and
// field; it returns the problem.
func (e *env) problem(code herald.Code, field string, r req) problem {
	e.t.Helper()
	res := e.do(r)
	p := decodeProblem(e.t, res)
	want := codeProblem(code)
	if res.status != want.Status || p.Status != want.Status || p.Type != herald.ProblemTypeBase+string(code) || p.Title != want.Title {
		e.t.Fatalf("%s %s: got %d %+v, want %d type %s", r.method, r.path, res.status, p, want.Status, code)
	}
	if field != anyField && p.Field != field {
		e.t.Fatalf("%s %s: problem field %q, want %q (%s)", r.method, r.path, p.Field, field, p.Detail)
	}
	return p
}

func decodeProblem(t *testing.T, res resp) problem {
	t.Helper()
	if ct := res.header.Get("Content-Type"); ct != problemContentType {
		t.Fatalf("status %d: Content-Type %q, want %q; body %s", res.status, ct, problemContentType, res.body)
	}
	var p problem
	if err := json.Unmarshal(res.body, &p); err != nil {
		t.Fatalf("decode problem %s: %v", res.body, err)
	}
	if p.RequestID == "" || p.RequestID != res.header.Get("X-Request-Id") {
		t.Fatalf("problem request_id %q, header %q", p.RequestID, res.header.Get("X-Request-Id"))
	}
	if p.Detail == "" {
		t.Fatalf("problem without detail: %s", res.body)
	}
	return p
}

// putTopic creates a topic with the settings body (nil for defaults).
func (e *env) putTopic(name string, body string) topicJSON {
	e.t.Helper()
	var tj topicJSON
	r := req{method: "PUT", path: "/v1/topics/" + name, key: e.admin}
	if body != "" {
		r.body = []byte(body)
	}
	e.must(http.StatusCreated, r, &tj)
	return tj
}

// createKey makes a key with the scopes through the API and returns its secret.
func (e *env) createKey(scopes ...string) (id, secret string) {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"name": "test", "scopes": scopes})
	var k keyJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/keys", body: body, key: e.admin}, &k)
	return k.ID, k.Secret
}

// events reads the topic's whole log through the API.
func (e *env) events(topic string) []eventJSON {
	e.t.Helper()
	var out eventListJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/" + topic + "/events?limit=1000", key: e.admin}, &out)
	return out.Events
}

// lockedBuffer is a log sink safe for the server's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// has reports whether any log line contains every part.
func (b *lockedBuffer) has(parts ...string) bool { return b.count(parts...) > 0 }

// count returns the number of log lines that contain every part.
func (b *lockedBuffer) count(parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(b.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			n++
		}
	}
	return n
}
