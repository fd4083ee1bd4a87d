package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/webhook"
)

// The receivers in docs/webhooks.md are run from the page itself: a code
// block right after a line "<!-- example: NAME -->" is the file NAME. So the
// page and what is tested cannot drift apart.

// webhooksDoc is the page whose examples these tests run.
const webhooksDoc = "../../docs/webhooks.md"

// docExamples returns the marked code blocks of a Markdown file by name.
func docExamples(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	marker := regexp.MustCompile(`^<!-- example: (\S+) -->$`)
	out := map[string]string{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		m := marker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
			t.Fatalf("%s:%d: %s is not followed by a code block", path, i+1, lines[i])
		}
		var code strings.Builder
		for i += 2; i < len(lines) && lines[i] != "```"; i++ {
			code.WriteString(lines[i] + "\n")
		}
		if _, dup := out[m[1]]; dup {
			t.Fatalf("%s: example %s is there twice", path, m[1])
		}
		out[m[1]] = code.String()
	}
	return out
}

// receiverRun is one documented receiver: how to run its file.
type receiverRun struct {
	file  string
	tool  string                                        // the program it needs on PATH
	build func(t *testing.T, dir, file string) []string // the command that runs it
}

// TestDocsReceivers runs each receiver of docs/webhooks.md against a real
// Herald, the way the page says: a secret made first and given to both,
// the first challenge answered, an event delivered and printed, and a
// forged or altered request refused with 401.
func TestDocsReceivers(t *testing.T) {
	t.Parallel()
	examples := docExamples(t, webhooksDoc)
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	if _, _, err := c.PutTopic(t.Context(), "orders.created", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	interpreted := func(tool string) func(*testing.T, string, string) []string {
		return func(_ *testing.T, dir, file string) []string { return []string{tool, filepath.Join(dir, file)} }
	}
	for _, rc := range []receiverRun{
		{"receiver.py", "python3", interpreted("python3")},
		{"receiver.js", "node", interpreted("node")},
		{"receiver.go", "go", buildGoReceiver},
	} {
		t.Run(rc.file, func(t *testing.T) {
			t.Parallel()
			code, ok := examples[rc.file]
			if !ok {
				t.Fatalf("%s has no example %s", webhooksDoc, rc.file)
			}
			if _, err := exec.LookPath(rc.tool); err != nil {
				t.Skipf("%s is not on PATH: the %s example is not run", rc.tool, rc.file)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, rc.file), []byte(code), 0o600); err != nil {
				t.Fatal(err)
			}
			checkReceiver(t, m, c, rc.build(t, dir, rc.file))
		})
	}
}

// buildGoReceiver compiles the Go example as its own module that uses this
// checkout of Herald, offline, and returns the binary.
func buildGoReceiver(t *testing.T, dir, file string) []string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	mod := "module receiver\n\ngo 1.26\n\nrequire github.com/heraldhq/herald v0.0.0\n\nreplace github.com/heraldhq/herald => " + root + "\n"
	for name, data := range map[string][]byte{"go.mod": []byte(mod), "go.sum": sum} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "receiver")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-mod=mod", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOPROXY=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the Go receiver of %s: %v\n%s", webhooksDoc, err, out)
	}
	return []string{bin}
}

// checkReceiver starts the receiver command and puts it through the
// documented flow against the server.
func checkReceiver(t *testing.T, m *Main, c *client.Client, command []string) {
	t.Helper()
	ctx := t.Context()
	secret := webhook.NewSecret()
	out := &syncBuffer{}
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+secret, "PORT=0")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("receiver output:\n%s", out)
		}
	})
	var port string
	eventually(t, "the receiver to say it listens", func() bool {
		if m := regexp.MustCompile(`listening on port (\d+)`).FindStringSubmatch(out.String()); m != nil {
			port = m[1]
		}
		return port != ""
	})
	url := "http://127.0.0.1:" + port + "/hooks/herald"

	// The receiver knows its secret before the subscription exists, so
	// the first challenge passes.
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "orders.created", URL: url, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.DeleteSubscription(context.WithoutCancel(ctx), sub.ID) })
	eventually(t, "the subscription to turn active", func() bool {
		s, err := c.GetSubscription(ctx, sub.ID)
		return err == nil && s.State == herald.StateActive
	})
	if stored, err := m.store.GetSubscription(ctx, sub.ID); err != nil || stored.ChallengeTries != 1 {
		t.Errorf("verified after %d challenges (%v); want the first to pass", stored.ChallengeTries, err)
	}

	// An event arrives, is printed, and is acknowledged.
	body := fmt.Sprintf(`{"order":%d}`, time.Now().UnixNano())
	res, err := c.Publish(ctx, "orders.created", []byte(body), client.PublishOptions{ContentType: "application/json", Type: "order.created"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the receiver to print the event", func() bool {
		return strings.Contains(out.String(), "event "+res.ID+" (orders.created seq "+strconv.FormatInt(res.Seq, 10)+", attempt 1): "+body)
	})
	eventually(t, "a successful attempt", func() bool {
		p, err := c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{EventID: res.ID})
		return err == nil && len(p.Attempts) == 1 && p.Attempts[0].Outcome == herald.OutcomeSuccess && p.Attempts[0].StatusCode == http.StatusNoContent
	})

	// Signed right: accepted. Signed with another secret, altered after
	// signing, or not signed: refused.
	now := time.Now()
	good := signedHeaders(secret, "msg_good", now, []byte(body))
	for _, tt := range []struct {
		name   string
		header http.Header
		body   string
		want   int
	}{
		{"signed with the secret", good, body, http.StatusNoContent},
		{"signed with another secret", signedHeaders(webhook.NewSecret(), "msg_forged", now, []byte(body)), body, http.StatusUnauthorized},
		{"body altered after signing", good, `{"order":0}`, http.StatusUnauthorized},
		{"timestamp too old", signedHeaders(secret, "msg_old", now.Add(-time.Hour), []byte(body)), body, http.StatusUnauthorized},
		{"no signature", http.Header{"Content-Type": {"application/json"}}, body, http.StatusUnauthorized},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = tt.header.Clone()
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: answered %d, want %d", tt.name, resp.StatusCode, tt.want)
		}
	}
}

// signedHeaders returns the headers of a request Herald would send with
// body, signed with secret at ts.
func signedHeaders(secret, id string, ts time.Time, body []byte) http.Header {
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		panic(err) // made by webhook.NewSecret
	}
	return http.Header{
		"Content-Type":      {"application/json"},
		"Webhook-Id":        {id},
		"Webhook-Timestamp": {strconv.FormatInt(ts.Unix(), 10)},
		"Webhook-Signature": {webhook.SignatureHeader([][]byte{key}, id, ts, body)},
		"Herald-Topic":      {"orders.created"},
		"Herald-Seq":        {"1"},
		"Herald-Attempt":    {"1"},
	}
}

// TestDocsOpenSSLCheck runs the shell check of docs/webhooks.md on a
// request Herald really sent: it passes, and fails once the body changes.
func TestDocsOpenSSLCheck(t *testing.T) {
	t.Parallel()
	script, ok := docExamples(t, webhooksDoc)["verify.sh"]
	if !ok {
		t.Fatalf("%s has no example verify.sh", webhooksDoc)
	}
	for _, tool := range []string{"sh", "openssl", "od", "tr"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not on PATH: the openssl check is not run", tool)
		}
	}
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "orders.created", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	secret := webhook.NewSecret()
	ep := newEndpoint(t)
	ep.mu.Lock()
	ep.secrets, ep.echo = []string{secret}, true
	ep.mu.Unlock()
	if _, err := c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "orders.created", URL: ep.srv.URL, Secret: secret}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Publish(ctx, "orders.created", []byte("{\"note\":\"it's \\\"quoted\\\"\\n\"}\n"), client.PublishOptions{ContentType: "application/json"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the delivery", func() bool { return ep.delivered() == 1 })
	ep.mu.Lock()
	header, body := ep.headers, ep.bodies[res.ID]
	ep.mu.Unlock()

	dir := t.TempDir()
	check := func(body string) (string, error) {
		if err := os.WriteFile(filepath.Join(dir, "body.bin"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, "sh", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+secret, "WEBHOOK_ID="+header.Get("webhook-id"),
			"WEBHOOK_TIMESTAMP="+header.Get("webhook-timestamp"), "WEBHOOK_SIGNATURE="+header.Get("webhook-signature"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := check(body); err != nil || strings.TrimSpace(out) != "signature ok" {
		t.Errorf("the genuine request: %v\n%s", err, out)
	}
	if out, err := check(strings.Replace(body, "quoted", "QUOTED", 1)); err == nil || !strings.Contains(out, "signature does not match") {
		t.Errorf("an altered body: %v\n%s; want a failure", err, out)
	}
}

// The examples are where the page says; a renamed marker fails here
// rather than silently running nothing.
func TestDocsExamplesPresent(t *testing.T) {
	t.Parallel()
	examples := docExamples(t, webhooksDoc)
	for _, name := range []string{"receiver.go", "receiver.py", "receiver.js", "verify.sh"} {
		if strings.TrimSpace(examples[name]) == "" {
			t.Errorf("%s: no example %s", webhooksDoc, name)
		}
	}
	// Every receiver reads its secret from the environment, as the page
	// says to start it.
	for _, name := range []string{"receiver.go", "receiver.py", "receiver.js"} {
		if !strings.Contains(examples[name], "WEBHOOK_SECRET") {
			t.Errorf("%s does not read WEBHOOK_SECRET", name)
		}
	}
}
