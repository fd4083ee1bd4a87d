package channel

import "sync"

// Pool shares one client (a broker connection, a producer) per
// destination among the Sinks that deliver there, counted by reference:
// the first Acquire of a key opens the client, the release of the last
// reference closes it. It is safe for concurrent use.
//
// The key must tell apart everything that makes two clients differ (the
// addresses and the credentials), so Sinks of different callers never
// share a login.
type Pool[C any] struct {
	close func(C)
	mu    sync.Mutex
	m     map[string]*pooled[C]
}

type pooled[C any] struct {
	client C
	refs   int
}

// NewPool returns an empty pool that closes a client with close once its
// last user released it.
func NewPool[C any](close func(C)) *Pool[C] {
	return &Pool[C]{close: close, m: map[string]*pooled[C]{}}
}

// Acquire returns the client of key, opening it with open when there is
// none, and the func that releases this reference (call it once). open
// runs under the pool's lock, so it must not wait for the remote service:
// it should return a client that connects in the background, as
// Channel.Open must not wait either.
func (p *Pool[C]) Acquire(key string, open func() (C, error)) (C, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.m[key]
	if !ok {
		c, err := open()
		if err != nil {
			var zero C
			return zero, nil, err
		}
		e = &pooled[C]{client: c}
		p.m[key] = e
	}
	e.refs++
	var once sync.Once
	return e.client, func() { once.Do(func() { p.release(key, e) }) }, nil
}

func (p *Pool[C]) release(key string, e *pooled[C]) {
	p.mu.Lock()
	e.refs--
	last := e.refs == 0
	if last && p.m[key] == e {
		delete(p.m, key)
	}
	p.mu.Unlock()
	if last {
		p.close(e.client) // outside the lock: closing may flush to the service
	}
}

// Count returns how many of the clients the pool holds open are up: the
// value of a channel's connections gauge.
func (p *Pool[C]) Count(up func(C) bool) float64 {
	n := 0
	for _, c := range p.Clients() {
		if up(c) {
			n++
		}
	}
	return float64(n)
}

// Clients returns the clients the pool holds open, for metrics.
func (p *Pool[C]) Clients() []C {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]C, 0, len(p.m))
	for _, e := range p.m {
		out = append(out, e.client)
	}
	return out
}
