package engine

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// Work given while every goroutine of the pool is busy starts at once on a
// new one: a delivery never waits behind another.
func TestGoPoolRunsConcurrently(t *testing.T) {
	p := newGoPool(time.Minute)
	const n = 50
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	done := make(chan struct{}, n)
	for range n {
		p.Go(func() {
			started.Done()
			release.Wait()
			done <- struct{}{}
		})
	}
	waitTimeout(t, &started, 5*time.Second, "all functions to start while none has finished")
	release.Done()
	for range n {
		<-done
	}
}

// Idle goroutines are reused for later work and exit after the idle time.
func TestGoPoolReusesAndShrinks(t *testing.T) {
	base := runtime.NumGoroutine()
	p := newGoPool(200 * time.Millisecond)
	ran := make(chan struct{})
	p.Go(func() { ran <- struct{}{} })
	<-ran
	// The goroutine that ran it is now idle and takes the next function.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var reused bool
		select {
		case p.work <- func() { ran <- struct{}{} }:
			reused = true
		default:
		}
		if reused {
			<-ran
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no idle goroutine took work within 5s")
		}
		runtime.Gosched()
	}
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, want %d once the pool is idle", runtime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitTimeout(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}
