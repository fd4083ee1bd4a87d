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
	streams map[net.Conn]struct{} // the front door's client connections that carried a stream

	hold    atomic.Bool  // refuse new streams (502) until /_test/release
	tokens  atomic.Int64 // connection tokens handed out by /_test/token
	reports *jsReports
}

type connKey struct{}

func startJSHarness(t *testing.T) *jsHarness {
	t.Helper()
	h := &jsHarness{t: t, dir: t.TempDir(), streams: map[net.Conn]struct{}{}, reports: &jsReports{}}
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
		if r.URL.Path == "/v1/stream" || strings.HasSuffix(r.URL.Path, "/stream") {
			if h.hold.Load() {
				w.WriteHeader(http.StatusBadGateway) // as a proxy does while its backend is away
				return
			}
			// The connection is a stream's while the request lasts; after
			// it, a client may reuse it for anything.
			c := r.Context().Value(connKey{}).(net.Conn)
			h.connsMu.Lock()
			h.streams[c] = struct{}{}
			h.connsMu.Unlock()
			defer func() {
				h.connsMu.Lock()
				delete(h.streams, c)
				h.connsMu.Unlock()
			}()
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
	}
	go func() { _ = h.front.Serve(ln) }()
	t.Cleanup(func() {
		_ = h.front.Close()
		h.dropStreams()
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

// dropStreams closes every client connection that carried a stream. Other
// connections, idle in clients' pools, are left alone: a publish reusing
// one must not fail.
func (h *jsHarness) dropStreams() int {
	h.connsMu.Lock()
	defer h.connsMu.Unlock()
	n := len(h.streams)
	for c := range h.streams {
		_ = c.Close()
	}
	clear(h.streams)
	return n
}

// serveDrop cuts the connection of every stream, with no goodbye: what a
// failed network does. With ?hold=1, new streams are refused until
// /_test/release, so that a test can publish while its client is
// certainly away. It answers the number of connections cut.
func (h *jsHarness) serveDrop(w http.ResponseWriter, r *http.Request) {
	h.hold.Store(r.URL.Query().Get("hold") == "1")
	fmt.Fprintf(w, "%d\n", h.dropStreams())
}

// serveRestart restarts Herald (see restart). ?hold=1 refuses new
// streams until /_test/release, as serveDrop does.
func (h *jsHarness) serveRestart(w http.ResponseWriter, r *http.Request) {
	if err := h.restart(r.URL.Query().Get("hold") == "1"); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// restart stops Herald gracefully (streams are told to reconnect) and
// starts it again on the same data, returning once it serves. With hold,
// new streams are refused until the hold is released.
func (h *jsHarness) restart(hold bool) error {
	h.hold.Store(hold)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.m.Close(context.Background()); err != nil {
		return err
	}
	m, err := h.startMain()
	if err != nil {
		return err
	}
	h.m = m
	return nil
}

// serveToken plays an application's backend: it asks Herald for a
// connection token (read on everything under "browser.", ttl from the
// query) and hands it out as text.
func (h *jsHarness) serveToken(w http.ResponseWriter, r *http.Request) {
	ttl := r.URL.Query().Get("ttl")
	if ttl == "" {
		ttl = "1h"
	}
	grant := map[string]any{"scopes": []string{"read:browser.>"}, "ttl": ttl}
	if user := r.URL.Query().Get("user"); user != "" { // an end user's page
		grant = map[string]any{"user": user, "scopes": []string{"read:accounts.{user}.>"}, "ttl": ttl}
	}
	body, _ := json.Marshal(grant)
	h.mu.Lock() // not while Herald restarts: a backend answers once it can
	backend := h.backend.Load().String()
	h.mu.Unlock()
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, backend+"/v1/tokens", bytes.NewReader(body))
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

// startChromium opens page in headless Chromium until the test ends.
func startChromium(t *testing.T, bin, page string) {
	t.Helper()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--user-data-dir="+filepath.Join(t.TempDir(), "profile"), page)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers share its group
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the browser and its helper processes
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("chromium stderr:\n%s", stderr.String())
		}
	})
}

// TestJSClientBrowser loads the client as an ES module in headless
// Chromium (test/browser/page.html), where it streams over the browser's
// own WebSocket and fetch with connection tokens from a callback, through
// a restart of Herald, and sees every event once.
func TestJSClientBrowser(t *testing.T) {
	t.Parallel()
	bin := os.Getenv("HERALD_TEST_CHROMIUM")
	if bin == "" {
		t.Skip("the browser test of the JavaScript client needs Chromium: set HERALD_TEST_CHROMIUM (.ci/run sets it to Debian's chromium)")
	}
	h := startJSHarness(t)
	ctx := t.Context()
	c := client.New(h.url, client.WithKey(testAdminKey))
	for _, topic := range []string{"browser.ws", "browser.sse"} {
		if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			for _, topic := range []string{"browser.ws", "browser.sse"} {
				if _, err := c.Publish(ctx, topic, fmt.Appendf(nil, `{"n":%d}`, i),
					client.PublishOptions{ContentType: "application/json"}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	count := func(kind string) int {
		n := 0
		for _, r := range h.reports.snapshot() {
			if r["kind"] == "error" {
				t.Fatalf("the page reported an error: %v", r["msg"])
			}
			if r["kind"] == kind {
				n++
			}
		}
		return n
	}

	// Some history first: the page starts from since 0.
	publish(1, 5)
	startChromium(t, bin, h.url+"/_test/js/test/browser/page.html")
	waitCond(t, "the page to open its streams and be refused the secret topic", 90*time.Second, func() bool {
		return count("ws-open") >= 1 && count("sse-open") >= 1 && count("refused") == 1
	})
	publish(6, 20)
	waitCond(t, "the first events in the page", 30*time.Second, func() bool { return count("ws") >= 20 && count("sse") >= 20 })

	// Restart Herald and keep the page's streams out while more is
	// published: those events can reach it only through its resume.
	if err := h.restart(true); err != nil {
		t.Fatal(err)
	}
	publish(21, 40)
	if n := count("ws") + count("sse"); n != 40 {
		t.Fatalf("the page got %d events while it was kept away, want the 40 it had", n)
	}
	h.hold.Store(false)
	publish(41, 41)
	waitCond(t, "every event in the page", 30*time.Second, func() bool { return count("ws") >= 41 && count("sse") >= 41 })

	var ws, sse []string
	var wsRestart, sseRestart bool
	for _, r := range h.reports.snapshot() {
		switch r["kind"] {
		case "ws", "sse":
			if r["seq"] != r["n"] {
				t.Errorf("%s event %v carries n %v", r["kind"], r["seq"], r["n"])
			}
			if r["kind"] == "ws" {
				ws = append(ws, fmt.Sprint(r["seq"]))
			} else {
				sse = append(sse, fmt.Sprint(r["seq"]))
			}
		case "ws-close":
			wsRestart = wsRestart || r["code"] == float64(1012)
		case "sse-close":
			sseRestart = sseRestart || r["code"] == "shutdown"
		case "refused":
			if r["typed"] != true || r["name"] != "HeraldError" || r["status"] != float64(403) || r["code"] != "forbidden" || r["field"] != "topic" {
				t.Errorf("the refused subscription reported %v, want a HeraldError 403 forbidden on field topic", r)
			}
		}
	}
	want := make([]string, 41)
	for i := range want {
		want[i] = fmt.Sprint(i + 1)
	}
	if strings.Join(ws, ",") != strings.Join(want, ",") {
		t.Errorf("WebSocket seqs %v, want each of 1..41 once", ws)
	}
	if strings.Join(sse, ",") != strings.Join(want, ",") {
		t.Errorf("SSE seqs %v, want each of 1..41 once", sse)
	}
	if !wsRestart || !sseRestart {
		t.Errorf("the page was not told of the restart: WebSocket 1012 %v, SSE shutdown %v", wsRestart, sseRestart)
	}
	// A token per connection: the first two, and two more after the restart.
	if n := h.tokens.Load(); n < 4 {
		t.Errorf("the token callback fetched %d tokens, want at least 4", n)
	}
}

// TestJSClientBrowserUser: an end user's page in headless Chromium, with a
// token of that user from the application's backend, receives the events
// of the topics the backend subscribed the user to on the server, without
// subscribing itself, over a WebSocket and over an SSE user stream; never
// another user's; and after a restart of Herald, kept away while more is
// published, resumes them from its positions and sees every event once
// on each.
func TestJSClientBrowserUser(t *testing.T) {
	t.Parallel()
	bin := os.Getenv("HERALD_TEST_CHROMIUM")
	if bin == "" {
		t.Skip("the browser test of the JavaScript client needs Chromium: set HERALD_TEST_CHROMIUM (.ci/run sets it to Debian's chromium)")
	}
	h := startJSHarness(t)
	ctx := t.Context()
	c := client.New(h.url, client.WithKey(testAdminKey))
	for _, topic := range []string{"accounts.u42.balance", "accounts.u7.balance"} {
		if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, us := range []string{"u42/subscriptions/accounts.u42.balance", "u7/subscriptions/accounts.u7.balance"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, h.url+"/v1/users/"+us, nil)
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT /v1/users/%s = %d", us, resp.StatusCode)
		}
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			for _, topic := range []string{"accounts.u42.balance", "accounts.u7.balance"} {
				if _, err := c.Publish(ctx, topic, fmt.Appendf(nil, `{"n":%d}`, i),
					client.PublishOptions{ContentType: "application/json"}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	count := func(kind string) int {
		n := 0
		for _, r := range h.reports.snapshot() {
			if r["kind"] == "error" {
				t.Fatalf("the page reported an error: %v", r["msg"])
			}
			if r["kind"] == kind {
				n++
			}
		}
		return n
	}
	startChromium(t, bin, h.url+"/_test/js/test/browser/user.html")
	waitCond(t, "the page's socket and SSE stream to open", 90*time.Second, func() bool {
		return count("user-open") >= 1 && count("user-sse-open") >= 1
	})
	// The server-side subscriptions start live: publish until the page
	// has the first event on both, then the rest.
	waitCond(t, "the user's first event in the page", 30*time.Second, func() bool {
		publish(0, 0)
		return count("user") >= 1 && count("user-sse") >= 1
	})
	from := map[string]float64{}
	for _, r := range h.reports.snapshot() {
		if k := r["kind"].(string); (k == "user" || k == "user-sse") && from[k] == 0 {
			from[k] = r["seq"].(float64)
		}
	}
	publish(1, 10)
	if err := h.restart(true); err != nil {
		t.Fatal(err)
	}
	publish(11, 20) // only the resume from the page's positions brings these
	h.hold.Store(false)
	publish(21, 21)
	head, err := c.GetTopic(ctx, "accounts.u42.balance")
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[string][]int{}
	waitCond(t, "every event of the user in the page, on the socket and the SSE stream", 60*time.Second, func() bool {
		clear(seqs)
		for _, r := range h.reports.snapshot() {
			if r["kind"] == "error" {
				t.Fatalf("the page reported an error: %v", r["msg"])
			}
			if k := r["kind"].(string); k == "user" || k == "user-sse" {
				if r["topic"] != "accounts.u42.balance" || r["sub"] != "user:accounts.u42.balance" {
					t.Fatalf("the page got %v: another user's event, or not as the server-side subscription", r)
				}
				seqs[k] = append(seqs[k], int(r["seq"].(float64)))
			}
		}
		for _, k := range []string{"user", "user-sse"} {
			if s := seqs[k]; len(s) == 0 || s[len(s)-1] != int(head.HeadSeq) {
				return false
			}
		}
		return true
	})
	for k, got := range seqs {
		for i, s := range got {
			if s != int(from[k])+i {
				t.Fatalf("%s: the page got seqs %v, want each from %v on once, in order", k, got, from[k])
			}
		}
	}
	if count("user-sse-close") == 0 {
		t.Errorf("the page's SSE stream was not told of the restart")
	}
	if count("user-close") == 0 {
		t.Errorf("the page was not told of the restart")
	}
}
