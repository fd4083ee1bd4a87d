package main

import (
	"testing"

	"github.com/heraldhq/herald/bench"
)

// TestBenchRulesSmoke runs the rules benchmark against a real server with
// a small backlog, so the tool keeps working: both processors drain it,
// every read answers, and what it made is gone. No timing thresholds:
// figures live in docs/benchmarks.md.
func TestBenchRulesSmoke(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	cfg := bench.RulesDefaults()
	cfg.Server, cfg.Key = m.URL(), testAdminKey
	cfg.Keys, cfg.Events, cfg.Batch, cfg.Reads, cfg.ReadRate, cfg.Readers = 50, 1200, 100, 200, 2000, 4
	rep, err := bench.RunRules(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems()) > 0 {
		t.Fatalf("problems: %q", rep.Problems())
	}
	if rep.Rule.EventsPerSec <= 0 || rep.View.EventsPerSec <= 0 || rep.Reads.Latency.Count != 200 || rep.Reads.Failed != 0 {
		t.Fatalf("report %+v", rep)
	}
	raw, err := adminClient(m).ListProcessors(t.Context(), "rule", "")
	if err != nil || string(raw) != `{"items":[]}`+"\n" && string(raw) != `{"items":[]}` {
		t.Fatalf("rules left after the run: %s, %v", raw, err)
	}
}
