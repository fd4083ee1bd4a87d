package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/webhook"
)

// call sends a request to the server and returns the status, the decoded
// JSON body (nil when it is not an object) and the raw response.
func call(t *testing.T, m *Main, key, method, path string, body []byte, header ...string) (int, map[string]any, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, m.URL()+path, bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if len(body) > 0 && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, resp
}

// TestSourceCRUDAndInboundWebhook drives the source resource and an inbound
// webhook source through the real server: CRUD with a write-only secret,
// admin scope, problems naming the field, pause/resume, Standard Webhooks
// verification (401 counted), the raw body kept byte for byte and a
// redelivery absorbed as a duplicate.
func TestSourceCRUDAndInboundWebhook(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	secret := webhook.NewSecret()

	// Bad input is a problem naming the field.
	for body, field := range map[string]string{
		`{"kind":"nope","topic":"a"}`:                                                      "kind",
		`{"kind":"webhook","topic":"a","config":{"verify":"standard-webhooks"}}`:           "config.secret",
		`{"kind":"webhook","topic":"a","config":{"verify":"none","bogus":1}}`:              "config",
		`{"kind":"webhook","topic":"bad..topic","config":{"verify":"none"}}`:               "topic",
		`{"kind":"webhook","topic":"a.{nope}","config":{"verify":"none"}}`:                 "topic",
		`{"kind":"webhook","topic":"a","config":{"verify":"none"},"shards":0}`:             "shards",
		`{"kind":"webhook","topic":"a","config":{"verify":"none"},"mapping":{"key":"{x"}}`: "mapping.key",
		`{"kind":"webhook","topic":"herald.x","config":{"verify":"none"}}`:                 "topic",
		`{"kind":"webhook","config":{"verify":"none"}}`:                                    "topic",
	} {
		status, p, resp := call(t, m, testAdminKey, "POST", "/v1/sources", []byte(body))
		if status != 400 || resp.Header.Get("Content-Type") != "application/problem+json" || p["field"] != field {
			t.Errorf("POST %s: %d %v; want 400 naming %s", body, status, p, field)
		}
	}

	create := `{"kind":"webhook","topic":"github.{header.x-github-event}","description":"from GitHub",
		"config":{"verify":"standard-webhooks","secret":"` + secret + `"},"mapping":{"key":"{payload.repo}"}}`
	// Admin scope only.
	k, err := adminClient(m).CreateKey(t.Context(), "pub", []string{"publish:>", "subscribe:>"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _ := call(t, m, k.Secret, "POST", "/v1/sources", []byte(create)); status != 403 {
		t.Fatalf("a non-admin key created a source: %d", status)
	}
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", []byte(create))
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	id, _ := src["id"].(string)
	cfg, _ := src["config"].(map[string]any)
	if !strings.HasPrefix(id, "src_") || src["state"] != "active" || cfg["secret"] != nil || cfg["verify"] != "standard-webhooks" ||
		src["inbound_path"] != "/v1/inbound/"+id || src["kind"] != "webhook" {
		t.Fatalf("created source: %v", src)
	}
	status, got, resp := call(t, m, testAdminKey, "GET", "/v1/sources/"+id, nil)
	if status != 200 || strings.Contains(mustJSON(got), strings.TrimPrefix(secret, "whsec_")) {
		t.Fatalf("get: %d %v (the secret must never come back)", status, got)
	}
	_ = resp
	if status, list, _ := call(t, m, testAdminKey, "GET", "/v1/sources", nil); status != 200 || len(list["sources"].([]any)) != 1 {
		t.Fatalf("list: %d %v", status, list)
	}
	// A PATCH without the secret keeps it (verification below still works).
	if status, p, _ := call(t, m, testAdminKey, "PATCH", "/v1/sources/"+id, []byte(`{"config":{"verify":"standard-webhooks"},"description":"d2"}`)); status != 200 || p["description"] != "d2" {
		t.Fatalf("patch: %d %v", status, p)
	}
	if status, p, _ := call(t, m, testAdminKey, "PATCH", "/v1/sources/"+id, []byte(`{"kind":"kafka"}`)); status != 400 || p["field"] != "kind" {
		t.Fatalf("patch kind: %d %v", status, p)
	}

	body := []byte(`{"repo":"herald",  "action":"opened"}` + "\n")
	send := func(msgID string, sign bool) (int, map[string]any) {
		now := time.Now()
		sig := "v1,AAAA"
		if sign {
			key, _ := webhook.ParseSecret(secret)
			sig = webhook.Sign(key, msgID, now, body)
		}
		status, out, _ := call(t, m, "", "POST", "/v1/inbound/"+id, body,
			"Content-Type", "application/json", "webhook-id", msgID, "webhook-timestamp", itoa(now.Unix()),
			"webhook-signature", sig, "X-GitHub-Event", "push")
		return status, out
	}
	if status, p := send("msg_1", false); status != 401 || p["type"] == nil {
		t.Fatalf("a bad signature: %d %v; want 401", status, p)
	}
	status, first := send("msg_1", true)
	if status != 202 || first["topic"] != "github.push" || first["duplicate"] != false {
		t.Fatalf("inbound: %d %v", status, first)
	}
	status, again := send("msg_1", true)
	if status != 200 || again["duplicate"] != true || again["id"] != first["id"] {
		t.Fatalf("redelivery: %d %v; want the first event as a duplicate", status, again)
	}
	ev, err := adminClient(m).GetEvent(t.Context(), "github.push", first["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Key != "herald" || !jsonEqual(ev.Payload, body) {
		t.Fatalf("event: key %q payload %q", ev.Key, ev.Payload)
	}
	page, _ := adminClient(m).ListEvents(t.Context(), "github.push", 0, 10)
	if len(page.Events) != 1 {
		t.Fatalf("%d events; want 1", len(page.Events))
	}

	// Paused: the sender is told to come back later.
	if status, p, _ := call(t, m, testAdminKey, "POST", "/v1/sources/"+id+"/pause", nil); status != 200 || p["state"] != "paused" {
		t.Fatalf("pause: %d %v", status, p)
	}
	if status, _ := send("msg_2", true); status != 503 {
		t.Fatalf("inbound while paused: %d; want 503", status)
	}
	if status, p, _ := call(t, m, testAdminKey, "POST", "/v1/sources/"+id+"/resume", nil); status != 200 || p["state"] != "active" {
		t.Fatalf("resume: %d %v", status, p)
	}
	if status, _ := send("msg_2", true); status != 202 {
		t.Fatalf("inbound after resume: %d", status)
	}
	metrics := scrape(t, m)
	if !strings.Contains(metrics, `herald_source_inbound_rejected_total{source="`+id+`"} 1`) ||
		!strings.Contains(metrics, `herald_source_duplicates_total{kind="webhook",source="`+id+`"} 1`) {
		t.Errorf("metrics lack the rejected and duplicate counts:\n%s", grepLines(metrics, "herald_source"))
	}

	if status, _, _ := call(t, m, testAdminKey, "DELETE", "/v1/sources/"+id, nil); status != 204 {
		t.Fatalf("delete: %d", status)
	}
	if status, p, _ := call(t, m, testAdminKey, "GET", "/v1/sources/"+id, nil); status != 404 || p["type"] == nil {
		t.Fatalf("get after delete: %d %v", status, p)
	}
	if status, _ := send("msg_3", true); status != 404 {
		t.Fatalf("inbound to a deleted source: %d", status)
	}
}

// TestInboundGitHubAndHMAC checks the GitHub and generic HMAC schemes.
func TestInboundGitHubAndHMAC(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	body := []byte("raw \x00 bytes, not JSON")
	mac := hmac.New(sha256.New, []byte("gh-secret"))
	mac.Write(body)
	sig := hex.EncodeToString(mac.Sum(nil))

	_, gh, _ := call(t, m, testAdminKey, "POST", "/v1/sources", []byte(`{"kind":"webhook","topic":"gh","config":{"verify":"github","secret":"gh-secret"}}`))
	_, hm, _ := call(t, m, testAdminKey, "POST", "/v1/sources", []byte(`{"kind":"webhook","topic":"hm","config":{"verify":"hmac","secret":"gh-secret","header":"X-Sig","prefix":"sha256=","id_header":"X-Id"}}`))
	ghID, hmID := gh["id"].(string), hm["id"].(string)
	if status, _, _ := call(t, m, "", "POST", "/v1/inbound/"+ghID, body, "Content-Type", "application/octet-stream", "X-Hub-Signature-256", "sha256="+sig, "X-GitHub-Delivery", "d1", "X-GitHub-Event", "issues"); status != 202 {
		t.Fatalf("github: %d", status)
	}
	if status, _, _ := call(t, m, "", "POST", "/v1/inbound/"+ghID, body, "X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64)); status != 401 {
		t.Fatalf("github with a wrong signature: %d", status)
	}
	if status, _, _ := call(t, m, "", "POST", "/v1/inbound/"+hmID, body, "Content-Type", "application/octet-stream", "X-Sig", "sha256="+sig, "X-Id", "h1"); status != 202 {
		t.Fatalf("hmac: %d", status)
	}
	if status, _, _ := call(t, m, "", "POST", "/v1/inbound/"+hmID, body, "X-Sig", sig); status != 401 {
		t.Fatalf("hmac without its prefix: %d", status)
	}
	page, err := adminClient(m).ListEvents(t.Context(), "gh", 0, 10)
	if err != nil || len(page.Events) != 1 || !bytes.Equal(page.Events[0].Payload, body) || page.Events[0].Type != "issues" {
		t.Fatalf("gh events: %+v %v", page.Events, err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func scrape(t *testing.T, m *Main) string {
	t.Helper()
	resp, err := http.Get(m.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSourcesCLIAndFile drives the sources verbs against a server, and a
// source declared in the sources file: created at start with ${NAME} read
// from the environment, read-only through the API, deleted when it leaves
// the file.
func TestSourcesCLIAndFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "sources.json")
	if err := os.WriteFile(file, []byte(`{"sources": [{"id": "gh-in", "kind": "webhook", "topic": "gh.{header.x-github-event}",
		"config": {"verify": "github", "secret": "${GH_SECRET}"}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GH_SECRET": "s3cret-from-env"}
	stderr := &syncBuffer{}
	m := NewMain(io.Discard, stderr, func(k string) string { return env[k] })
	m.Config.Addr, m.Config.DataDir, m.Config.AdminKey, m.Config.SourcesFile = "127.0.0.1:0", dir, testAdminKey, file
	m.Config.ShutdownDrainDelay = 0
	if err := m.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())

	cliEnv := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	cli := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(t.Context(), args, strings.NewReader(""), &out, &errOut, func(k string) string { return cliEnv[k] })
		return out.String(), errOut.String(), code
	}
	out, errOut, code := cli("sources", "get", "gh-in")
	if code != 0 || !strings.Contains(out, "managed:") || strings.Contains(out, "s3cret") || !strings.Contains(out, "POST /v1/inbound/gh-in") {
		t.Fatalf("sources get gh-in: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := cli("sources", "pause", "gh-in"); code != 1 || !strings.Contains(errOut, "conflict") {
		t.Fatalf("pausing a managed source: %d %q; want a conflict", code, errOut)
	}
	out, errOut, code = cli("sources", "create", "--kind", "webhook", "--topic", "hooks", "--config", `{"verify":"none"}`, "--output", "json")
	if code != 0 {
		t.Fatalf("sources create: %d %q %q", code, out, errOut)
	}
	var created struct{ ID string }
	_ = json.Unmarshal([]byte(out), &created)
	if out, errOut, code := cli("sources", "pause", created.ID); code != 0 || !strings.Contains(out, "paused") {
		t.Fatalf("sources pause: %d %q %q", code, out, errOut)
	}
	if out, _, code := cli("sources", "list"); code != 0 || !strings.Contains(out, created.ID) || !strings.Contains(out, "gh-in") {
		t.Fatalf("sources list: %d %q", code, out)
	}
	if _, errOut, code := cli("sources", "create", "--kind", "webhook", "--topic", "x", "--config", `{"verify":"bogus"}`); code != 1 || !strings.Contains(errOut, "config.verify") {
		t.Fatalf("a bad config: %d %q", code, errOut)
	}
	if out, _, code := cli("sources", "delete", created.ID); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("sources delete: %d %q", code, out)
	}

	// The secret came from the environment: GitHub signatures verify.
	body := []byte(`{"zen":"ok"}`)
	mac := hmac.New(sha256.New, []byte("s3cret-from-env"))
	mac.Write(body)
	if status, p, _ := call(t, m, "", "POST", "/v1/inbound/gh-in", body, "X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)),
		"X-GitHub-Event", "ping", "X-GitHub-Delivery", "1"); status != 404 || p["field"] != "topic" {
		// Topics are not auto-created here: the publish rules apply.
		t.Fatalf("inbound to a missing topic: %d %v; want 404 naming the topic", status, p)
	}
	if _, _, err := adminClient(m).PutTopic(t.Context(), "gh.ping", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	if status, p, _ := call(t, m, "", "POST", "/v1/inbound/gh-in", body, "X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)),
		"X-GitHub-Event", "ping", "X-GitHub-Delivery", "1"); status != 202 {
		t.Fatalf("inbound: %d %v", status, p)
	}
	m.Close(context.Background())

	// Out of the file, out of the store.
	if err := os.WriteFile(file, []byte(`{"sources": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := NewMain(io.Discard, stderr, func(k string) string { return env[k] })
	m2.Config = m.Config
	if err := m2.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer m2.Close(context.Background())
	if status, _, _ := call(t, m2, testAdminKey, "GET", "/v1/sources/gh-in", nil); status != 404 {
		t.Fatalf("a source removed from the file: %d; want 404", status)
	}
}

// TestSourcePrivateAddressRefused: unless the server allows private
// destinations, a source whose service is on a loopback or private address
// is refused, naming the config member, for every kind that dials out.
func TestSourcePrivateAddressRefused(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AllowPrivateDestinations = false })
	for _, tc := range []struct{ kind, config, field string }{
		{"kafka", `{"brokers": ["127.0.0.1:9092"], "topics": ["t"]}`, "config.brokers"},
		{"nats", `{"url": "nats://10.0.0.5:4222", "stream": "S"}`, "config.url"},
		{"amqp", `{"url": "amqp://guest:guest@localhost:5672/", "queue": "q"}`, "config.url"},
		{"mqtt", `{"url": "tcp://192.168.1.20:1883", "topics": ["a/#"]}`, "config.url"},
		{"redis", `{"address": "[::1]:6379", "streams": ["s"]}`, "config.address"},
		{"outbox", `{"dsn": "postgres://app:pw@169.254.169.254:5432/app"}`, "config.dsn"},
		{"outbox", `{"dsn": "app:pw@tcp(172.16.0.9:3306)/app", "driver": "mysql"}`, "config.dsn"},
	} {
		body := fmt.Appendf(nil, `{"kind": %q, "topic": "t", "config": %s}`, tc.kind, tc.config)
		status, p, _ := call(t, m, testAdminKey, "POST", "/v1/sources", body)
		if status != 400 || p["field"] != tc.field || !strings.Contains(fmt.Sprint(p["detail"]), "HERALD_ALLOW_PRIVATE_DESTINATIONS") {
			t.Errorf("%s %s: %d %v; want 400 naming %s", tc.kind, tc.config, status, p, tc.field)
		}
	}
	// A public name passes; what it resolves to is checked at every dial.
	status, p, _ := call(t, m, testAdminKey, "POST", "/v1/sources",
		[]byte(`{"kind": "redis", "topic": "t", "state": "paused", "config": {"address": "redis.example.com:6379", "streams": ["s"]}}`))
	if status != 201 {
		t.Fatalf("a public name: %d %v", status, p)
	}
}
