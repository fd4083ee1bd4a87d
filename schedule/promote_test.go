package schedule_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/schedule"
	"github.com/heraldhq/herald/store/sqlite"
)

// TestPromoteInDueOrder schedules events out of order on a real SQLite
// store and promotes them: they join the log in due order, with their
// ids, once; and promoting again finds nothing.
//
// With HERALD_BENCH_DELAYED=N it schedules N events due at one moment
// and reports how fast they are promoted and how late.
func TestPromoteInDueOrder(t *testing.T) {
	t.Parallel()
	n := 500
	bench := false
	if v, err := strconv.Atoi(os.Getenv("HERALD_BENCH_DELAYED")); err == nil && v > 0 {
		n, bench = v, true
	}
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "h.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, _, err := st.PutTopic(ctx, herald.Topic{Name: "later"}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	com := engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	if err := com.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = com.Stop(ctx) })
	pub := engine.NewPublisher(engine.NewTopics(st, engine.TopicsConfig{}), com, engine.PublisherConfig{Delayed: st}, nil, nil)

	now := time.Now().UTC()
	due := now.Add(time.Hour)
	var ids []string
	for start := 0; start < n; start += 1000 {
		var evs []*herald.Event
		var dues []time.Time
		for i := start; i < min(n, start+1000); i++ {
			evs = append(evs, &herald.Event{Topic: "later", Payload: []byte(`{"n":` + strconv.Itoa(i) + `}`), ContentType: "application/json"})
			d := due
			if !bench {
				d = due.Add(-time.Duration(i%7) * time.Second) // out of order
			}
			dues = append(dues, d)
		}
		res, err := pub.Publish(ctx, engine.PublishParams{Events: evs, DeliverAt: dues})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			ids = append(ids, r.ID)
		}
	}
	clock := due
	p := schedule.NewPromoter(st, pub, schedule.PromoterConfig{NodeID: "n1", Now: func() time.Time { return clock }}, nil, nil)
	start, cpu0 := time.Now(), processCPU()
	if _, err := p.PromoteDue(ctx); err != nil {
		t.Fatal(err)
	}
	took, cpu := time.Since(start), processCPU()-cpu0
	if bench {
		t.Logf("promoted %d events in %s: %.0f events/s, %.1f µs of CPU per event", n, took, float64(n)/took.Seconds(),
			float64(cpu.Microseconds())/float64(n))
	}
	events, err := st.ReadEvents(ctx, "later", 0, n+1)
	if err != nil || len(events) != n {
		t.Fatalf("log holds %d events, %v; want %d", len(events), err, n)
	}
	if left, _ := st.CountScheduled(ctx); left != 0 {
		t.Fatalf("%d still pending", left)
	}
	got := make([]string, len(events))
	for i, e := range events {
		got[i] = e.ID
	}
	if !bench {
		// Due order: by due time, then scheduling order.
		want := slices.Clone(ids)
		slices.SortStableFunc(want, func(a, b string) int {
			ia, ib := slices.Index(ids, a), slices.Index(ids, b)
			return -(ia%7 - ib%7)
		})
		if !slices.Equal(got, want) {
			t.Fatalf("log order differs from due order")
		}
	}
	if _, err := p.PromoteDue(ctx); err != nil {
		t.Fatal(err)
	}
	if again, _ := st.ReadEvents(ctx, "later", int64(n), 10); len(again) != 0 {
		t.Fatalf("a second promotion published %d more", len(again))
	}
}

// processCPU is the CPU time (user and system) the test process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
