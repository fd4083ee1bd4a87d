package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/webhook"
)

// listening is a "herald listen" running against a test server.
type listening struct {
	out, errOut *syncBuffer
	stop        context.CancelFunc
	done        chan int // the exit code
}

// startListen runs herald with the args (listen and its options) until
// stop, with the server's URL and admin key in the environment.
func startListen(t *testing.T, m *Main, args ...string) *listening {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	l := &listening{out: &syncBuffer{}, errOut: &syncBuffer{}, stop: cancel, done: make(chan int, 1)}
	getenv := env(map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey})
	go func() { l.done <- run(ctx, args, nil, l.out, l.errOut, getenv) }()
	t.Cleanup(func() {
		cancel()
		<-l.done // the goroutine ends with the command
	})
	return l
}

// wait stops the listener and returns its exit code.
func (l *listening) wait(t *testing.T) int {
	t.Helper()
	l.stop()
	select {
	case code := <-l.done:
		l.done <- code // for the cleanup
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("herald listen did not stop\nstdout:\n%s\nstderr:\n%s", l.out, l.errOut)
		return -1
	}
}

// match returns the first group of re in the listener's output, once it
// is there.
func (l *listening) match(t *testing.T, re string) string {
	t.Helper()
	var m []string
	eventually(t, re, func() bool {
		m = regexp.MustCompile(re).FindStringSubmatch(l.out.String())
		return m != nil
	})
	return m[1]
}

// signedRequest posts body to url signed with secret, as Herald would.
func signedRequest(t *testing.T, url, secret, body string) int {
	t.Helper()
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", "forged-1")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", webhook.SignatureHeader([][]byte{key}, "forged-1", now, []byte(body)))
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestListen follows the five-minute path: herald listen subscribes a
// local port, passes the challenge, prints each delivery with its verdict,
// rejects a forged request, receives "subscriptions test", and deletes its
// subscription when stopped.
func TestListen(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "orders.eu", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	l := startListen(t, m, "listen", "orders.>")
	url := l.match(t, `Listening on (\S+) for orders\.> `)
	id := l.match(t, `Subscription (sub_\w+) is active`)
	secret := l.match(t, `Signing secret: (whsec_\S+)`)
	if !strings.Contains(l.out.String(), "verification challenge: signature verified; answered 200") {
		t.Errorf("the challenge is not shown as verified and answered:\n%s", l.out)
	}

	if _, err := c.Publish(ctx, "orders.eu", []byte(`{"order":1001}`), client.PublishOptions{ContentType: "application/json", Type: "order.created"}); err != nil {
		t.Fatal(err)
	}
	block := l.match(t, `(?s)(--- \S+ POST / event: [^\n]*\n.*?\{"order":1001\})`)
	for _, want := range []string{"event: signature verified; answered 204", "Herald-Event-Type: order.created", "Herald-Topic: orders.eu", "Webhook-Signature: v1,"} {
		if !strings.Contains(block, want) {
			t.Errorf("the delivery lacks %q:\n%s", want, block)
		}
	}

	// A request signed with another secret is refused and shown as such.
	if code := signedRequest(t, url, webhook.NewSecret(), `{"order":"forged"}`); code != http.StatusUnauthorized {
		t.Errorf("a forged request was answered %d, want 401", code)
	}
	l.match(t, `(REJECTED: no webhook-signature matches; answered 401)`)
	if code := signedRequest(t, url, secret, `{"order":"genuine"}`); code != http.StatusNoContent {
		t.Errorf("a request signed with the listener's secret was answered %d, want 204", code)
	}

	// "subscriptions test" reaches the listener through Herald.
	r := runCLI(t, nil, map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}, "subscriptions", "test", id)
	if r.code != exitOK || !strings.Contains(r.stdout, "outcome:     success") || !strings.Contains(r.stdout, "status:      204") {
		t.Errorf("subscriptions test: %+v", r)
	}
	l.match(t, `(Herald-Event-Type: herald\.test)`)

	if code := l.wait(t); code != exitOK {
		t.Errorf("listen exited %d\nstderr:\n%s", code, l.errOut)
	}
	if !strings.Contains(l.out.String(), "Deleted subscription "+id) {
		t.Errorf("stopping does not say the subscription was deleted:\n%s", l.out)
	}
	if _, err := c.GetSubscription(ctx, id); !isStatus(err, http.StatusNotFound) {
		t.Errorf("after stopping, get subscription: %v; want 404", err)
	}
}

// With --keep the subscription stays; --output json prints one request per
// line; --status sets the answer to events, which Herald then retries.
func TestListenKeepJSONAndStatus(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	l := startListen(t, m, "--output", "json", "listen", "orders", "--keep", "--status", "503")
	eventually(t, "the challenge", func() bool { return strings.Contains(l.out.String(), `"verified":true`) })
	var id string
	eventually(t, "the subscription to be active", func() bool {
		page, err := c.ListSubscriptions(ctx, client.SubscriptionListOptions{State: herald.StateActive})
		if err != nil || len(page.Subscriptions) != 1 {
			return false
		}
		id = page.Subscriptions[0].ID
		return true
	})
	if _, err := c.Publish(ctx, "orders", []byte("plain text"), client.PublishOptions{ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the event", func() bool { return strings.Contains(l.out.String(), `"body":"plain text"`) })
	var line struct {
		Headers  map[string]string `json:"headers"`
		Body     string            `json:"body"`
		Verified bool              `json:"verified"`
		Status   int               `json:"status"`
	}
	for text := range strings.Lines(l.out.String()) {
		if strings.Contains(text, `"plain text"`) {
			if err := json.Unmarshal([]byte(text), &line); err != nil {
				t.Fatalf("not a JSON line: %v\n%s", err, text)
			}
			break
		}
	}
	if !line.Verified || line.Status != 503 || line.Headers["Herald-Topic"] != "orders" {
		t.Errorf("the event's line: %+v", line)
	}
	eventually(t, "a failed attempt", func() bool {
		p, err := c.ListAttempts(ctx, id, client.AttemptListOptions{Outcome: herald.OutcomeFailure})
		return err == nil && len(p.Attempts) > 0 && p.Attempts[0].StatusCode == 503
	})
	if code := l.wait(t); code != exitOK {
		t.Errorf("listen exited %d\nstderr:\n%s", code, l.errOut)
	}
	if _, err := c.GetSubscription(ctx, id); err != nil {
		t.Errorf("--keep: the subscription is gone: %v", err)
	}
	// The notes for people go to stderr, so stdout is only JSON lines.
	if !strings.Contains(l.errOut.String(), "Kept subscription "+id) || !strings.Contains(l.errOut.String(), "Signing secret: whsec_") {
		t.Errorf("stderr:\n%s", l.errOut)
	}
	for text := range strings.Lines(l.out.String()) {
		if !json.Valid([]byte(text)) {
			t.Errorf("stdout has a line that is not JSON: %q", text)
		}
	}
}

// A server that refuses private destinations (the default) makes herald
// listen fail at once with the server's reason and what to do about it.
func TestListenPrivateDestinationsRefused(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AllowPrivateDestinations = false })
	l := startListen(t, m, "listen", "orders")
	select {
	case code := <-l.done:
		l.done <- code
		if code != exitFailure {
			t.Errorf("exit code %d, want %d", code, exitFailure)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("herald listen did not give up")
	}
	for _, want := range []string{"field: url, status 400", "herald serve -allow-private-destinations", "HERALD_ALLOW_PRIVATE_DESTINATIONS=true", "--url"} {
		if !strings.Contains(l.errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, l.errOut)
		}
	}
	if page, err := adminClient(m).ListSubscriptions(t.Context(), client.SubscriptionListOptions{}); err != nil || len(page.Subscriptions) != 0 {
		t.Errorf("subscriptions left: %+v, %v", page, err)
	}
}

func TestListenUsage(t *testing.T) {
	t.Parallel()
	environ := map[string]string{"HERALD_URL": closedURL(t)}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"listen"}, "listen: missing arguments; usage: herald listen TOPIC"},
		{[]string{"listen", "orders", "--status", "99"}, "--status 99: want an HTTP status from 200 to 599"},
		{[]string{"listen", "orders", "--filter", "{types"}, "--filter: not valid JSON"},
		{[]string{"listen", "orders", "--start", "soon"}, `--start "soon"`},
		{[]string{"listen", "orders", "--wait-timeout", "0s"}, "--wait-timeout: want a duration above 0"},
	} {
		if r := runCLI(t, nil, environ, tt.args...); r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%q: code %d, stderr:\n%s\nwant %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
	r := runCLI(t, nil, nil, "help", "listen")
	for _, want := range []string{"herald serve -allow-private-destinations", "--keep", "--url URL", "--status N", "(default 204)", "--listen ADDR", "subscriptions test"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help listen lacks %q:\n%s", want, r.stdout)
		}
	}
	// A server that cannot be reached: a plain failure, no listener left.
	if r := runCLI(t, nil, environ, "listen", "orders"); r.code != exitFailure || !strings.Contains(r.stderr, "is \"herald serve\" running?") {
		t.Errorf("listen without a server: %+v", r)
	}
}
