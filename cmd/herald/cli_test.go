package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// The client verbs are tested end to end against a real server elsewhere.
// These tests cover what needs no server: argument parsing, usage errors
// and help, and how errors are printed (against an httptest server that
// answers a problem, or no server at all).

type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs herald with the args, stdin (nil: none) and environment.
func runCLI(t *testing.T, stdin io.Reader, environ map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, stdin, &stdout, &stderr, env(environ))
	return result{code, stdout.String(), stderr.String()}
}

// closedURL returns the URL of a port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestHelpListsEveryVerb(t *testing.T) {
	r := runCLI(t, nil, nil, "help")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("help: code %d, stderr %q", r.code, r.stderr)
	}
	for _, v := range []string{"serve", "migrate", "topics", "publish", "events", "keys", "subscriptions", "tail", "bench", "version", "help"} {
		if !strings.Contains(r.stdout, "\n  "+v+" ") {
			t.Errorf("help does not list %q:\n%s", v, r.stdout)
		}
	}
	for _, opt := range []string{"--server URL", "HERALD_URL", "--key KEY", "HERALD_KEY", "--output FORMAT"} {
		if !strings.Contains(r.stdout, opt) {
			t.Errorf("help does not mention %q", opt)
		}
	}

	// No verb at all: the same overview, on stderr, and a usage error.
	r = runCLI(t, nil, nil)
	if r.code != exitUsage || !strings.Contains(r.stderr, "publish") || !strings.Contains(r.stderr, "herald: no verb given") {
		t.Errorf("no verb: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestVerbHelp(t *testing.T) {
	tests := []struct {
		args     []string
		toStdout bool
		want     []string
	}{
		{[]string{"help", "topics"}, true, []string{"create NAME", "list", "get NAME", "delete NAME"}},
		{[]string{"help", "topics", "create"}, true, []string{"--retention D", "--max-event-bytes N", "--dedup-window D", "--server URL"}},
		{[]string{"topics", "create", "-h"}, false, []string{"--retention D"}},
		{[]string{"help", "publish"}, true, []string{"--file F", "--type TYPE", "--event-key KEY", "--idempotency-key KEY", "--content-type TYPE", "--header NAME=VALUE"}},
		{[]string{"help", "events", "list"}, true, []string{"--after-seq N", "--limit M"}},
		{[]string{"help", "keys", "create"}, true, []string{"--name NAME", "--scope SCOPE", "--expires-in D"}},
		{[]string{"keys", "--help"}, false, []string{"publish:<pattern>"}},
		{[]string{"help", "serve"}, true, []string{"-addr, HERALD_ADDR, addr"}},
		{[]string{"migrate", "-h"}, false, []string{"-data-dir, HERALD_DATA_DIR, data-dir"}},
	}
	for _, tt := range tests {
		r := runCLI(t, nil, nil, tt.args...)
		out, other := r.stderr, r.stdout
		if tt.toStdout {
			out, other = r.stdout, r.stderr
		}
		if r.code != exitOK || other != "" {
			t.Errorf("%q: code %d, other stream %q", tt.args, r.code, other)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%q: help lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	// Every case must fail before any request; the server is a closed
	// port, so a request would exit 1, not 2.
	environ := map[string]string{"HERALD_URL": closedURL(t)}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown verb "frobnicate"`},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"topics"}, "topics: missing subverb"},
		{[]string{"topics", "rename"}, `topics: unknown subverb "rename"`},
		{[]string{"topics", "get"}, "topics get: missing arguments; usage: herald topics get NAME"},
		{[]string{"topics", "get", "a", "b"}, `topics get: unexpected argument "b"`},
		{[]string{"topics", "create", "t", "--retention", "a week"}, "want a duration such as 90m, 24h or 7d"},
		{[]string{"topics", "create", "t", "--max-event-bytes", "-1"}, "--max-event-bytes -1: want a positive number"},
		{[]string{"topics", "list", "--output", "yaml"}, `--output "yaml": want text or json`},
		{[]string{"--output", "yaml", "topics", "list"}, `--output "yaml": want text or json`},
		{[]string{"publish"}, "publish: missing arguments"},
		{[]string{"publish", "t", "data", "more"}, `publish: unexpected argument "more"`},
		{[]string{"publish", "t", "data", "--file", "f"}, "give the data as an argument or with --file, not both"},
		{[]string{"publish", "t", "x", "--header", "novalue"}, `--header "novalue": want NAME=VALUE`},
		{[]string{"publish", "t", "x", "--header", "=v"}, `--header "=v": want NAME=VALUE`},
		{[]string{"publish", "t"}, "no data: give it as an argument, with --file F, or on standard input"},
		{[]string{"events", "list"}, "events list: missing arguments"},
		{[]string{"events", "list", "t", "--after-seq", "x"}, `invalid value "x" for flag -after-seq`},
		{[]string{"events", "list", "t", "--after-seq", "-1"}, "--after-seq -1: want 0 or more"},
		{[]string{"events", "get", "t"}, "events get: missing arguments; usage: herald events get TOPIC ID"},
		{[]string{"keys", "create", "--scope", "admin"}, "keys create: --name is required"},
		{[]string{"keys", "create", "--name", "ci"}, "at least one --scope is required"},
		{[]string{"keys", "create", "--name", "ci", "--scope", "admin", "--expires-in", "-1h"}, "not negative"},
		{[]string{"keys", "delete"}, "keys delete: missing arguments"},
		{[]string{"version", "extra"}, `version: unexpected argument "extra"`},
		{[]string{"--server", "http://x", "serve"}, "--server, --key and --output apply to client verbs, not to serve"},
		{[]string{"serve", "-listen", ":80"}, "flag provided but not defined: -listen"},
		{[]string{"migrate", "-log-level", "loud"}, `log-level = "loud" (from -log-level) is not accepted`},
		{[]string{"topics", "get", ""}, "topic is empty"},
		{[]string{"--server", "ftp://example.com", "topics", "list"}, `the server URL "ftp://example.com" must be http:// or https://`},
	}
	for _, tt := range tests {
		r := runCLI(t, nil, environ, tt.args...)
		if r.code != exitUsage {
			t.Errorf("%q: exit code %d, want %d; stderr:\n%s", tt.args, r.code, exitUsage, r.stderr)
			continue
		}
		if !strings.Contains(r.stderr, "herald: ") || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%q: stderr lacks %q:\n%s", tt.args, tt.want, r.stderr)
		}
		if !strings.Contains(r.stderr, `Run "herald help`) {
			t.Errorf("%q: no pointer to help in:\n%s", tt.args, r.stderr)
		}
	}
}

// A terminal on stdin must not be read: publish without data fails at once.
// /dev/null is a character device, as a terminal is.
func TestPublishDoesNotReadATerminal(t *testing.T) {
	tty, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	r := runCLI(t, tty, map[string]string{"HERALD_URL": closedURL(t)}, "publish", "orders")
	if r.code != exitUsage || !strings.Contains(r.stderr, "no data") {
		t.Errorf("code %d, stderr %q; want a usage error about missing data", r.code, r.stderr)
	}
}

func TestParsePublish(t *testing.T) {
	dir := t.TempDir()
	binFile := filepath.Join(dir, "payload.bin")
	if err := os.WriteFile(binFile, []byte{0, 1, 2, 0xff}, 0o600); err != nil {
		t.Fatal(err)
	}
	jsonFile := filepath.Join(dir, "payload.json")
	if err := os.WriteFile(jsonFile, []byte(`{"from":"file"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		args  []string
		stdin string // "" and stdinTTY false: an empty pipe
		want  publishArgs
	}{
		{"JSON argument", []string{"orders", `{"a":1}`},
			"", publishArgs{"orders", []byte(`{"a":1}`), client.PublishOptions{ContentType: "application/json"}}},
		{"text argument", []string{"orders", "hello"},
			"", publishArgs{"orders", []byte("hello"), client.PublishOptions{ContentType: "application/octet-stream"}}},
		{"explicit content type wins", []string{"orders", `{"a":1}`, "--content-type", "application/vnd.x+json"},
			"", publishArgs{"orders", []byte(`{"a":1}`), client.PublishOptions{ContentType: "application/vnd.x+json"}}},
		{"flags before, between and after", []string{"--type", "order.created", "orders", "--event-key", "c-1", "42", "--idempotency-key", "k1", "--id", "e1"},
			"", publishArgs{"orders", []byte("42"), client.PublishOptions{ContentType: "application/json", Type: "order.created", Key: "c-1", IdempotencyKey: "k1", ID: "e1"}}},
		{"headers", []string{"orders", "x", "--header", "X-Tenant=t1", "--header", "Trace=a=b", "--header", "Empty="},
			"", publishArgs{"orders", []byte("x"), client.PublishOptions{ContentType: "application/octet-stream",
				Headers: map[string]string{"X-Tenant": "t1", "Trace": "a=b", "Empty": ""}}}},
		{"data after --", []string{"orders", "--type", "n", "--", "--not-a-flag"},
			"", publishArgs{"orders", []byte("--not-a-flag"), client.PublishOptions{ContentType: "application/octet-stream", Type: "n"}}},
		{"stdin when piped", []string{"orders"},
			`{"from":"stdin"}`, publishArgs{"orders", []byte(`{"from":"stdin"}`), client.PublishOptions{ContentType: "application/json"}}},
		{"stdin by -", []string{"orders", "-"},
			"raw", publishArgs{"orders", []byte("raw"), client.PublishOptions{ContentType: "application/octet-stream"}}},
		{"an argument wins over piped stdin", []string{"orders", "arg"},
			"stdin", publishArgs{"orders", []byte("arg"), client.PublishOptions{ContentType: "application/octet-stream"}}},
		{"empty piped stdin is an empty payload", []string{"orders"},
			"", publishArgs{"orders", []byte{}, client.PublishOptions{ContentType: "application/octet-stream"}}},
		{"binary file", []string{"orders", "--file", binFile},
			"", publishArgs{"orders", []byte{0, 1, 2, 0xff}, client.PublishOptions{ContentType: "application/octet-stream"}}},
		{"JSON file, byte for byte", []string{"orders", "--file", jsonFile},
			"", publishArgs{"orders", []byte(`{"from":"file"}` + "\n"), client.PublishOptions{ContentType: "application/json"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &cli{stdin: strings.NewReader(tt.stdin), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: env(nil)}
			got, err := parsePublish(c, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestPublishDataLimits(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, herald.MaxEventBytesLimit+1), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cli{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: env(nil)}
	_, err := parsePublish(c, []string{"orders", "--file", big})
	if err == nil || !strings.Contains(err.Error(), "more than 4194304 bytes") {
		t.Errorf("over-limit file: err = %v", err)
	}
	_, err = parsePublish(c, []string{"orders", "--file", filepath.Join(t.TempDir(), "missing")})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestParseTopicsCreate(t *testing.T) {
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(nil)}
	got, err := parseTopicsCreate(c, []string{"orders.created", "--retention", "7d", "--max-event-bytes", "1024", "--dedup-window", "1h30m"})
	if err != nil {
		t.Fatal(err)
	}
	want := topicsCreateArgs{"orders.created", client.TopicSettings{Retention: new(7 * 24 * time.Hour), MaxEventBytes: new(1024), DedupWindow: new(90 * time.Minute)}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %s, want %s", settingsText(got.settings), settingsText(want.settings))
	}
	got, err = parseTopicsCreate(c, []string{"orders"})
	if err != nil || got != (topicsCreateArgs{name: "orders"}) {
		t.Errorf("no settings: got %s, %v; want none set (server defaults)", settingsText(got.settings), err)
	}
	// A zero given is sent, not mistaken for "not given": --dedup-window 0s
	// turns deduplication off, and the server refuses the other zeros.
	got, err = parseTopicsCreate(c, []string{"orders", "--dedup-window", "0s", "--max-event-bytes", "0", "--retention", "0s"})
	want = topicsCreateArgs{"orders", client.TopicSettings{Retention: new(time.Duration(0)), MaxEventBytes: new(0), DedupWindow: new(time.Duration(0))}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("explicit zeros: got %s, %v; want %s", settingsText(got.settings), err, settingsText(want.settings))
	}
}

// settingsText shows topic settings with their pointers followed.
func settingsText(s client.TopicSettings) string {
	show := func(p any) string {
		switch v := p.(type) {
		case *time.Duration:
			if v != nil {
				return v.String()
			}
		case *int:
			if v != nil {
				return strconv.Itoa(*v)
			}
		}
		return "unset"
	}
	return fmt.Sprintf("{retention %s, max_event_bytes %s, dedup_window %s}", show(s.Retention), show(s.MaxEventBytes), show(s.DedupWindow))
}

func TestParseEventsList(t *testing.T) {
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(nil)}
	got, err := parseEventsList(c, []string{"orders", "--after-seq", "41", "--limit", "10"})
	if err != nil || got != (eventsListArgs{"orders", 41, 10}) {
		t.Errorf("got %+v, %v", got, err)
	}
}

func TestParseKeysCreate(t *testing.T) {
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(nil)}
	got, err := parseKeysCreate(c, []string{"--name", "ci", "--scope", "publish:orders.>", "--scope", "read:orders.*", "--expires-in", "30d", "--tenant", "acme"})
	want := keysCreateArgs{"ci", []string{"publish:orders.>", "read:orders.*"}, 30 * 24 * time.Hour, "acme"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
}

func TestGlobalOptions(t *testing.T) {
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(map[string]string{"HERALD_URL": "http://env:1", "HERALD_KEY": "hrld_env"})}
	if c.serverURL() != "http://env:1" || c.apiKey() != "hrld_env" {
		t.Errorf("from env: server %q, key %q", c.serverURL(), c.apiKey())
	}
	if _, err := parseEventsList(c, []string{"orders", "--server", "http://flag:2", "--key", "hrld_flag", "--output", "json"}); err != nil {
		t.Fatal(err)
	}
	if c.serverURL() != "http://flag:2" || c.apiKey() != "hrld_flag" || c.g.output != outputJSON {
		t.Errorf("flags over env: server %q, key %q, output %q", c.serverURL(), c.apiKey(), c.g.output)
	}
	c = &cli{getenv: env(nil)}
	if c.serverURL() != "http://127.0.0.1:8480" || c.apiKey() != "" {
		t.Errorf("defaults: server %q, key %q", c.serverURL(), c.apiKey())
	}

	// The API key must never show up in help, even when given.
	r := runCLI(t, nil, map[string]string{"HERALD_KEY": "hrld_s3cr3t"}, "--key", "hrld_s3cr3t", "topics", "create", "-h")
	if r.code != exitOK || strings.Contains(r.stdout+r.stderr, "s3cr3t") {
		t.Errorf("help with a key: code %d, output shows the key: %q", r.code, r.stdout+r.stderr)
	}
}

func TestVersion(t *testing.T) {
	r := runCLI(t, nil, nil, "version")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "herald "+herald.Version+" (go") {
		t.Errorf("version: code %d, stdout %q", r.code, r.stdout)
	}
	r = runCLI(t, nil, nil, "--output", "json", "version")
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["version"] != herald.Version {
		t.Errorf("version --output json: %q (%v)", r.stdout, err)
	}
}

// problemServer answers every request with the problem document.
func problemServer(t *testing.T, status int, doc string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(doc))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestProblemOutput(t *testing.T) {
	notFound := problemServer(t, 404, `{"type":"https://herald.dev/problems/not-found","title":"Not found","status":404,"detail":"topic \"orders\" not found","request_id":"r1"}`)
	invalid := problemServer(t, 400, `{"type":"https://herald.dev/problems/invalid","title":"Invalid","status":400,"detail":"retention must be between 1m and 8760h0m0s, got 1s","field":"retention"}`)
	unauthorized := problemServer(t, 401, `{"type":"https://herald.dev/problems/unauthorized","title":"Unauthorized","status":401,"detail":"an API key is required"}`)

	tests := []struct {
		args    []string
		environ map[string]string
		want    string
	}{
		{[]string{"--server", notFound, "topics", "get", "orders"}, nil,
			"herald: topic \"orders\" not found (status 404, type https://herald.dev/problems/not-found)\n"},
		{[]string{"topics", "create", "orders", "--retention", "1s", "--server", invalid}, nil,
			"herald: retention must be between 1m and 8760h0m0s, got 1s (field: retention, status 400, type https://herald.dev/problems/invalid)\n"},
		{[]string{"keys", "list"}, map[string]string{"HERALD_URL": unauthorized},
			"herald: an API key is required (status 401, type https://herald.dev/problems/unauthorized)\n" +
				"herald: no API key was given: set --key or HERALD_KEY\n"},
		{[]string{"keys", "list"}, map[string]string{"HERALD_URL": unauthorized, "HERALD_KEY": "hrld_wrong"},
			"herald: an API key is required (status 401, type https://herald.dev/problems/unauthorized)\n"},
	}
	for _, tt := range tests {
		r := runCLI(t, nil, tt.environ, tt.args...)
		if r.code != exitFailure || r.stderr != tt.want || r.stdout != "" {
			t.Errorf("%q: code %d, stdout %q\nstderr %q\nwant   %q", tt.args, r.code, r.stdout, r.stderr, tt.want)
		}
	}
}

func TestConnectionRefusedOutput(t *testing.T) {
	u := closedURL(t)
	for _, args := range [][]string{
		{"--server", u, "topics", "list"},
		{"publish", "orders", "{}", "--server", u},
		{"events", "get", "orders", "e1"}, // from HERALD_URL
	} {
		r := runCLI(t, nil, map[string]string{"HERALD_URL": u}, args...)
		prefix := "herald: cannot reach Herald at " + u + ": dial tcp "
		suffix := `connection refused (is "herald serve" running? set --server or HERALD_URL)` + "\n"
		if r.code != exitFailure || !strings.HasPrefix(r.stderr, prefix) || !strings.HasSuffix(r.stderr, suffix) {
			t.Errorf("%q: code %d, stderr %q\nwant %q...%q", args, r.code, r.stderr, prefix, suffix)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(nil)}
	fs := c.flagSet("x", "herald x")
	var typ string
	fs.StringVar(&typ, "type", "", "")
	pos, err := parseInterspersed(fs.FlagSet, []string{"a", "--type", "t", "b", "--", "--type", "c"})
	if err != nil || typ != "t" || !reflect.DeepEqual(pos, []string{"a", "b", "--type", "c"}) {
		t.Errorf("pos %q, type %q, err %v", pos, typ, err)
	}
}
