package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// take acquires a slot for key in the background and returns a channel
// that is closed once it has one.
func take(t *testing.T, p *slotPool, key slotKey) <-chan struct{} {
	t.Helper()
	got := make(chan struct{})
	go func() {
		if err := p.acquire(context.Background(), key); err != nil {
			t.Errorf("acquire %v: %v", key, err)
			return
		}
		close(got)
	}()
	return got
}

func mustTake(t *testing.T, p *slotPool, key slotKey) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.acquire(ctx, key); err != nil {
		t.Fatalf("acquire %v with slots free: %v", key, err)
	}
}

// waitWaiting waits until n requests wait for a slot.
func waitWaiting(t *testing.T, p *slotPool, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, w := p.stats(); w == n {
			return
		}
		if time.Now().After(deadline) {
			_, w := p.stats()
			t.Fatalf("%d requests wait for a slot, want %d", w, n)
		}
		time.Sleep(time.Millisecond) // polling a counter under a deadline
	}
}

func granted(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// No subscription may hold more than a quarter of the pool, and no
// destination more than half, however much it asks for: the rest stays
// free for the others.
func TestSlotPoolCapsASubscriptionAndADestination(t *testing.T) {
	p := newSlotPool(8) // 2 per subscription, 4 per destination
	hung := slotKey{"sub_hung", "hung.example:443"}
	mustTake(t, p, hung)
	mustTake(t, p, hung)
	third := take(t, p, hung)
	waitWaiting(t, p, 1)

	// Another subscription of the same host gets the host's other half...
	other := slotKey{"sub_other", "hung.example:443"}
	mustTake(t, p, other)
	mustTake(t, p, other)
	// ... but a third one on that host waits, while another host is served.
	sameHost := take(t, p, slotKey{"sub_third", "hung.example:443"})
	waitWaiting(t, p, 2)
	mustTake(t, p, slotKey{"sub_elsewhere", "ok.example:443"})
	if used, _ := p.stats(); used != 5 {
		t.Fatalf("%d slots held, want 5", used)
	}
	if granted(third) || granted(sameHost) {
		t.Fatal("a request over its cap got a slot")
	}
	// A slot of the host freed: the subscription holding none gets it.
	p.release(other)
	<-sameHost
	if granted(third) {
		t.Fatal("the capped subscription got a slot it was not due")
	}
	p.release(hung)
	<-third
}

// When the pool is full, a freed slot goes to the waiting subscription that
// holds the fewest, not to the one that asked first: waiting subscriptions
// take their share back as the requests of those holding more end.
func TestSlotPoolGivesFreedSlotsToWhoHoldsFewest(t *testing.T) {
	p := newSlotPool(8) // 2 per subscription, 4 per destination
	keys := make([]slotKey, 4)
	for i := range keys {
		keys[i] = slotKey{fmt.Sprintf("sub_%d", i), fmt.Sprintf("host%d:80", i)}
		mustTake(t, p, keys[i])
		mustTake(t, p, keys[i])
	}
	// Full. sub_0 asks first for more (it is at its cap), then a fresh
	// subscription.
	more := take(t, p, keys[0])
	waitWaiting(t, p, 1)
	fresh := take(t, p, slotKey{"sub_new", "new:80"})
	waitWaiting(t, p, 2)

	p.release(keys[0]) // sub_0 holds 1 now, sub_new 0: sub_new first
	<-fresh
	if granted(more) {
		t.Fatal("a subscription holding a slot was served before one holding none")
	}
	p.release(keys[1])
	<-more
	if used, waiting := p.stats(); used != 8 || waiting != 0 {
		t.Fatalf("stats = %d used, %d waiting; want 8, 0", used, waiting)
	}
}

// A request that stops waiting leaves no trace: it takes no slot, and the
// next one freed goes to whoever still waits.
func TestSlotPoolWaitEndsWithItsContext(t *testing.T) {
	p := newSlotPool(1)
	a := slotKey{"sub_a", "a:80"}
	mustTake(t, p, a)
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error)
	go func() { gaveUp <- p.acquire(ctx, slotKey{"sub_b", "b:80"}) }()
	waitWaiting(t, p, 1)
	next := take(t, p, slotKey{"sub_c", "c:80"})
	waitWaiting(t, p, 2)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire after its context ended = %v", err)
	}
	p.release(a)
	<-next
	p.release(slotKey{"sub_c", "c:80"})
	if used, waiting := p.stats(); used != 0 || waiting != 0 {
		t.Fatalf("stats = %d used, %d waiting; want none", used, waiting)
	}
}

// Under concurrent use no bound is ever exceeded and every slot comes back.
func TestSlotPoolBoundsHoldUnderLoad(t *testing.T) {
	p := newSlotPool(16) // 4 per subscription, 8 per destination
	var used atomic.Int64
	var mu sync.Mutex
	subs, dests := map[string]int{}, map[string]int{}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 200 {
				s := r.IntN(6)
				key := slotKey{fmt.Sprintf("sub_%d", s), fmt.Sprintf("host%d:80", s%3)}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(200))*time.Microsecond)
				err := p.acquire(ctx, key)
				cancel()
				if err != nil {
					continue
				}
				mu.Lock()
				subs[key.sub]++
				dests[key.dest]++
				bySub, byDest := subs[key.sub], dests[key.dest]
				mu.Unlock()
				if n := used.Add(1); n > int64(p.size) || bySub > p.perSub || byDest > p.perDest {
					t.Errorf("bound exceeded: %d in use, %d by %s, %d to %s", n, bySub, key.sub, byDest, key.dest)
				}
				used.Add(-1)
				mu.Lock()
				subs[key.sub]--
				dests[key.dest]--
				mu.Unlock()
				p.release(key)
			}
		})
	}
	wg.Wait()
	if u, w := p.stats(); u != 0 || w != 0 {
		t.Fatalf("after the load: %d used, %d waiting", u, w)
	}
}

func TestSubSlot(t *testing.T) {
	if got := subSlot("sub_1", "https://hooks.example.com"); got != (slotKey{"sub_1", "https://hooks.example.com"}) {
		t.Errorf("subSlot with a destination = %v", got)
	}
	if got := subSlot("sub_1", ""); got != (slotKey{"sub_1", "sub:sub_1"}) {
		t.Errorf("subSlot without a destination = %v, want the subscription as its own destination", got)
	}
}

// A destination that nothing is held at may be forgotten while requests
// for it still wait behind a full pool; granting one of them later must
// not find it missing (a nil destination panicked the dispatcher, seen
// once in TestSlotPoolBoundsHoldUnderLoad under -race).
func TestSlotPoolGrantsForAForgottenDestination(t *testing.T) {
	p := newSlotPool(4) // 1 per subscription, 2 per destination
	full := []slotKey{{"s1", "e1:80"}, {"s2", "e1:80"}, {"s3", "e2:80"}, {"s4", "e2:80"}}
	for _, k := range full {
		if err := p.acquire(t.Context(), k); err != nil {
			t.Fatal(err)
		}
	}
	a := slotKey{"a", "d:80"}
	first := make(chan error, 1)
	go func() { first <- p.acquire(t.Context(), a) }()
	waitWaiting(t, p, 1)
	ctx, cancel := context.WithCancel(t.Context())
	second := make(chan error, 1)
	go func() { second <- p.acquire(ctx, a) }()
	waitWaiting(t, p, 2)
	// The second gives up: nothing is held at d:80 or blocked on it, so
	// the pool forgets it, while the first still waits for it.
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled request = %v", err)
	}
	p.release(full[0]) // a slot frees: the first request gets it
	if err := <-first; err != nil {
		t.Fatalf("the waiting request = %v", err)
	}
	p.release(a)
	for _, k := range full[1:] {
		p.release(k)
	}
	if used, waiting := p.stats(); used != 0 || waiting != 0 {
		t.Fatalf("stats = %d used, %d waiting; want none", used, waiting)
	}
}
