package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/stream"
)

// streamKeys authenticates "Bearer <name>" with the listed scopes, as the
// API does with keys.
type streamKeys map[string]herald.Scopes

func (k streamKeys) Authenticate(r *http.Request) (herald.Scopes, string, error) {
	name, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if s, ok := k[name]; ok {
		return s, name, nil
	}
	return nil, "", herald.Errorf(herald.CodeUnauthorized, "the API key is not valid")
}

// streamServer is a Herald stream server over a SQLite file: the real
// committer and hub, served on 127.0.0.1, restartable on the same
// address.
type streamServer struct {
	t         *testing.T
	path      string
	addr      string
	cfg       stream.Config
	store     *sqlite.Store
	committer *engine.Committer
	hub       *stream.Hub
	srv       *httptest.Server
	once      *sync.Once
}

func startStreamServer(t *testing.T, path, addr string, cfg stream.Config) *streamServer {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if path == "" {
		path = filepath.Join(t.TempDir(), "herald.db")
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	st, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys := streamKeys{"key": herald.Scopes{{Action: herald.ActionRead, Pattern: "orders.>"}}}
	tail := engine.NewTail(engine.TailConfig{})
	com := engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	hub := stream.NewHub(cfg, stream.Deps{Store: st, Tail: tail})
	com.OnCommit(tail.Add)
	com.OnCommit(hub.OnCommit)
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := com.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stream", func(w http.ResponseWriter, r *http.Request) {
		// The API's part: establish who calls, answer refusals.
		scopes, subject, err := keys.Authenticate(r)
		if err == nil {
			err = hub.ServeWebSocket(w, r, herald.Principal{Subject: subject, Scopes: scopes})
		}
		if err != nil {
			code := herald.CodeInternal
			if he, ok := errors.AsType[*herald.Error](err); ok {
				code = he.Code
			}
			http.Error(w, err.Error(), herald.ProblemFor(code).Status)
		}
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	s := &streamServer{t: t, path: path, addr: ln.Addr().String(), cfg: cfg, store: st, committer: com, hub: hub,
		srv: srv, once: &sync.Once{}}
	t.Cleanup(s.stop)
	return s
}

func (s *streamServer) stop() {
	s.once.Do(func() {
		ctx := context.Background()
		_ = s.hub.Stop(ctx)
		s.srv.Close()
		_ = s.committer.Stop(ctx)
		_ = s.store.Close()
	})
}

func (s *streamServer) restart() *streamServer {
	s.stop()
	return startStreamServer(s.t, s.path, s.addr, s.cfg)
}

func (s *streamServer) client() *client.Client { return client.New(s.srv.URL, client.WithKey("key")) }

func (s *streamServer) topic(name string, retention time.Duration) {
	s.t.Helper()
	if _, _, err := s.store.PutTopic(s.t.Context(), herald.Topic{Name: name, Retention: retention}.WithDefaults()); err != nil {
		s.t.Fatal(err)
	}
}

func (s *streamServer) publish(topic, typ string, payloads ...string) {
	s.t.Helper()
	evs := make([]*herald.Event, len(payloads))
	for i, p := range payloads {
		evs[i] = &herald.Event{ID: herald.NewID(time.Now()), Topic: topic, Type: typ, ContentType: "application/json",
			Payload: []byte(p), Time: time.Now().UTC()}
	}
	if _, err := s.committer.Append(s.t.Context(), evs); err != nil {
		s.t.Fatal(err)
	}
}

func nextN(t *testing.T, st *client.Stream, n int) []client.Event {
	t.Helper()
	out, err := collect(t.Context(), st, n)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// collect reads n events, or fails after a deadline.
func collect(ctx context.Context, st *client.Stream, n int) ([]client.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out := make([]client.Event, 0, n)
	for len(out) < n {
		e, err := st.Next(ctx)
		if err != nil {
			return out, fmt.Errorf("Next after %d events: %w", len(out), err)
		}
		out = append(out, e)
	}
	return out, nil
}

func seqs(evs []client.Event) string {
	var b []string
	for _, e := range evs {
		b = append(b, fmt.Sprintf("%s#%d", e.Topic, e.Seq))
	}
	return strings.Join(b, " ")
}

// A stream resumes by itself across a server restart: every event once.
func TestStreamResumesAcrossRestart(t *testing.T) {
	s := startStreamServer(t, "", "", stream.Config{})
	s.topic("orders.eu", 0)
	s.topic("orders.us", 0)
	s.publish("orders.eu", "t", `{"n":1}`, `{"n":2}`)

	one, err := s.client().Stream(t.Context(), "orders.eu", 0, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	pattern, err := s.client().Stream(t.Context(), "orders.*", client.FromNow, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pattern.Close()
	if got := seqs(nextN(t, one, 2)); got != "orders.eu#1 orders.eu#2" {
		t.Fatalf("replay: %s", got)
	}
	s.publish("orders.us", "t", `{"n":1}`)
	s.publish("orders.eu", "t", `{"n":3}`)
	if got := seqs(nextN(t, one, 1)); got != "orders.eu#3" {
		t.Fatalf("live: %s", got)
	}
	if got := seqs(nextN(t, pattern, 2)); got != "orders.us#1 orders.eu#3" {
		t.Fatalf("pattern: %s", got)
	}

	// The streams wait in Next, as a consumer does, while the server
	// restarts and events are published.
	var wg sync.WaitGroup
	var oneGot, patternGot []client.Event
	var oneErr, patternErr error
	wg.Go(func() { oneGot, oneErr = collect(t.Context(), one, 2) })
	wg.Go(func() { patternGot, patternErr = collect(t.Context(), pattern, 3) })
	s = s.restart()
	s.publish("orders.eu", "t", `{"n":4}`, `{"n":5}`)
	s.publish("orders.us", "t", `{"n":2}`)
	wg.Wait()
	if oneErr != nil || patternErr != nil {
		t.Fatalf("across the restart: %v; %v", oneErr, patternErr)
	}
	if got := seqs(oneGot); got != "orders.eu#4 orders.eu#5" {
		t.Errorf("after the restart: %s", got)
	}
	if got := seqs(patternGot); got != "orders.eu#4 orders.eu#5 orders.us#2" {
		t.Errorf("pattern after the restart: %s", got)
	}
	if p := pattern.Positions(); p["orders.eu"] != 5 || p["orders.us"] != 2 {
		t.Errorf("positions %v", p)
	}
}

// A reader that falls behind is cut off by the server and resumes by
// itself, still getting every event once.
func TestStreamResumesAfterSlowConsumerCut(t *testing.T) {
	s := startStreamServer(t, "", "", stream.Config{QueueSize: 4})
	s.topic("orders.eu", 0)
	st, err := s.client().Stream(t.Context(), "orders.eu", client.FromNow, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// One commit of 50 events overflows the queue of 4 at once.
	payloads := make([]string, 50)
	for i := range payloads {
		payloads[i] = fmt.Sprintf(`{"n":%d}`, i+1)
	}
	s.publish("orders.eu", "t", payloads...)
	evs := nextN(t, st, 50)
	for i, e := range evs {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: %s", i, e.Seq, seqs(evs))
		}
	}
}

// A filter applies; a gap is reported; refusals come from Stream itself.
func TestStreamFiltersGapsAndRefusals(t *testing.T) {
	s := startStreamServer(t, "", "", stream.Config{})
	s.topic("orders.eu", time.Minute)
	old := time.Now().Add(-time.Hour).UTC()
	if _, err := s.committer.Append(t.Context(), []*herald.Event{{ID: herald.NewID(old), Topic: "orders.eu",
		ContentType: "application/json", Payload: []byte(`{}`), Time: old}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Prune(t.Context(), time.Now(), 100); err != nil {
		t.Fatal(err)
	}
	s.publish("orders.eu", "order.created", `{"n":2}`)
	s.publish("orders.eu", "order.deleted", `{"n":3}`)
	s.publish("orders.eu", "order.created", `{"n":4}`)
	var gaps []client.Gap
	st, err := s.client().Stream(t.Context(), "orders.eu", 0, client.StreamOptions{
		Filter: []byte(`{"types":["order.created"]}`),
		OnGap:  func(g client.Gap) { gaps = append(gaps, g) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := seqs(nextN(t, st, 2)); got != "orders.eu#2 orders.eu#4" {
		t.Errorf("filtered: %s", got)
	}
	if len(gaps) != 1 || gaps[0] != (client.Gap{Topic: "orders.eu", MissedFrom: 1, MissedTo: 1, FirstSeq: 2}) {
		t.Errorf("gaps %+v", gaps)
	}

	for _, tc := range []struct {
		key, topic string
		code       herald.Code
	}{
		{"key", "payments.eu", herald.CodeForbidden},
		{"key", "orders.nope", herald.CodeNotFound},
		{"nobody", "orders.eu", herald.CodeUnauthorized},
	} {
		c := client.New(s.srv.URL, client.WithKey(tc.key))
		_, err := c.Stream(t.Context(), tc.topic, 0, client.StreamOptions{})
		if _, ok := err.(*client.Problem); !ok || !herald.IsCode(err, tc.code) {
			t.Errorf("%s on %s: %v, want a %s problem", tc.key, tc.topic, err, tc.code)
		}
	}
	if _, err := s.client().Stream(t.Context(), "orders.eu", 0, client.StreamOptions{Filter: []byte(`{"types":[]}`)}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("bad filter: %v", err)
	}
	down := client.New("http://"+closedStreamAddr(t), client.WithKey("key"))
	if _, err := down.Stream(t.Context(), "orders.eu", 0, client.StreamOptions{}); err == nil {
		t.Error("no server: no error")
	} else if _, ok := err.(*client.ConnError); !ok {
		t.Errorf("no server: %T %v, want a *ConnError", err, err)
	}
}

func closedStreamAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
