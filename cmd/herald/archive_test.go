package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/engine"
)

// call sends a JSON request with the admin key and returns the status and
// body.
func archiveCall(t *testing.T, m *Main, method, path string, body any, header ...string) (int, []byte, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, m.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Trailer
}

type archivedEvent struct {
	ID        string            `json:"id"`
	Topic     string            `json:"topic"`
	Seq       int64             `json:"seq"`
	Data      json.RawMessage   `json:"data"`
	Partition map[string]string `json:"partition"`
}

type archivedPage struct {
	Events     []archivedEvent `json:"events"`
	NextCursor string          `json:"next_cursor"`
}

func queryArchive(t *testing.T, m *Main, name string, params url.Values) archivedPage {
	t.Helper()
	status, body, _ := archiveCall(t, m, "GET", "/v1/archives/"+name+"/events?"+params.Encode(), nil)
	if status != http.StatusOK {
		t.Fatalf("query: %d %s", status, body)
	}
	var p archivedPage
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("query: %v in %s", err, body)
	}
	return p
}

// waitArchived waits until the archive's query returns n events.
func waitArchived(t *testing.T, m *Main, name string, params url.Values, n int) archivedPage {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := queryArchive(t, m, name, params)
		if len(p.Events) == n {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("archive %s holds %d events, want %d", name, len(p.Events), n)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, with a deadline
	}
}

func TestArchiveEndToEnd(t *testing.T) {
	t.Parallel()
	dir, archiveDir := t.TempDir(), t.TempDir()
	configure := func(c *Config) { c.ArchiveDir = archiveDir }
	m, _ := testServer(t, dir, configure)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "logs.app", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	spec := map[string]any{
		"topics":      "logs.>",
		"partition":   []map[string]string{{"key": "org", "field": "org.id"}},
		"flush":       map[string]any{"max_events": 3, "max_age": "200ms"},
		"destination": map[string]any{"type": "local", "path": "main"},
		"start":       "earliest",
	}
	// Bad input names the field at fault.
	bad := map[string]any{"topics": "logs.>", "destination": map[string]any{"type": "local", "path": "../etc"}}
	if status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/logs", bad); status != http.StatusBadRequest || !strings.Contains(string(body), `"field":"destination.path"`) {
		t.Fatalf("PUT with a path outside the archive dir: %d %s", status, body)
	}
	if status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/Bad%20Name", spec); status != http.StatusBadRequest {
		t.Fatalf("PUT with a bad name: %d %s", status, body)
	}
	status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/logs", spec)
	if status != http.StatusCreated {
		t.Fatalf("PUT /v1/archives/logs: %d %s", status, body)
	}
	var a struct {
		Name, State, Format, Compression string
		SubscriptionID                   string `json:"subscription_id"`
	}
	if err := json.Unmarshal(body, &a); err != nil || a.Name != "logs" || a.State != "active" || a.Format != "jsonl" || a.Compression != "zstd" || !strings.HasPrefix(a.SubscriptionID, "sub_") {
		t.Fatalf("created archive: %+v, %v from %s", a, err, body)
	}
	if status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/logs", spec); status != http.StatusOK {
		t.Fatalf("PUT again: %d %s", status, body)
	}
	for i := range 5 {
		org := []string{"acme", "globex"}[i%2]
		if _, err := c.Publish(ctx, "logs.app", fmt.Appendf(nil, `{"org":{"id":%q},"n":%d}`, org, i), client.PublishOptions{ContentType: "application/json"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	rng := url.Values{"from": {now.Add(-time.Hour).Format(time.RFC3339)}, "to": {now.Add(time.Hour).Format(time.RFC3339)}}
	p := waitArchived(t, m, "logs", rng, 5)
	for i, e := range p.Events {
		if e.Seq != int64(i+1) || e.Topic != "logs.app" {
			t.Fatalf("event %d: %+v; want seq %d of logs.app, in order", i, e, i+1)
		}
	}
	// Partition pruning by key.
	acme := url.Values{"partition.org": {"acme"}}
	for k, v := range rng {
		acme[k] = v
	}
	if p := queryArchive(t, m, "logs", acme); len(p.Events) != 3 || p.Events[0].Partition["org"] != "acme" {
		t.Fatalf("acme's events: %+v", p.Events)
	}
	// Paging.
	page1 := queryArchive(t, m, "logs", url.Values{"from": rng["from"], "to": rng["to"], "limit": {"2"}})
	if len(page1.Events) != 2 || page1.NextCursor == "" {
		t.Fatalf("page 1: %+v", page1)
	}
	page2 := queryArchive(t, m, "logs", url.Values{"from": rng["from"], "to": rng["to"], "limit": {"10"}, "cursor": {page1.NextCursor}})
	if len(page2.Events) != 3 || page2.Events[0].Seq != 3 || page2.NextCursor != "" {
		t.Fatalf("page 2: %+v", page2)
	}
	// The CLI queries the same archive.
	env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"archive", "query", "logs", "--partition", "org=globex", "--from", rng.Get("from"), "--to", rng.Get("to")}, nil, &out, &errOut, func(k string) string { return env[k] })
	if code != 0 || strings.Count(out.String(), "\n") != 2 || !strings.Contains(out.String(), `"org":"globex"`) {
		t.Fatalf("herald archive query: %d %q %q", code, out.String(), errOut.String())
	}
	// NDJSON streams one event per line.
	status, body, _ = archiveCall(t, m, "GET", "/v1/archives/logs/events?"+rng.Encode(), nil, "Accept", "application/x-ndjson")
	if lines := strings.Count(string(body), "\n"); status != 200 || lines != 5 {
		t.Fatalf("NDJSON: %d, %d lines: %s", status, lines, body)
	}
	// The files are on disk, in Hive folders, with no temporary file left.
	var files []string
	_ = filepath.WalkDir(archiveDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, archiveDir))
		}
		return err
	})
	joined := strings.Join(files, "\n")
	if !strings.Contains(joined, "/main/org=acme/year=") || !strings.Contains(joined, ".jsonl.zst") || !strings.Contains(joined, "_manifest.json") || strings.Contains(joined, ".tmp") {
		t.Fatalf("files in the archive dir:\n%s", joined)
	}

	// Pause: nothing more is written; resume: it is.
	if status, body, _ := archiveCall(t, m, "POST", "/v1/archives/logs/pause", nil); status != 200 || !strings.Contains(string(body), `"state":"paused"`) {
		t.Fatalf("pause: %d %s", status, body)
	}
	if _, err := c.Publish(ctx, "logs.app", []byte(`{"org":{"id":"acme"},"n":5}`), client.PublishOptions{ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	if status, body, _ := archiveCall(t, m, "POST", "/v1/archives/logs/resume", nil); status != 200 || !strings.Contains(string(body), `"state":"active"`) {
		t.Fatalf("resume: %d %s", status, body)
	}
	waitArchived(t, m, "logs", rng, 6)

	// An archive is not a subscription callers write.
	if status, body, _ := archiveCall(t, m, "POST", "/v1/subscriptions", map[string]any{"topic": "logs.app", "channel": "archive", "config": map[string]any{"destination": map[string]any{"type": "local"}}}); status != 400 {
		t.Fatalf("POST /v1/subscriptions with the archive channel: %d %s", status, body)
	}

	// Replay into a new topic, with the original ids as idempotency keys:
	// a second replay publishes nothing new.
	if _, _, err := c.PutTopic(ctx, "logs.restored", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	replay := map[string]any{"from": rng.Get("from"), "to": rng.Get("to"), "topics": "logs.app", "topic": "logs.restored"}
	if status, body, _ := archiveCall(t, m, "POST", "/v1/archives/logs/replay", replay); status != 200 || string(body) != `{"published":6,"duplicates":0}`+"\n" {
		t.Fatalf("replay: %d %s", status, body)
	}
	if status, body, _ := archiveCall(t, m, "POST", "/v1/archives/logs/replay", replay); status != 200 || string(body) != `{"published":0,"duplicates":6}`+"\n" {
		t.Fatalf("replay again: %d %s", status, body)
	}
	restored, err := c.ListEvents(ctx, "logs.restored", 0, 100)
	if err != nil || len(restored.Events) != 6 || !jsonEqual(restored.Events[0].Payload, []byte(`{"org":{"id":"acme"},"n":0}`)) {
		t.Fatalf("restored events: %+v, %v", restored, err)
	}

	// A restart keeps the archive and its files; the archive goes on.
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m, _ = testServer(t, dir, configure)
	if status, body, _ := archiveCall(t, m, "GET", "/v1/archives/logs", nil); status != 200 || !strings.Contains(string(body), `"stats":{"lag":`) {
		t.Fatalf("GET after restart: %d %s", status, body)
	}
	waitArchived(t, m, "logs", rng, 6+6) // the restored topic matches logs.> too
	if status, body, _ := archiveCall(t, m, "GET", "/v1/archives", nil); status != 200 || !strings.Contains(string(body), `"name":"logs"`) {
		t.Fatalf("list: %d %s", status, body)
	}
	if status, body, _ := archiveCall(t, m, "DELETE", "/v1/archives/logs", nil); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	if status, _, _ := archiveCall(t, m, "GET", "/v1/archives/logs", nil); status != http.StatusNotFound {
		t.Fatalf("GET after delete: %d", status)
	}
}

func TestArchiveS3EndToEnd(t *testing.T) {
	t.Parallel()
	be := s3mem.New()
	if err := be.CreateBucket("herald-archive"); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(be, gofakes3.WithTimeSkewLimit(0)).Server())
	t.Cleanup(s3.Close)
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "audit", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	spec := map[string]any{
		"topics": "audit", "format": "parquet",
		"flush": map[string]any{"max_age": "100ms"},
		"destination": map[string]any{"type": "s3", "bucket": "herald-archive", "path": "prod", "endpoint": s3.URL, "region": "us-east-1",
			"path_style": true, "access_key_id": "AKIAHERALDTEST", "secret_access_key": "the-secret-key"},
	}
	status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/audit", spec)
	if status != http.StatusCreated || strings.Contains(string(body), "the-secret-key") || strings.Contains(string(body), "AKIAHERALDTEST") {
		t.Fatalf("PUT: %d %s (credentials are write-only)", status, body)
	}
	for i := range 3 {
		if _, err := c.Publish(ctx, "audit", fmt.Appendf(nil, `{"n":%d}`, i), client.PublishOptions{ContentType: "application/json"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	rng := url.Values{"from": {now.Add(-time.Hour).Format(time.RFC3339)}, "to": {now.Add(time.Hour).Format(time.RFC3339)}}
	p := waitArchived(t, m, "audit", rng, 3)
	if string(p.Events[2].Data) != `{"n":2}` {
		t.Fatalf("events: %+v", p.Events)
	}
	// An update that leaves the credentials out keeps them: writing goes on.
	delete(spec["destination"].(map[string]any), "access_key_id")
	delete(spec["destination"].(map[string]any), "secret_access_key")
	if status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/audit", spec); status != http.StatusOK {
		t.Fatalf("PUT without credentials: %d %s", status, body)
	}
	if _, err := c.Publish(ctx, "audit", []byte(`{"n":3}`), client.PublishOptions{ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	waitArchived(t, m, "audit", rng, 4)
	list, err := be.ListBucket("herald-archive", &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	parquet := 0
	for _, o := range list.Contents {
		if strings.HasPrefix(o.Key, "prod/year=") && strings.HasSuffix(o.Key, ".parquet") {
			parquet++
		}
	}
	if parquet == 0 {
		t.Fatalf("no Parquet object under prod/ in the bucket: %+v", list.Contents)
	}
}

// TestArchiveRetentionHold checks that an archive holds retention back
// through the real server: events a failing archive has not written stay
// however far past their retention the pruner runs; once written they go;
// a paused archive holds them only for its max_hold, after which they go
// and the archive counts the gap when it resumes. Deleting the archive's
// subscription through /v1/subscriptions is refused.
func TestArchiveRetentionHold(t *testing.T) {
	t.Parallel()
	dir, archiveDir := t.TempDir(), t.TempDir()
	configure := func(c *Config) { c.ArchiveDir = archiveDir }
	m, _ := testServer(t, dir, configure)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "held.app", client.TopicSettings{Retention: new(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	// The destination folder's name is taken by a file: every write fails
	// until the file goes.
	blocker := filepath.Join(archiveDir, "held")
	if err := os.WriteFile(blocker, []byte("not a folder"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := map[string]any{
		"topics":      "held.>",
		"flush":       map[string]any{"max_events": 100, "max_age": "100ms"},
		"destination": map[string]any{"type": "local", "path": "held"},
		"max_hold":    "1h",
		"start":       "earliest",
	}
	status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/held", spec)
	if status != http.StatusCreated || !strings.Contains(string(body), `"max_hold":"1h"`) {
		t.Fatalf("PUT /v1/archives/held: %d %s", status, body)
	}
	var a struct {
		SubscriptionID string `json:"subscription_id"`
	}
	_ = json.Unmarshal(body, &a)
	if status, body, _ := archiveCall(t, m, "PUT", "/v1/archives/other", map[string]any{"topics": "held.>", "destination": map[string]any{"type": "local"}, "max_hold": "400d"}); status != 400 || !strings.Contains(string(body), `"field":"max_hold"`) {
		t.Fatalf("PUT with max_hold over the limit: %d %s", status, body)
	}

	publish := func(n int) {
		for i := range n {
			if _, err := c.Publish(ctx, "held.app", fmt.Appendf(nil, `{"n":%d}`, i), client.PublishOptions{ContentType: "application/json"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	retained := func() int {
		page, err := c.ListEvents(ctx, "held.app", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Events)
	}
	// prune runs a retention pass as of the time (it also removes
	// idempotency keys, so only the events left are checked).
	prune := func(at time.Time) {
		if _, err := engine.NewPruner(m.store, engine.PrunerConfig{Now: func() time.Time { return at }}, nil, nil).Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	publish(3)
	waitCond(t, "the archive's writes failing", 20*time.Second, func() bool {
		return strings.Contains(metricsText(t, m), "herald_archive_write_failures_total ") && !strings.Contains(metricsText(t, m), "herald_archive_write_failures_total 0\n")
	})
	// A year on, the active archive still holds the three.
	prune(time.Now().Add(365 * 24 * time.Hour))
	if n := retained(); n != 3 {
		t.Fatalf("pruning past retention with a failing archive left %d events, want 3", n)
	}
	// The destination comes back: the retries write them, and then they go.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	rng := url.Values{"from": {now.Add(-time.Hour).Format(time.RFC3339)}, "to": {now.Add(time.Hour).Format(time.RFC3339)}}
	waitArchived(t, m, "held", rng, 3)
	waitCond(t, "the written events pruned", 20*time.Second, func() bool {
		prune(time.Now().Add(2 * time.Minute))
		return retained() == 0
	})

	// Paused, the archive holds new events for its max_hold past retention
	// (1m + 1h), not longer.
	if status, body, _ := archiveCall(t, m, "POST", "/v1/archives/held/pause", nil); status != 200 {
		t.Fatalf("pause: %d %s", status, body)
	}
	publish(2)
	at := time.Now()
	prune(at.Add(30 * time.Minute))
	if n := retained(); n != 2 {
		t.Fatalf("pruning inside a paused archive's hold left %d events, want 2", n)
	}
	prune(at.Add(time.Minute + time.Hour + time.Minute))
	if n := retained(); n != 0 {
		t.Fatalf("pruning past a paused archive's hold left %d events, want 0", n)
	}
	// A restart empties the cache of recent events, which would still
	// have the two.
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m, _ = testServer(t, dir, configure)
	c = adminClient(m)
	if status, body, _ := archiveCall(t, m, "POST", "/v1/archives/held/resume", nil); status != 200 {
		t.Fatalf("resume: %d %s", status, body)
	}
	publish(1)
	waitArchived(t, m, "held", rng, 4)
	if !strings.Contains(metricsText(t, m), "herald_retention_gap_events_total 2\n") {
		t.Fatalf("the gap of 2 pruned events is not counted:\n%s", grepLines(metricsText(t, m), "gap"))
	}

	// The archive's subscription is not deleted on its own.
	status, body, hdr := archiveCall(t, m, "DELETE", "/v1/subscriptions/"+a.SubscriptionID, nil)
	if status != http.StatusConflict || !strings.Contains(string(body), `"field":"id"`) || !strings.Contains(string(body), "archive held") {
		t.Fatalf("DELETE the archive's subscription: %d %v %s", status, hdr, body)
	}
	if status, _, _ := archiveCall(t, m, "GET", "/v1/archives/held", nil); status != 200 {
		t.Fatalf("the archive after a refused subscription delete: %d", status)
	}
}
