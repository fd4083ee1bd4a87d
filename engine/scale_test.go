package engine_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/webhook"
)

// TestScaleParkedMemory measures the heap that parked subscriptions keep
// (issue 21). It runs only when HERALD_SCALE_SUBS names how many; with
// HERALD_SCALE_HEAP it writes a heap profile there.
//
//	HERALD_SCALE_SUBS=20000 go test -run TestScaleParkedMemory -v ./engine/
func TestScaleParkedMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("HERALD_SCALE_SUBS"))
	if n <= 0 {
		t.Skip("set HERALD_SCALE_SUBS to run")
	}
	path := dbPath(t)
	if dsn := os.Getenv("HERALD_SCALE_POSTGRES"); dsn != "" {
		path = dsn
	}
	e := startEnv(t, path, func(c *engine.DispatcherConfig) {
		c.PollInterval = time.Second
		c.LeaseTTL = 10 * time.Second
		c.ColdAfter = 100 * time.Millisecond
	})
	r := newReceiver(t, nil)
	r.secret = webhook.NewSecret()
	e.topic("scale")
	cfg := webhook.Config{URL: r.URL, Secret: r.secret}.Encode()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	now := time.Now().UTC()
	for i := range n {
		s := herald.Subscription{ID: fmt.Sprintf("sub_scale_%06d", i), Topic: "scale", Config: cfg, State: herald.StateActive,
			Retry: herald.RetryPolicy{MaxAttempts: 6, Initial: time.Second, Max: time.Minute}, Timeout: 3 * time.Second, MaxInFlight: 8,
			CreatedAt: now, UpdatedAt: now, LastActivityAt: now}
		if err := e.store.CreateSubscription(context.Background(), s, herald.StartPosition{Earliest: true}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stored %d subscriptions in %s", n, time.Since(start))
	start = time.Now()
	e.dispatcher.Rebalance()
	waitFor(t, "every subscription dispatched", 10*time.Minute, func() bool { return e.dispatcher.Dispatching() == n })
	waitFor(t, "every worker parked", 10*time.Minute, func() bool { return e.dispatcher.Running() == 0 })
	waitFor(t, "every worker cold", 10*time.Minute, func() bool { return e.dispatcher.Cold() == n })
	t.Logf("dispatching and parked %s after", time.Since(start))
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	t.Logf("parked: heap in use %d B per subscription (%d MiB for %d); goroutines %d",
		(int64(after.HeapInuse)-int64(before.HeapInuse))/int64(n), (after.HeapInuse-before.HeapInuse)>>20, n, runtime.NumGoroutine())
	if p := os.Getenv("HERALD_SCALE_HEAP"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		_ = pprof.WriteHeapProfile(f)
		f.Close()
	}
}
