package main

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/bench"
)

// TestBenchSmoke runs the bench tool against a real server for a few
// seconds, with injected endpoint failures and challenge verification, so
// the tool and the whole delivery path keep working. No timing thresholds:
// figures live in docs/benchmarks.md.
func TestBenchSmoke(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), nil)
	cfg := bench.Defaults()
	cfg.Server, cfg.Key = m.URL(), testAdminKey
	cfg.Events, cfg.Workers, cfg.Subscriptions = 500, 8, 2
	cfg.Verification = "challenge"
	cfg.FailRate = 0.1
	cfg.Timeout = 60 * time.Second
	rep, err := bench.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := rep.Herald
	if h == nil || h.Published != 500 || h.Lost != 0 || h.Rejected != 0 || h.Delivered != 1000 {
		t.Fatalf("bench against herald: %+v", h)
	}
	t.Log(rep.Summary())
}
