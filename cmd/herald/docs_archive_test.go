package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/heraldhq/herald/client"
)

// The examples of docs/archive.md run from the page itself against a real
// server, from creation to a query and a replay: the curl ones with sh, the
// CLI ones through the CLI. The page's dates (an hour of 2026-12-07) become
// the hour around the test's events, and the flush's max_age 5m becomes
// 200ms so the test does not wait five minutes for a file.

const archiveDoc = "../../docs/archive.md"

func TestDocsArchive(t *testing.T) {
	t.Parallel()
	archiveDir := t.TempDir()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.ArchiveDir = archiveDir })
	c := adminClient(m)
	ctx := t.Context()
	for _, topic := range []string{"logs.app", "logs.restored"} {
		if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	// logs.app has a schema: its Parquet files get typed payload columns.
	if _, err := c.PutSchema(ctx, "logs.app", json.RawMessage(`{"type": "json_schema", "schema": {"type": "object", "properties": {
		"environment": {"type": "string"}, "organization": {"type": "object", "properties": {"id": {"type": "string"}}},
		"log_type": {"type": "string"}, "msg": {"type": "string"}, "status": {"type": "integer"}}}}`)); err != nil {
		t.Fatal(err)
	}
	ex := docExamples(t, archiveDoc)
	for _, name := range []string{"archive-put", "archive-put-cli", "archives-cli", "archive-query", "archive-query-cli", "archive-replay", "archive-replay-cli"} {
		if ex[name] == "" {
			t.Fatalf("docs/archive.md has no example %s", name)
		}
	}
	const pageFrom, pageTo, pageAge = "2026-12-07T15:00:00Z", "2026-12-07T16:00:00Z", `"max_age": "5m"`
	now := time.Now().UTC()
	hour := strings.NewReplacer(pageFrom, now.Add(-time.Hour).Format(time.RFC3339), pageTo, now.Add(time.Hour).Format(time.RFC3339))
	for _, name := range []string{"archive-query", "archive-query-cli", "archive-replay", "archive-replay-cli"} {
		if !strings.Contains(ex[name], pageFrom) || !strings.Contains(ex[name], pageTo) {
			t.Fatalf("example %s no longer holds %s and %s", name, pageFrom, pageTo)
		}
	}
	if !strings.Contains(ex["archive-put"], pageAge) {
		t.Fatalf("example archive-put no longer holds %s", pageAge)
	}

	// Create the archive; events published before it are archived too
	// ("start": "earliest").
	publish := func(org, typ string, n int) {
		t.Helper()
		payload := fmt.Sprintf(`{"environment":"prod","organization":{"id":%q},"log_type":"app","msg":"line %d","status":%d}`, org, n, 200+n)
		if _, err := c.Publish(ctx, "logs.app", []byte(payload), client.PublishOptions{ContentType: "application/json", Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	publish("acme", "log.line", 0)
	out := runDocScript(t, m, strings.Replace(ex["archive-put"], pageAge, `"max_age": "200ms"`, 1))
	var a struct {
		Name, Format, State string
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.Name != "logs" || a.Format != "parquet" || a.State != "active" {
		t.Fatalf("the PUT example answered %s (%v)", out, err)
	}
	publish("globex", "log.line", 1)
	publish("acme", "audit.login", 2) // not a log.* type: the filter keeps it out
	publish("acme", "log.line", 3)

	// The query example, once the three log.* events are written: acme's.
	deadline := time.Now().Add(60 * time.Second)
	var page struct {
		Events []struct {
			Seq       int64             `json:"seq"`
			Data      json.RawMessage   `json:"data"`
			Partition map[string]string `json:"partition"`
		} `json:"events"`
		NextCursor string `json:"next_cursor"`
	}
	for {
		out = runDocScript(t, m, hour.Replace(ex["archive-query"]))
		if err := json.Unmarshal([]byte(out), &page); err != nil {
			t.Fatalf("the query example printed %s: %v", out, err)
		}
		if len(page.Events) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the query example found %d events after 60s, want acme's 2: %s", len(page.Events), out)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition, with a deadline
	}
	want := map[string]string{"env": "prod", "org": "acme", "log_type": "app"}
	for i, e := range page.Events {
		if e.Seq != []int64{1, 4}[i] || fmt.Sprint(e.Partition) != fmt.Sprint(want) || !strings.Contains(string(e.Data), `"acme"`) {
			t.Errorf("query event %d: seq %d partition %v data %s", i, e.Seq, e.Partition, e.Data)
		}
	}
	out = runDocCLI(t, m, joinContinuations(ex["archive-query-cli"]), hour)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[0], `"seq":1`) || !strings.Contains(lines[1], `"seq":4`) {
		t.Errorf("the CLI query printed %q; want acme's two events", out)
	}

	// The files: Hive folders under logs/, Parquet with the typed payload
	// column of the topic's schema.
	files, _ := filepath.Glob(filepath.Join(archiveDir, "logs", "env=prod", "org=acme", "log_type=app", "year=*", "month=*", "day=*", "hour=*", "logs.app-*.parquet"))
	if len(files) == 0 {
		t.Fatalf("no Parquet file of acme under %s", archiveDir)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	f, err := parquet.OpenFile(strings.NewReader(string(data)), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if col, ok := f.Schema().Lookup("payload", "status"); !ok || col.Node.Type().Kind() != parquet.Int64 {
		t.Errorf("the file has no INT64 payload.status column (the topic's schema):\n%s", f.Schema())
	}

	// The CLI: put the same spec from a file (a replace: 200), and the
	// other verbs.
	_, spec, _ := strings.Cut(ex["archive-put"], "-d '")
	spec, _, _ = strings.Cut(spec, "'")
	specFile := filepath.Join(t.TempDir(), "logs-archive.json")
	if err := os.WriteFile(specFile, []byte(strings.Replace(spec, pageAge, `"max_age": "200ms"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runDocCLI(t, m, ex["archive-put-cli"], strings.NewReplacer("logs-archive.json", specFile)); !strings.Contains(out, "logs") {
		t.Errorf("herald archives put printed %q", out)
	}
	out = runDocCLI(t, m, ex["archives-cli"], strings.NewReplacer())
	for _, w := range []string{"logs", "paused", "active"} {
		if !strings.Contains(out, w) {
			t.Errorf("the archives CLI example printed no %q:\n%s", w, out)
		}
	}

	// Replay into logs.restored, then again through the CLI: duplicates.
	out = runDocScript(t, m, hour.Replace(ex["archive-replay"]))
	if strings.TrimSpace(out) != `{"published":3,"duplicates":0}` {
		t.Errorf("the replay example printed %q; want the 3 archived events published", out)
	}
	out = runDocCLI(t, m, joinContinuations(ex["archive-replay-cli"]), hour)
	if !strings.Contains(out, "3") || !strings.Contains(out, "duplicate") {
		t.Errorf("the CLI replay printed %q; want 3 duplicates", out)
	}
	if restored, err := c.ListEvents(ctx, "logs.restored", 0, 100); err != nil || len(restored.Events) != 3 {
		t.Errorf("logs.restored holds %+v (%v); want the 3 events once", restored, err)
	}
}

// joinContinuations joins a shell example's lines ending in a backslash.
func joinContinuations(block string) string {
	return strings.ReplaceAll(block, "\\\n", "")
}
