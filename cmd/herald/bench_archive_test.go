package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/heraldhq/herald/bench"
)

// TestBenchArchiveSmoke runs the archive benchmark both ways, so the tool
// keeps working: generating files through the CLI (every event written,
// bytes counted, every query finding its organization's hour), and
// draining a real server's archive (every published event archived,
// queried over HTTP, topic and archive removed). No timing thresholds:
// figures live in docs/benchmarks.md.
func TestBenchArchiveSmoke(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	dir := t.TempDir()
	if code := run(t.Context(), []string{"bench", "archive", "--dir", dir, "--events", "3000", "--orgs", "5", "--hours", "3", "--batch", "1000", "--queries", "4", "--json", "--quiet"},
		nil, &out, &errOut, func(string) string { return "" }); code != exitOK {
		t.Fatalf("herald bench archive --dir: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	var gen bench.ArchiveReport
	if err := json.Unmarshal(out.Bytes(), &gen); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
	if gen.Mode != "generate" || gen.Events != 3000 || gen.Files < 15 || gen.BytesPerEvent <= 0 || gen.Query.Count != 4 || gen.WriteRate <= 0 || len(gen.Errors) != 0 {
		t.Fatalf("generated: %+v", gen)
	}

	m, _ := testServer(t, t.TempDir(), nil)
	cfg := bench.ArchiveDefaults()
	cfg.Server, cfg.Key = m.URL(), testAdminKey
	cfg.Events, cfg.Orgs, cfg.Queries = 2000, 4, 3
	rep, err := bench.RunArchive(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "server" || rep.Events != 2000 || rep.Files == 0 || rep.Bytes == 0 || rep.Query.Count != 3 || len(rep.Problems()) != 0 {
		t.Fatalf("server: %+v", rep)
	}
	if body, err := adminClient(m).ListArchives(t.Context(), ""); err != nil || strings.Contains(string(body), "bench-archive") {
		t.Errorf("archives after the run: %s (%v); want the bench's deleted", body, err)
	}
	var b strings.Builder
	_ = rep.WriteText(&b)
	t.Log(b.String())
}
