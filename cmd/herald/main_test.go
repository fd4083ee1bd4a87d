package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

const testAdminKey = "hrld_test-admin-key-0123456789"

// syncBuffer is a bytes.Buffer safe for a server's log writes and a test's
// reads at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer runs a Main on a random loopback port with its data in dir.
// configure may adjust the config before Run.
func testServer(t testing.TB, dir string, configure func(*Config)) (*Main, *syncBuffer) {
	t.Helper()
	stderr := &syncBuffer{}
	m := NewMain(io.Discard, stderr, func(string) string { return "" })
	m.Config.Addr = "127.0.0.1:0"
	m.Config.DataDir = dir
	m.Config.AdminKey = testAdminKey
	m.Config.LogLevel = -8 // debug, kept in the buffer for failures
	m.Config.AllowPrivateDestinations = true
	m.Config.ShutdownTimeout = 10 * time.Second
	m.Config.ShutdownDrainDelay = 0 // a test about the delay sets one
	if configure != nil {
		configure(&m.Config)
	}
	if err := m.Run(t.Context()); err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, stderr)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", stderr)
		}
	})
	return m, stderr
}

func adminClient(m *Main) *client.Client { return client.New(m.URL(), client.WithKey(testAdminKey)) }

func TestServePublishReadAndRestart(t *testing.T) {
	dir := t.TempDir()
	m, _ := testServer(t, dir, nil)
	c := adminClient(m)
	ctx := t.Context()

	if _, created, err := c.PutTopic(ctx, "orders.created", client.TopicSettings{}); err != nil || !created {
		t.Fatalf("PutTopic = %v, %v", created, err)
	}
	payload := []byte(`{"order":"A-1","total":12.5}`)
	first, err := c.Publish(ctx, "orders.created", payload, client.PublishOptions{
		ContentType: "application/json", Type: "order.created", Key: "A-1", IdempotencyKey: "order-A-1",
		Headers: map[string]string{"X-Tenant": "acme"},
	})
	if err != nil || first.Seq != 1 || first.Duplicate {
		t.Fatalf("Publish = %+v, %v; want seq 1, not a duplicate", first, err)
	}
	bin := []byte{0, 1, 2, 0xff, 0xfe}
	second, err := c.Publish(ctx, "orders.created", bin, client.PublishOptions{ContentType: "application/octet-stream"})
	if err != nil || second.Seq != 2 {
		t.Fatalf("Publish binary = %+v, %v", second, err)
	}

	// Restart on the same data directory: events and dedup keys survive.
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m2, _ := testServer(t, dir, nil)
	c2 := adminClient(m2)
	dup, err := c2.Publish(ctx, "orders.created", payload, client.PublishOptions{ContentType: "application/json", IdempotencyKey: "order-A-1"})
	if err != nil || !dup.Duplicate || dup.ID != first.ID || dup.Seq != first.Seq {
		t.Fatalf("Publish after restart with the same idempotency key = %+v, %v; want duplicate of %+v", dup, err, first)
	}
	page, err := c2.ListEvents(ctx, "orders.created", 0, 10)
	if err != nil || len(page.Events) != 2 {
		t.Fatalf("ListEvents = %d events, %v; want 2", len(page.Events), err)
	}
	got := page.Events[0]
	if !bytes.Equal(got.Payload, payload) && !jsonEqual(got.Payload, payload) {
		t.Errorf("payload = %s, want %s", got.Payload, payload)
	}
	if got.Type != "order.created" || got.Key != "A-1" || got.Headers["X-Tenant"] != "acme" {
		t.Errorf("metadata = %+v", got)
	}
	if !bytes.Equal(page.Events[1].Payload, bin) {
		t.Errorf("binary payload = %x, want %x", page.Events[1].Payload, bin)
	}
	next, err := c2.Publish(ctx, "orders.created", []byte("x"), client.PublishOptions{ContentType: "text/plain"})
	if err != nil || next.Seq != 3 {
		t.Fatalf("seq after restart = %+v, %v; want 3", next, err)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y bytes.Buffer
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && x.String() == y.String()
}

func TestServeErrorsAreProblems(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), nil)
	ctx := t.Context()
	c := adminClient(m)
	if _, _, err := c.PutTopic(ctx, "small", client.TopicSettings{MaxEventBytes: new(10)}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		key    string
		method string
		path   string
		body   string
		status int
		typ    string
	}{
		{"no key", "", "GET", "/v1/topics", "", 401, "unauthorized"},
		{"wrong key", "hrld_nope", "GET", "/v1/topics", "", 401, "unauthorized"},
		{"unknown topic", testAdminKey, "POST", "/v1/topics/missing/events", "x", 404, "not-found"},
		{"bad name", testAdminKey, "PUT", "/v1/topics/bad..name", "", 400, "invalid"},
		{"too large", testAdminKey, "POST", "/v1/topics/small/events", "0123456789ABC", 413, "too-large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, tc.method, m.URL()+tc.path, strings.NewReader(tc.body))
			if tc.key != "" {
				req.Header.Set("Authorization", "Bearer "+tc.key)
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" ||
				!strings.Contains(string(body), "/problems/"+tc.typ) {
				t.Fatalf("%s %s = %d %s %s; want %d problem %s", tc.method, tc.path, resp.StatusCode,
					resp.Header.Get("Content-Type"), body, tc.status, tc.typ)
			}
		})
	}
	// Nothing of the refused publish was stored.
	page, err := c.ListEvents(ctx, "small", 0, 10)
	if err != nil || len(page.Events) != 0 {
		t.Fatalf("after a 413 the topic holds %d events, %v", len(page.Events), err)
	}
	// A key without the scope is refused with 403.
	k, err := c.CreateKey(ctx, "reader", []string{"read:small"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.New(m.URL(), client.WithKey(k.Secret)).Publish(ctx, "small", []byte("x"), client.PublishOptions{})
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != 403 {
		t.Fatalf("publish with a read-only key = %v, want a 403 problem", err)
	}
}

func TestFirstStartCreatesAdminKeyOnce(t *testing.T) {
	dir := t.TempDir()
	m, stderr := testServer(t, dir, func(c *Config) { c.AdminKey = "" })
	out := stderr.String()
	i := strings.Index(out, herald.KeySecretPrefix)
	if i < 0 {
		t.Fatalf("the first start printed no admin key:\n%s", out)
	}
	secret := strings.Fields(out[i:])[0]
	c := client.New(m.URL(), client.WithKey(secret))
	if _, _, err := c.PutTopic(t.Context(), "works", client.TopicSettings{}); err != nil {
		t.Fatalf("the printed key is not an admin key: %v", err)
	}
	if err := m.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, stderr2 := testServer(t, dir, func(c *Config) { c.AdminKey = "" })
	if strings.Contains(stderr2.String(), herald.KeySecretPrefix) {
		t.Fatalf("a second start printed a key again:\n%s", stderr2)
	}
	// The secret is never in the structured log lines.
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, "level=") && strings.Contains(line, secret) {
			t.Fatalf("the admin key leaked into a log line: %s", line)
		}
	}
}

func TestCLIAgainstServer(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), nil)
	env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	getenv := func(k string) string { return env[k] }
	cli := func(stdin string, args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(t.Context(), args, strings.NewReader(stdin), &out, &errOut, getenv)
		return out.String(), errOut.String(), code
	}
	if out, errOut, code := cli("", "topics", "create", "cli.demo", "--retention", "2d"); code != 0 {
		t.Fatalf("topics create: %d %s %s", code, out, errOut)
	}
	// An explicit zero is sent: 0s turns deduplication off, a zero size is refused.
	if out, errOut, code := cli("", "topics", "create", "cli.nodedup", "--dedup-window", "0s"); code != 0 || !regexp.MustCompile(`dedup window:\s+0s\n`).MatchString(out) {
		t.Fatalf("topics create --dedup-window 0s: %d %q %q", code, out, errOut)
	}
	if out, errOut, code := cli("", "topics", "create", "cli.zero", "--max-event-bytes", "0"); code != 1 || !strings.Contains(errOut, "max_event_bytes must be between 1 and 4194304") {
		t.Fatalf("topics create --max-event-bytes 0: %d %q %q; want exit 1 naming the allowed range", code, out, errOut)
	}
	if out, errOut, code := cli(`{"n":1}`, "publish", "cli.demo", "--type", "demo.happened"); code != 0 || !strings.Contains(out, "1") {
		t.Fatalf("publish from stdin: %d %q %q", code, out, errOut)
	}
	if out, errOut, code := cli("", "publish", "cli.demo", `{"n":2}`, "--idempotency-key", "k2"); code != 0 {
		t.Fatalf("publish arg: %d %q %q", code, out, errOut)
	}
	out, errOut, code := cli("", "events", "list", "cli.demo", "--output", "json")
	if code != 0 || !strings.Contains(out, `"n": 1`) || !strings.Contains(out, `"n": 2`) || !strings.Contains(out, "demo.happened") {
		t.Fatalf("events list: %d %q %q", code, out, errOut)
	}
	_, errOut, code = cli("", "events", "list", "no.such.topic")
	if code != 1 || !strings.Contains(errOut, "not-found") {
		t.Fatalf("events list of a missing topic: %d %q; want exit 1 with the problem", code, errOut)
	}
}

func TestReadyzFollowsLifecycle(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), nil)
	get := func(path string) int {
		resp, err := http.Get(m.URL() + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get("/readyz"); s != 200 {
		t.Fatalf("/readyz = %d while serving", s)
	}
	if s := get("/healthz"); s != 200 {
		t.Fatalf("/healthz = %d", s)
	}
	if s := get("/v1/openapi.json"); s != 200 {
		t.Fatalf("/v1/openapi.json = %d", s)
	}
	if err := m.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s := get("/readyz"); s != 0 {
		t.Fatalf("/readyz answered %d after Close", s)
	}
}

var clientTopicDefaults = client.TopicSettings{}

func clientJSON(idem string) client.PublishOptions {
	return client.PublishOptions{ContentType: "application/json", IdempotencyKey: idem}
}

// TestDebugProfiler checks that debug-addr serves Go's profiler apart from
// the API, and that the API does not serve it.
func TestDebugProfiler(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.DebugAddr = "127.0.0.1:0" })
	get := func(url string) int {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("http://" + m.DebugAddr() + "/debug/pprof/goroutine?debug=1"); code != http.StatusOK {
		t.Fatalf("profiler: status %d, want 200", code)
	}
	if code := get(m.URL() + "/debug/pprof/goroutine?debug=1"); code == http.StatusOK {
		t.Fatal("the API port serves the profiler")
	}
}
