// Package lifecycle gives Herald's long-lived parts (the committer, the
// dispatcher, the pruner, the stream hub, cluster membership) one shape
// for starting and stopping, as STYLE.md asks: a Runner owns a part's
// goroutines, starts them once, and stops them by cancelling their context
// and waiting for every one to return.
//
// The rules are the same for every part: Start may be called once (a
// second Start, or a Start after Stop, is an error); Stop is idempotent,
// safe before Start, and returns only when the goroutines have exited, or
// with ctx's error when ctx ends first.
package lifecycle

import (
	"context"
	"fmt"
	"sync"
)

type state int

const (
	stateNew state = iota
	stateRunning
	stateStopped
)

// Runner owns the goroutines of one part. Its zero value is ready to use;
// it must not be copied after first use. All methods are safe for
// concurrent use.
type Runner struct {
	mu     sync.Mutex
	state  state
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start marks the part started and runs each fn on a goroutine of its own.
// Their context keeps ctx's values but not its cancellation: it ends when
// Stop is called. name names the part in the error of a second Start.
func (r *Runner) Start(ctx context.Context, name string, fns ...func(ctx context.Context)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.canStart(name); err != nil {
		return err
	}
	r.state = stateRunning
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for _, fn := range fns {
		r.wg.Go(func() { fn(r.ctx) })
	}
	return nil
}

// CanStart returns the error Start would return now, so a part can check
// before the steps it takes ahead of Start (joining a cluster, say).
func (r *Runner) CanStart(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.canStart(name)
}

func (r *Runner) canStart(name string) error {
	switch r.state {
	case stateRunning:
		return fmt.Errorf("%s: already started", name)
	case stateStopped:
		return fmt.Errorf("%s: started after Stop", name)
	}
	return nil
}

// Go runs fn on a goroutine the Runner owns, under the running context, so
// Stop waits for it too: the goroutines a part starts while it runs (a
// worker, a verification). It returns false, and runs nothing, when the
// part is not running.
func (r *Runner) Go(fn func(ctx context.Context)) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != stateRunning {
		return false
	}
	r.wg.Go(func() { fn(r.ctx) })
	return true
}

// Context returns the context the goroutines run under: nil before Start,
// done once Stop is called.
func (r *Runner) Context() context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ctx
}

// Running reports whether Start was called and Stop was not.
func (r *Runner) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state == stateRunning
}

// Stop cancels the goroutines' context and waits until every goroutine
// has returned, or ctx ends (its error; they go on ending in the
// background). It reports whether this call stopped a running part, so a
// part can do its own last steps once. Idempotent; safe before Start.
func (r *Runner) Stop(ctx context.Context) (stopped bool, err error) {
	r.mu.Lock()
	stopped = r.state == stateRunning
	if r.cancel != nil {
		r.cancel()
	}
	r.state = stateStopped
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return stopped, nil
	case <-ctx.Done():
		return stopped, ctx.Err()
	}
}
