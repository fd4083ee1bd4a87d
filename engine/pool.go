package engine

import "time"

// goPool runs functions on long-lived goroutines. A function starts on an
// idle goroutine of the pool when one is waiting, else on a new one, which
// afterwards waits up to idle for more work before it exits. So the pool
// grows to the concurrency asked of it and shrinks when the load goes.
//
// Deliveries run here rather than on a fresh goroutine each: a new
// goroutine starts with a small stack and grows it through the HTTP
// client's deep calls on every delivery (stack copying was 5% of Herald's
// CPU in a fan-out profile); a reused one keeps its grown stack.
type goPool struct {
	work chan func() // unbuffered: a send succeeds only to a waiting goroutine
	idle time.Duration
}

func newGoPool(idle time.Duration) *goPool {
	return &goPool{work: make(chan func()), idle: idle}
}

// Go runs f on a goroutine of the pool. It does not wait for f.
func (p *goPool) Go(f func()) {
	select {
	case p.work <- f:
	default:
		go p.serve(f)
	}
}

func (p *goPool) serve(f func()) {
	var idle *time.Timer
	for {
		f()
		if idle == nil {
			idle = time.NewTimer(p.idle)
		} else {
			idle.Reset(p.idle)
		}
		select {
		case f = <-p.work:
		case <-idle.C:
			return
		}
	}
}
