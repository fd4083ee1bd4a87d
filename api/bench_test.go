package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
)

// BenchmarkPublish measures single-event publishes through the whole API
// handler (request id, metrics, auth, the publish handler, the committer
// and a real SQLite store), called in process by 32 goroutines as the
// bench's 32 clients do, without the network. Beside the wall time it
// reports cpu-ns/op, the process's CPU time per publish: on a machine
// shared with other work that figure moves far less than the wall time,
// and CPU per event is what bounds the publish-and-deliver path (issue 20).
// The logger is at Warn, as a production server's.
func BenchmarkPublish(b *testing.B) {
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "herald.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	committer := engine.NewCommitter(st, engine.CommitterConfig{}, logger, reg)
	if err := committer.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = committer.Stop(ctx)
	}()
	admin, hash := herald.NewKeySecret()
	topics := engine.NewTopics(st, engine.TopicsConfig{})
	s := New(Config{AdminKeyHash: hash}, Deps{
		Store:     st,
		Topics:    topics,
		Publisher: engine.NewPublisher(topics, committer, engine.PublisherConfig{AutoCreateTopics: true}, logger, reg),
		Notices:   engine.NewFeed(),
		Logger:    logger,
		Registry:  reg,
	})
	s.SetReady(true)
	h := s.Handler()
	payload := []byte(`{"order":"` + strings.Repeat("x", 186) + `"}`) // 200 bytes, as herald bench
	publish := func() int {
		r := httptest.NewRequest(http.MethodPost, "/v1/topics/bench.orders/events", bytes.NewReader(payload))
		r.Header.Set("Authorization", "Bearer "+admin)
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if code := publish(); code != http.StatusCreated { // creates the topic
		b.Fatalf("publish: %d", code)
	}
	// parallel is the bench's load, 32 clients; serial is one client, one
	// event per commit: slower, but its work per publish does not depend
	// on how the goroutines happened to be scheduled, so instruction
	// counts (valgrind --tool=callgrind) repeat from run to run.
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(16) // 32 goroutines on 2 cores
		measure(b, reg, func() {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if code := publish(); code != http.StatusCreated {
						b.Errorf("publish: %d", code)
						return
					}
				}
			})
		})
	})
	b.Run("serial", func(b *testing.B) {
		measure(b, reg, func() {
			for b.Loop() {
				if code := publish(); code != http.StatusCreated {
					b.Fatalf("publish: %d", code)
				}
			}
		})
	})
}

// measure runs the loop and reports, beside allocations, the process's CPU
// time and the committer's events per transaction.
func measure(b *testing.B, reg *prometheus.Registry, loop func()) {
	b.ReportAllocs()
	cpu0, commits0 := cpuTime(), commits(b, reg)
	b.ResetTimer()
	loop()
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	if n := commits(b, reg) - commits0; n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "events/commit")
	}
}

// commits returns how many store transactions the committer made.
func commits(b *testing.B, reg *prometheus.Registry) uint64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "herald_commit_batch_events" && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
