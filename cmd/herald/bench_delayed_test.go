package main

import (
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/bench"
)

// TestBenchDelayedSmoke runs the delayed-promotion benchmark against a
// real server, once with every event due at one instant and once with
// the due times spread, so the tool and the promotion path keep working:
// every event must join the log once, none before its due time. No timing
// thresholds: figures live in docs/benchmarks.md.
func TestBenchDelayedSmoke(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	for _, spread := range []time.Duration{0, 500 * time.Millisecond} {
		cfg := bench.DelayedDefaults()
		cfg.Server, cfg.Key = m.URL(), testAdminKey
		cfg.Events, cfg.Batch, cfg.Spread, cfg.Lead, cfg.Timeout = 3000, 500, spread, 3*time.Second, time.Minute
		rep, err := bench.RunDelayed(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Schedule.Calls != 3000 || rep.Schedule.Failed != 0 {
			t.Fatalf("spread %s: scheduled %+v, want 3000 and no failure", spread, rep.Schedule)
		}
		if rep.Promoted != 3000 || rep.Missing != 0 || rep.Duplicates != 0 || rep.Early != 0 {
			t.Fatalf("spread %s: promoted %d, missing %d, duplicates %d, early %d", spread, rep.Promoted, rep.Missing, rep.Duplicates, rep.Early)
		}
		if rep.Lateness.Count != 3000 || rep.PromoteRate <= 0 || rep.Lateness.Max < rep.Lateness.P99 {
			t.Fatalf("spread %s: lateness %+v, rate %g: want one sample per event", spread, rep.Lateness, rep.PromoteRate)
		}
		if len(rep.Problems()) != 0 {
			t.Fatalf("spread %s: problems %q", spread, rep.Problems())
		}
		if _, err := adminClient(m).GetTopic(t.Context(), rep.Topic); !isStatus(err, 404) {
			t.Errorf("topic %s after the run: %v; want it deleted", rep.Topic, err)
		}
		var b strings.Builder
		_ = rep.WriteText(&b)
		t.Log(b.String())
	}
}
