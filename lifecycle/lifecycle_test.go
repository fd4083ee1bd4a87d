package lifecycle_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/lifecycle"
)

func TestRunner(t *testing.T) {
	t.Parallel()
	var r lifecycle.Runner
	if stopped, err := r.Stop(t.Context()); stopped || err != nil {
		t.Fatalf("Stop before Start = %v, %v; want false, nil", stopped, err)
	}

	var r2 lifecycle.Runner
	parent, cancelParent := context.WithCancel(t.Context())
	var running, exited atomic.Int32
	loop := func(ctx context.Context) {
		running.Add(1)
		<-ctx.Done()
		exited.Add(1)
	}
	if err := r2.Start(parent, "part", loop, loop); err != nil {
		t.Fatal(err)
	}
	if err := r2.Start(parent, "part", loop); err == nil {
		t.Error("a second Start succeeded")
	}
	if !r2.Go(loop) {
		t.Error("Go while running refused")
	}
	cancelParent() // the goroutines outlive the cancellation of Start's context
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if running.Load() != 3 || exited.Load() != 0 {
		t.Fatalf("%d running, %d exited after Start's context was cancelled; want 3 and 0", running.Load(), exited.Load())
	}
	stopped, err := r2.Stop(t.Context())
	if !stopped || err != nil || exited.Load() != 3 {
		t.Fatalf("Stop = %v, %v with %d exited; want true, nil and all 3", stopped, err, exited.Load())
	}
	if stopped, err := r2.Stop(t.Context()); stopped || err != nil {
		t.Errorf("a second Stop = %v, %v; want false, nil", stopped, err)
	}
	if r2.Go(loop) {
		t.Error("Go after Stop ran")
	}
	if err := r2.Start(t.Context(), "part", loop); err == nil {
		t.Error("Start after Stop succeeded")
	}

	// A goroutine that does not return makes Stop give up at its deadline.
	var r3 lifecycle.Runner
	release := make(chan struct{})
	defer close(release)
	if err := r3.Start(t.Context(), "part", func(context.Context) { <-release }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := r3.Stop(ctx); err != context.DeadlineExceeded {
		t.Errorf("Stop of a stuck goroutine = %v, want the deadline", err)
	}
}
