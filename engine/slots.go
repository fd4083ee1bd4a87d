package engine

import (
	"container/heap"
	"context"
	"slices"
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
// A subscription's waiting requests are served in the order they came.
// Taking a free slot costs a map lookup; handing one to a waiter, a heap
// operation, however many subscriptions wait. All methods are safe for
// concurrent use.
type slotPool struct {
	size, perSub, perDest int

	mu      sync.Mutex
	used    int
	waiting int    // requests waiting
	ticket  uint64 // order of arrival, for ties
	subs    map[string]*slotSub
	dests   map[string]*slotDest
	// ready holds the waiting subscriptions below both their caps, as far
	// as is known (a destination that filled up since is found out when
	// the subscription comes first; it then moves to the destination's
	// blocked). Subscriptions at their own cap are in no heap until one of
	// their slots comes back.
	ready slotHeap
}

// slotKey names who a slot is for.
type slotKey struct {
	sub  string // subscription id
	dest string // destination: see destination
}

// slotSub is a subscription that holds or waits for slots.
type slotSub struct {
	id    string
	held  int
	queue []*slotWaiter // its waiting requests, first come first
	in    *slotHeap     // the heap it is in (ready or a blocked), or nil
	index int           // its place there
}

// slotDest is a destination that slots are held for or waited for.
type slotDest struct {
	name string
	held int
	// blocked holds the waiting subscriptions whose first request goes
	// here and that only this destination's cap holds back.
	blocked slotHeap
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
		subs: make(map[string]*slotSub), dests: make(map[string]*slotDest),
	}
}

// subSlot is the slot key of a subscription's deliveries: its own share,
// and its destination's as its channel names it (channel.Destination),
// or a destination of its own when the channel names none.
func subSlot(id, dest string) slotKey {
	if dest == "" {
		dest = "sub:" + id
	}
	return slotKey{id, dest}
}

// acquire waits for a slot for key, or until ctx ends (its error). Every
// successful acquire must be followed by one release of the same key.
func (p *slotPool) acquire(ctx context.Context, key slotKey) error {
	p.mu.Lock()
	s, d := p.sub(key.sub), p.dest(key.dest)
	if len(s.queue) == 0 && p.used < p.size && s.held < p.perSub && d.held < p.perDest {
		p.take(s, d)
		p.mu.Unlock()
		return nil
	}
	p.ticket++
	w := &slotWaiter{dest: key.dest, ticket: p.ticket, ready: make(chan struct{})}
	s.queue = append(s.queue, w)
	p.waiting++
	if len(s.queue) == 1 {
		p.place(s)
		p.grant()
	}
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
	i := slices.Index(s.queue, w)
	if i == 0 {
		p.unplace(s) // its first request, by which it is ordered, goes
	}
	s.queue = slices.Delete(s.queue, i, i+1)
	p.waiting--
	if i == 0 {
		p.place(s)
		p.grant()
	}
	p.tidy(s, d)
	p.mu.Unlock()
	return ctx.Err()
}

// release returns a slot taken for key and hands it on, fairly.
func (p *slotPool) release(key slotKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, d := p.subs[key.sub], p.dests[key.dest]
	p.unplace(s)
	p.used--
	s.held--
	d.held--
	p.place(s) // below its cap again, or holding fewer
	if d.held == p.perDest-1 && d.blocked.Len() > 0 {
		// The destination has room again: its best waiting subscription
		// competes for the slot with the others.
		next := heap.Pop(&d.blocked).(*slotSub)
		heap.Push(&p.ready, next)
	}
	p.grant()
	p.tidy(s, d)
}

// stats returns the slots held and the requests waiting for one.
func (p *slotPool) stats() (used, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used, p.waiting
}

// grant hands free slots to waiting requests, each to the first request
// of the ready subscription that holds the fewest. Under mu.
func (p *slotPool) grant() {
	for p.used < p.size && p.ready.Len() > 0 {
		s := heap.Pop(&p.ready).(*slotSub)
		w := s.queue[0]
		// p.dest, not p.dests: tidy forgets a destination nothing is held
		// at or blocked on, though requests for it may still wait, behind
		// a full pool, in a ready subscription's queue.
		d := p.dest(w.dest)
		if d.held >= p.perDest {
			heap.Push(&d.blocked, s)
			continue
		}
		s.queue[0] = nil
		s.queue = s.queue[1:]
		p.waiting--
		p.take(s, d)
		w.granted = true
		close(w.ready)
		p.place(s)
	}
}

// place puts s where its state says: nowhere when it waits for nothing or
// is at its cap, in its destination's blocked when that is at its cap,
// else in ready. Under mu.
func (p *slotPool) place(s *slotSub) {
	p.unplace(s)
	if len(s.queue) == 0 || s.held >= p.perSub {
		return
	}
	if d := p.dest(s.queue[0].dest); d.held >= p.perDest {
		heap.Push(&d.blocked, s)
	} else {
		heap.Push(&p.ready, s)
	}
}

// unplace takes s out of the heap it is in, before what orders it
// changes. Under mu.
func (p *slotPool) unplace(s *slotSub) {
	if s.in != nil {
		heap.Remove(s.in, s.index)
	}
}

func (p *slotPool) take(s *slotSub, d *slotDest) {
	p.used++
	s.held++
	d.held++
}

func (p *slotPool) sub(id string) *slotSub {
	s := p.subs[id]
	if s == nil {
		s = &slotSub{id: id}
		p.subs[id] = s
	}
	return s
}

func (p *slotPool) dest(name string) *slotDest {
	d := p.dests[name]
	if d == nil {
		d = &slotDest{name: name}
		p.dests[name] = d
	}
	return d
}

// tidy forgets s and d once nothing is held or waited for there, so the
// maps do not keep every subscription and host ever seen. Under mu.
func (p *slotPool) tidy(s *slotSub, d *slotDest) {
	if s.held == 0 && len(s.queue) == 0 && s.in == nil {
		delete(p.subs, s.id)
	}
	if d.held == 0 && d.blocked.Len() == 0 {
		delete(p.dests, d.name)
	}
}

// slotHeap orders waiting subscriptions: fewest slots held first, then the
// one whose first request came first. It implements heap.Interface.
type slotHeap []*slotSub

func (h slotHeap) Len() int { return len(h) }

func (h slotHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if a.held != b.held {
		return a.held < b.held
	}
	return a.queue[0].ticket < b.queue[0].ticket
}

func (h slotHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *slotHeap) Push(x any) {
	s := x.(*slotSub)
	s.in, s.index = h, len(*h)
	*h = append(*h, s)
}

func (h *slotHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.in = nil
	return s
}
