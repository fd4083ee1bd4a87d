package engine

import (
	"context"
	"net/url"
	"strings"
	"sync"
)

// DefaultMaxConcurrency is how many deliveries a node has in flight at
// most, over all subscriptions, unless DispatcherConfig.MaxConcurrency says
// otherwise.
const DefaultMaxConcurrency = 256

// slotPool is the node's pool of send slots: a delivery (or a verification
// challenge) holds one while its request is out, so the pool bounds the
// requests in flight on the node. It is the engine's, not a channel's:
// every kind of destination shares it.
//
// It is fair in two ways, so that an endpoint that hangs cannot starve the
// others:
//
//   - caps: one subscription holds at most perSub slots and one destination
//     (a host, which many subscriptions may share) at most perDest, both
//     below the size of the pool, so hung requests never hold all of it;
//   - reclaiming: when the pool is full, a freed slot goes to the waiting
//     subscription that holds the fewest (the longest waiting of those on a
//     tie), so a subscription that waits gets its share back from those
//     holding more as their requests end.
//
// Waiting for a slot is not part of an attempt: the worker starts the
// attempt, its timeout and its latency only once it holds a slot, and a
// send that gives up waiting (its worker stopping) is no attempt at all.
//
// A subscription's waiting requests are served in the order they came. All
// methods are safe for concurrent use.
type slotPool struct {
	size, perSub, perDest int

	mu      sync.Mutex
	used    int
	subs    map[string]int           // slots held, per subscription
	dests   map[string]int           // slots held, per destination
	queues  map[string][]*slotWaiter // waiting requests, per subscription
	waiting int                      // requests in queues
	ticket  uint64                   // order of arrival, for ties
}

// slotKey names who a slot is for.
type slotKey struct {
	sub  string // subscription id
	dest string // destination: see destination
}

type slotWaiter struct {
	dest    string
	ticket  uint64
	ready   chan struct{} // closed once granted
	granted bool          // under the pool's mutex
}

// newSlotPool returns a pool of size slots (at least 1), of which one
// subscription may hold a quarter and one destination a half (at least 1
// each).
func newSlotPool(size int) *slotPool {
	size = max(size, 1)
	return &slotPool{
		size: size, perSub: max(1, size/4), perDest: max(1, size/2),
		subs: make(map[string]int), dests: make(map[string]int), queues: make(map[string][]*slotWaiter),
	}
}

// destination names where a subscription's requests go, for the pool's
// per-destination cap: a webhook URL's host and port. Subscriptions of
// other kinds of channel will name their own (a broker's cluster, a mail
// relay); until then anything else is its own destination.
func destination(sub string, rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		return strings.ToLower(u.Host)
	}
	return "sub:" + sub
}

// acquire waits for a slot for key, or until ctx ends (its error). Every
// successful acquire must be followed by one release of the same key.
func (p *slotPool) acquire(ctx context.Context, key slotKey) error {
	p.mu.Lock()
	if len(p.queues[key.sub]) == 0 && p.free(key.sub, key.dest) {
		p.take(key.sub, key.dest)
		p.mu.Unlock()
		return nil
	}
	p.ticket++
	w := &slotWaiter{dest: key.dest, ticket: p.ticket, ready: make(chan struct{})}
	p.queues[key.sub] = append(p.queues[key.sub], w)
	p.waiting++
	p.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	if w.granted { // granted as ctx ended: give it on
		p.mu.Unlock()
		p.release(key)
		return ctx.Err()
	}
	q := p.queues[key.sub]
	for i, x := range q {
		if x == w {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(p.queues, key.sub)
	} else {
		p.queues[key.sub] = q
	}
	p.waiting--
	p.mu.Unlock()
	return ctx.Err()
}

// release returns a slot taken for key and hands it on, fairly.
func (p *slotPool) release(key slotKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used--
	if p.subs[key.sub]--; p.subs[key.sub] <= 0 {
		delete(p.subs, key.sub)
	}
	if p.dests[key.dest]--; p.dests[key.dest] <= 0 {
		delete(p.dests, key.dest)
	}
	p.grant()
}

// free reports whether sub may take a slot for dest now. Under mu.
func (p *slotPool) free(sub, dest string) bool {
	return p.used < p.size && p.subs[sub] < p.perSub && p.dests[dest] < p.perDest
}

// take counts a slot as held by sub for dest. Under mu.
func (p *slotPool) take(sub, dest string) {
	p.used++
	p.subs[sub]++
	p.dests[dest]++
}

// grant hands free slots to waiting requests: each time to the head of the
// queue of the subscription that holds the fewest slots among those whose
// caps let them take one, the longest waiting on a tie. Under mu.
func (p *slotPool) grant() {
	for p.used < p.size && p.waiting > 0 {
		best := ""
		var head *slotWaiter
		for sub, q := range p.queues {
			w := q[0]
			if !p.free(sub, w.dest) {
				continue
			}
			if head == nil || p.subs[sub] < p.subs[best] || p.subs[sub] == p.subs[best] && w.ticket < head.ticket {
				best, head = sub, w
			}
		}
		if head == nil {
			return // every waiter is at a cap
		}
		q := p.queues[best]
		q[0] = nil
		if q = q[1:]; len(q) == 0 {
			delete(p.queues, best)
		} else {
			p.queues[best] = q
		}
		p.waiting--
		p.take(best, head.dest)
		head.granted = true
		close(head.ready)
	}
}

// stats returns the slots held and the requests waiting for one.
func (p *slotPool) stats() (used, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used, p.waiting
}
