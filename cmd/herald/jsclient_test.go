package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// The JavaScript client (clients/js) is tested against a real Herald: Go
// starts the server and a front door to it, and Node's test runner, or a
// headless Chromium, runs the client's tests through that front door.

// jsDir is the client's directory, from this package's.
const jsDir = "../../clients/js"

// jsTokenSecret signs connection tokens, so that they outlive a restart.
const jsTokenSecret = "js-client-test-token-secret-0123456789"

// jsHarness is a Herald behind a reverse proxy (the front door) that can
// cut every client connection at once (as a network failure does) and
// restart Herald on the same data (as an upgrade does), while clients keep
// one address. Under /_test/ the front door serves the control calls, the
// client's files and what a browser test needs.
type jsHarness struct {
	t     *testing.T
	dir   string
	front *http.Server
	url   string // the front door's

	mu      sync.Mutex // serializes restarts and guards m
	m       *Main
	backend atomic.Pointer[url.URL]

	connsMu sync.Mutex
	conns   map[net.Conn]struct{} // the front door's client connections, hijacked ones too

	hold    atomic.Bool  // refuse new streams (502) until /_test/release
	tokens  atomic.Int64 // connection tokens handed out by /_test/token
	reports *jsReports
}

type connKey struct{}

func startJSHarness(t *testing.T) *jsHarness {
	t.Helper()
	h := &jsHarness{t: t, dir: t.TempDir(), conns: map[net.Conn]struct{}{}, reports: &jsReports{}}
	m, err := h.startMain()
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if err := h.m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(h.backend.Load())
			r.Out.Host = r.In.Host // Herald checks browser origins against its Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway) // Herald is restarting, or a connection was cut
		},
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.hold.Load() && (r.URL.Path == "/v1/stream" || strings.HasSuffix(r.URL.Path, "/stream")) {
			w.WriteHeader(http.StatusBadGateway) // as a proxy does while its backend is away
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	mux.HandleFunc("POST /_test/release", func(w http.ResponseWriter, r *http.Request) {
		h.hold.Store(false)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_test/restart", h.serveRestart)
	mux.HandleFunc("POST /_test/drop", h.serveDrop)
	mux.HandleFunc("GET /_test/token", h.serveToken)
	mux.HandleFunc("POST /_test/report", h.reports.handler)
	mux.Handle("GET /_test/js/", http.StripPrefix("/_test/js/", http.FileServer(http.Dir(jsDir))))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.url = "http://" + ln.Addr().String()
	h.front = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		ConnState:         h.track,
		ErrorLog:          nil,
	}
	go func() { _ = h.front.Serve(ln) }()
	t.Cleanup(func() {
		_ = h.front.Close()
		h.dropAll(nil)
	})
	return h
}

func (h *jsHarness) startMain() (*Main, error) {
	m := NewMain(io.Discard, io.Discard, func(string) string { return "" })
	m.Config.Addr = "127.0.0.1:0"
	m.Config.DataDir = h.dir
	m.Config.AdminKey = testAdminKey
	m.Config.StreamTokenSecret = jsTokenSecret
	m.Config.ShutdownTimeout = 10 * time.Second
	if err := m.Run(context.Background()); err != nil {
		return nil, fmt.Errorf("start Herald: %w", err)
	}
	u, _ := url.Parse(m.URL())
	h.backend.Store(u)
	return m, nil
}

func (h *jsHarness) track(c net.Conn, state http.ConnState) {
	h.connsMu.Lock()
	defer h.connsMu.Unlock()
	switch state {
	case http.StateNew:
		h.conns[c] = struct{}{}
	case http.StateClosed:
		delete(h.conns, c)
	}
}

// dropAll closes every client connection of the front door but keep.
func (h *jsHarness) dropAll(keep net.Conn) int {
	h.connsMu.Lock()
	defer h.connsMu.Unlock()
	n := 0
	for c := range h.conns {
		if c != keep {
			_ = c.Close()
			delete(h.conns, c)
			n++
		}
	}
	return n
}

// serveDrop cuts the connections of every client but the caller, with no
// goodbye: what a failed network does. With ?hold=1, new streams are
// refused until /_test/release, so that a test can publish while its
// client is certainly away.
func (h *jsHarness) serveDrop(w http.ResponseWriter, r *http.Request) {
	h.hold.Store(r.URL.Query().Get("hold") == "1")
	self, _ := r.Context().Value(connKey{}).(net.Conn)
	fmt.Fprintf(w, "%d\n", h.dropAll(self))
}

// serveRestart stops Herald gracefully (streams are told to reconnect) and
// starts it again on the same data, answering once it serves. ?hold=1
// refuses new streams until /_test/release, as serveDrop does.
func (h *jsHarness) serveRestart(w http.ResponseWriter, r *http.Request) {
	h.hold.Store(r.URL.Query().Get("hold") == "1")
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.m.Close(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	m, err := h.startMain()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h.m = m
	w.WriteHeader(http.StatusNoContent)
}

// serveToken plays an application's backend: it asks Herald for a
// connection token (read on everything under "browser.", ttl from the
// query) and hands it out as text.
func (h *jsHarness) serveToken(w http.ResponseWriter, r *http.Request) {
	ttl := r.URL.Query().Get("ttl")
	if ttl == "" {
		ttl = "1h"
	}
	body, _ := json.Marshal(map[string]any{"scopes": []string{"read:browser.>"}, "ttl": ttl})
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, h.backend.Load().String()+"/v1/tokens", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" {
		http.Error(w, fmt.Sprintf("POST /v1/tokens answered %d", resp.StatusCode), http.StatusBadGateway)
		return
	}
	h.tokens.Add(1)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, out.Token)
}

// jsReports collects what a browser page reports, in the order it sent it.
type jsReports struct {
	mu  sync.Mutex
	all []map[string]any
}

func (rs *jsReports) handler(w http.ResponseWriter, r *http.Request) {
	var batch []map[string]any
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&batch); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rs.mu.Lock()
	rs.all = append(rs.all, batch...)
	rs.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rs *jsReports) snapshot() []map[string]any {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]map[string]any(nil), rs.all...)
}

// nodeCommand finds Node.js 20 or later and the flags that give it a
// WebSocket (Node 20 has one only behind a flag; 22 has it always), or
// skips the test naming what is missing.
func nodeCommand(t *testing.T) (string, []string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("the JavaScript client tests need node (Node.js 20 or later) on PATH")
	}
	for _, flags := range [][]string{nil, {"--experimental-websocket"}} {
		args := append(append([]string{}, flags...), "-e",
			"process.exit(Number(process.versions.node.split('.')[0]) >= 20 && typeof WebSocket === 'function' ? 0 : 1)")
		if exec.Command(node, args...).Run() == nil {
			return node, flags
		}
	}
	t.Skip("the JavaScript client tests need node 20 or later, with a WebSocket (node 22, or 20 with --experimental-websocket)")
	return "", nil
}

// TestJSClient runs each of the client's Node test files against a Herald
// of its own: REST calls, WebSocket and SSE streams through drops,
// restarts and token expiry, and the parts that need no server.
func TestJSClient(t *testing.T) {
	t.Parallel()
	node, flags := nodeCommand(t)
	files, err := filepath.Glob(filepath.Join(jsDir, "test", "*.test.js"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files in %s/test: %v", jsDir, err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".test.js"), func(t *testing.T) {
			t.Parallel()
			h := startJSHarness(t)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			args := append(append([]string{}, flags...), "--test", filepath.Join("test", filepath.Base(file)))
			cmd := exec.CommandContext(ctx, node, args...)
			cmd.Dir = jsDir
			cmd.Env = append(os.Environ(), "HERALD_URL="+h.url, "HERALD_KEY="+testAdminKey,
				"HERALD_CONTROL="+h.url+"/_test", "NODE_OPTIONS=")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if bytes.Contains(out, []byte("# pass 0\n")) || !bytes.Contains(out, []byte("# fail 0\n")) {
				t.Fatalf("node %s ran no test or reported a failure:\n%s", strings.Join(args, " "), out)
			}
			t.Logf("%s", lastLines(out, 9))
		})
	}
}

// lastLines returns the last n lines of out: the runner's summary.
func lastLines(out []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	return bytes.Join(lines[max(0, len(lines)-n):], []byte("\n"))
}

// TestJSClientTypes checks index.d.ts, and a program written against it,
// with the TypeScript compiler, installed from npm into a cache directory
// the first time (a few seconds; later runs reuse it).
func TestJSClientTypes(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("type-checking the JavaScript client needs node and npm on PATH")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("type-checking the JavaScript client needs npm on PATH")
	}
	const version = "5.9.3"
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "herald-test", "typescript-"+version)
	tsc := filepath.Join(dir, "node_modules", "typescript", "bin", "tsc")
	if _, err := os.Stat(tsc); err != nil {
		// Install beside the cache, then move it in whole, so that a
		// concurrent run never sees half an installation.
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(dir), "install-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "install", "--prefix", tmp, "--no-save", "--no-package-lock",
			"--no-audit", "--no-fund", "--prefer-offline", "typescript@"+version)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("cannot install TypeScript %s from npm to type-check the client (%v):\n%s", version, err, out)
		}
		if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
			if _, statErr := os.Stat(tsc); statErr != nil {
				t.Fatal(err)
			}
		}
	}
	cmd := exec.CommandContext(t.Context(), "node", tsc, "-p", filepath.Join("test", "types", "tsconfig.json"))
	cmd.Dir = jsDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tsc: %v\n%s", err, out)
	}
}

// TestJSClientBrowser loads the client as an ES module in headless
// Chromium, where it streams over the browser's own WebSocket and fetch
// with connection tokens from a callback, through a restart of Herald.
func TestJSClientBrowser(t *testing.T) {
	t.Parallel()
	bin := os.Getenv("HERALD_TEST_CHROMIUM")
	if bin == "" {
		t.Skip("the browser test of the JavaScript client needs Chromium: set HERALD_TEST_CHROMIUM (.ci/run sets it to Debian's chromium)")
	}
	h := startJSHarness(t)
	c := adminClient(h.m)
	for _, topic := range []string{"browser.ws", "browser.sse"} {
		if _, _, err := c.PutTopic(t.Context(), topic, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	_ = c
	_ = syscall.Kill
}
