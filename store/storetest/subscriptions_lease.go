package storetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func runLeases(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	acquire := func(t *testing.T, s SubscriptionTestStore, id, node string, now time.Time, ttl time.Duration) int64 {
		t.Helper()
		epoch, err := s.AcquireLease(t.Context(), id, node, now, ttl)
		if err != nil {
			t.Fatalf("AcquireLease(%s, %s, %s): %v", id, node, now.Sub(t0), err)
		}
		return epoch
	}
	conflict := func(t *testing.T, s SubscriptionTestStore, id, node string, now time.Time) {
		t.Helper()
		_, err := s.AcquireLease(t.Context(), id, node, now, 10*time.Second)
		wantCode(t, "AcquireLease by "+node+" at "+now.Sub(t0).String(), err, herald.CodeConflict)
	}

	t.Run("AcquireExtendConflictTakeover", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		e1 := acquire(t, s, "sub_1", nodeA, at(0), 10*time.Second)
		if e1 < 1 {
			t.Fatalf("first lease epoch is %d, want at least 1", e1)
		}
		// Renewal while live keeps the epoch and moves the end to 5s+10s.
		if e := acquire(t, s, "sub_1", nodeA, at(5), 10*time.Second); e != e1 {
			t.Fatalf("renewed lease has epoch %d, want %d", e, e1)
		}
		// Past the first end (10s) but before the renewed one (15s).
		conflict(t, s, "sub_1", nodeB, at(12))
		// The conflict changed nothing: node A still renews with its epoch.
		if e := acquire(t, s, "sub_1", nodeA, at(13), 10*time.Second); e != e1 {
			t.Fatalf("renewal after another node's failed acquire has epoch %d, want %d", e, e1)
		}
		// Expired (13s+10s = 23s): node B takes over with the next epoch.
		e2 := acquire(t, s, "sub_1", nodeB, at(30), 10*time.Second)
		if e2 != e1+1 {
			t.Fatalf("takeover epoch %d, want %d", e2, e1+1)
		}
		conflict(t, s, "sub_1", nodeA, at(31))

		// Only the current epoch may settle.
		errs := settle(t, s, herald.SettleItem{SubscriptionID: "sub_1", Epoch: e1,
			Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 1}}}})
		wantCode(t, "Settle under the old epoch", errs[0], herald.CodeConflict)
		settleOK(t, s, "sub_1", e2, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 2}}})
		wantCursors(t, "after settles under old and new epochs", s, "sub_1", herald.Cursor{Topic: "orders", Seq: 2})
	})

	t.Run("OwnExpiredLeaseGetsANewEpoch", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		e1 := acquire(t, s, "sub_1", nodeA, at(0), 10*time.Second)
		// The lease lapsed: whatever node A did meanwhile may have raced
		// another node, so it gets a new epoch even though no one took it.
		if e := acquire(t, s, "sub_1", nodeA, at(20), 10*time.Second); e != e1+1 {
			t.Fatalf("re-acquire after expiry: epoch %d, want %d", e, e1+1)
		}
	})

	t.Run("EpochsArePerSubscription", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_2", "orders"), herald.StartPosition{})
		e1 := acquire(t, s, "sub_1", nodeA, at(0), 10*time.Second)
		acquire(t, s, "sub_1", nodeA, at(20), 10*time.Second)
		acquire(t, s, "sub_1", nodeA, at(40), 10*time.Second)
		// Another node may hold another subscription at the same time.
		if e := acquire(t, s, "sub_2", nodeB, at(41), 10*time.Second); e != e1 {
			t.Fatalf("first epoch of a second subscription is %d, want %d like the first one's", e, e1)
		}
	})

	t.Run("Release", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		e1 := acquire(t, s, "sub_1", nodeA, at(0), time.Minute)

		// A release by another node, or with another epoch, ends nothing.
		if err := s.ReleaseLease(t.Context(), "sub_1", nodeB, e1); err != nil {
			t.Fatalf("ReleaseLease by a node that does not hold it: %v", err)
		}
		conflict(t, s, "sub_1", nodeB, at(1))
		if err := s.ReleaseLease(t.Context(), "sub_1", nodeA, e1+1); err != nil {
			t.Fatalf("ReleaseLease with another epoch: %v", err)
		}
		conflict(t, s, "sub_1", nodeB, at(2))

		// The holder's release frees it at once, long before it expires.
		if err := s.ReleaseLease(t.Context(), "sub_1", nodeA, e1); err != nil {
			t.Fatalf("ReleaseLease: %v", err)
		}
		e2 := acquire(t, s, "sub_1", nodeB, at(3), time.Minute)
		if e2 != e1+1 {
			t.Fatalf("acquire after release: epoch %d, want %d", e2, e1+1)
		}
		// Releasing again with the old epoch does not end the new lease.
		if err := s.ReleaseLease(t.Context(), "sub_1", nodeA, e1); err != nil {
			t.Fatalf("ReleaseLease of an ended lease: %v", err)
		}
		conflict(t, s, "sub_1", nodeA, at(4))
	})

	t.Run("ReleaseNodeLeases", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		for _, id := range []string{"sub_1", "sub_2", "sub_3"} {
			createSub(t, s, plainSub(id, "orders"), herald.StartPosition{})
		}
		e1 := acquire(t, s, "sub_1", nodeA, at(0), time.Minute)
		e2 := acquire(t, s, "sub_2", nodeA, at(0), time.Minute)
		e3 := acquire(t, s, "sub_3", nodeB, at(0), time.Minute)
		release := func(node string, want int64) {
			t.Helper()
			if n, err := s.ReleaseNodeLeases(t.Context(), node); err != nil || n != want {
				t.Fatalf("ReleaseNodeLeases(%q) = %d, %v; want %d", node, n, err, want)
			}
		}

		// A node starting again under its name ends what its previous
		// process held, live or not, and nothing of other nodes.
		release(nodeA, 2)
		release(nodeA, 0)
		conflict(t, s, "sub_3", nodeA, at(1))
		if e := acquire(t, s, "sub_1", nodeB, at(1), time.Minute); e != e1+1 {
			t.Fatalf("another node takes a released lease with epoch %d, want %d", e, e1+1)
		}
		// The node itself gets a new epoch too: its previous process may
		// have left a settlement in flight.
		if e := acquire(t, s, "sub_2", nodeA, at(1), time.Minute); e != e2+1 {
			t.Fatalf("the node takes its released lease back with epoch %d, want %d", e, e2+1)
		}
		errs := settle(t, s, herald.SettleItem{SubscriptionID: "sub_2", Epoch: e2,
			Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 1}}}})
		wantCode(t, "Settle under the epoch of the previous process", errs[0], herald.CodeConflict)

		// "" ends every lease of every node.
		release("", 3)
		if e := acquire(t, s, "sub_3", nodeA, at(2), time.Minute); e != e3+1 {
			t.Fatalf("acquire after every lease was released: epoch %d, want %d", e, e3+1)
		}
	})

	t.Run("TakeoverFencesConcurrentSettles", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		e1 := acquire(t, s, "sub_1", nodeA, at(0), 10*time.Second)
		// Workers of the old lease settle cursor moves while another node
		// takes the lease over: once AcquireLease has returned, none of
		// theirs may apply.
		var next atomic.Int64
		var once sync.Once
		applied := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for seq := next.Add(1); seq <= 200; seq = next.Add(1) {
					errs, err := s.Settle(t.Context(), []herald.SettleItem{{SubscriptionID: "sub_1", Epoch: e1,
						Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: seq}}}}})
					switch {
					case err != nil:
						t.Errorf("Settle: %v", err)
						return
					case errs[0] == nil:
						once.Do(func() { close(applied) })
					case !herald.IsCode(errs[0], herald.CodeConflict):
						t.Errorf("Settle under a lost lease: %v, want CodeConflict", errs[0])
						return
					}
				}
			})
		}
		<-applied
		e2 := acquire(t, s, "sub_1", nodeB, at(20), 10*time.Second)
		after := cursorsOf(t, s, "sub_1")
		wg.Wait()
		if final := cursorsOf(t, s, "sub_1"); !slices.Equal(final, after) {
			t.Fatalf("cursors moved from %v to %v under epoch %d after the takeover to epoch %d", after, final, e1, e2)
		}
		settleOK(t, s, "sub_1", e2, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 1000}}})
		wantCursors(t, "the new holder", s, "sub_1", herald.Cursor{Topic: "orders", Seq: 1000})
	})

	// AcquireLeases takes many leases in one step, as AcquireLease takes
	// each, leaving out another node's live ones and unknown ids; and
	// DispatchStates tells which subscriptions have cursors and retries.
	t.Run("ManyAtOnce", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		for _, id := range []string{"sub_1", "sub_2", "sub_3"} {
			createSub(t, s, plainSub(id, "orders"), herald.StartPosition{})
		}
		eOwn := acquire(t, s, "sub_1", nodeA, at(0), 10*time.Second)
		acquire(t, s, "sub_2", nodeB, at(0), 10*time.Second)
		got, err := s.AcquireLeases(t.Context(), []string{"sub_1", "sub_2", "sub_3", "sub_missing"}, nodeA, at(1), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, func(a, b herald.Lease) int { return strings.Compare(a.SubscriptionID, b.SubscriptionID) })
		if len(got) != 2 || got[0].SubscriptionID != "sub_1" || got[0].Epoch != eOwn || got[1].SubscriptionID != "sub_3" || got[1].Epoch < 1 {
			t.Fatalf("AcquireLeases: %+v, want sub_1 at epoch %d and sub_3 (sub_2 is node B's)", got, eOwn)
		}
		conflict(t, s, "sub_3", nodeB, at(2)) // taken: node B cannot
		settleOK(t, s, "sub_3", got[1].Epoch, herald.Settlement{
			Cursors:    []herald.Cursor{{Topic: "orders", Seq: 4}},
			AddRetries: []herald.Retry{retry("sub_3", "orders", 2, "", 1, at(60))},
		})
		states, err := s.DispatchStates(t.Context(), []string{"sub_1", "sub_3", "sub_missing"})
		if err != nil {
			t.Fatal(err)
		}
		if st := states["sub_3"]; !st.Retries || len(st.Cursors) != 1 || st.Cursors[0] != (herald.Cursor{Topic: "orders", Seq: 4}) {
			t.Fatalf("sub_3's state: %+v, want its cursor at 4 and retries", st)
		}
		if st, ok := states["sub_1"]; ok && (st.Retries || len(st.Cursors) > 0 && st.Cursors[0].Seq != 0) {
			t.Fatalf("sub_1's state: %+v, want nothing beyond a cursor at 0", st)
		}
		if _, ok := states["sub_missing"]; ok {
			t.Fatal("an unknown subscription has a state")
		}
	})

	t.Run("UnknownSubscriptionIsNotFound", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		_, err := s.AcquireLease(t.Context(), "sub_missing", nodeA, at(0), time.Minute)
		wantCode(t, "AcquireLease of an unknown subscription", err, herald.CodeNotFound)
	})
}

// runRenewLeases checks the renewal a dispatcher makes of all its leases:
// one node lease, which keeps the subscription leases under it; a lapsed
// one comes back under a new epoch and ends them; the fenced ones are
// named.
func runRenewLeases(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Parallel()
	s := open(t)
	for _, id := range []string{"sub_1", "sub_2", "sub_3", "sub_4"} {
		createSub(t, s, plainSub(id, "orders."+id), herald.StartPosition{})
	}
	subTopic(t, s, "orders.sub_4", 1, "k")
	got, err := s.AcquireLeases(t.Context(), []string{"sub_1", "sub_2", "sub_4"}, nodeA, at(0), 10*time.Second)
	if err != nil || len(got) != 3 {
		t.Fatalf("AcquireLeases: %+v, %v", got, err)
	}
	epochs := map[string]int64{}
	for _, l := range got {
		epochs[l.SubscriptionID] = l.Epoch
	}
	nodeEpoch := got[0].NodeEpoch
	if _, err := s.AcquireLease(t.Context(), "sub_3", nodeB, at(0), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTopic(t.Context(), "orders.sub_4"); err != nil { // fences sub_4's epoch
		t.Fatal(err)
	}
	nl, err := s.RenewNodeLease(t.Context(), nodeA, at(5), 10*time.Second)
	if err != nil {
		t.Fatalf("RenewNodeLease: %v", err)
	}
	if nl.Epoch != nodeEpoch {
		t.Fatalf("renewing a live node lease: epoch %d, want %d as the leases were taken under", nl.Epoch, nodeEpoch)
	}
	if len(nl.Fenced) != 1 || nl.Fenced[0].SubscriptionID != "sub_4" || nl.Fenced[0].Epoch != epochs["sub_4"] {
		t.Fatalf("fenced leases %+v, want sub_4 at epoch %d", nl.Fenced, epochs["sub_4"])
	}
	// Renewed to 15s: node B cannot take sub_1 or sub_2 at 12s, past the
	// end the leases were taken with.
	for _, id := range []string{"sub_1", "sub_2"} {
		_, err = s.AcquireLease(t.Context(), id, nodeB, at(12), 10*time.Second)
		wantCode(t, "AcquireLease of "+id+" by another node after the renewal", err, herald.CodeConflict)
	}
	// Node A takes sub_4 again under a new epoch; sub_1 keeps its own.
	if e, err := s.AcquireLease(t.Context(), "sub_4", nodeA, at(13), 10*time.Second); err != nil || e != epochs["sub_4"]+1 {
		t.Fatalf("sub_4 after its fence: epoch %d, %v; want %d", e, err, epochs["sub_4"]+1)
	}
	if e, err := s.AcquireLease(t.Context(), "sub_1", nodeA, at(13), 10*time.Second); err != nil || e != epochs["sub_1"] {
		t.Fatalf("sub_1 extended: epoch %d, %v; want %d", e, err, epochs["sub_1"])
	}
	if nl, err := s.RenewNodeLease(t.Context(), nodeA, at(14), 10*time.Second); err != nil || len(nl.Fenced) != 0 {
		t.Fatalf("renewal after the new epoch: %+v, %v; want nothing fenced", nl, err)
	}

	// The node lease lapses (at 24s). Node B takes sub_1 at 25s. A
	// renewal node A sent at 23s, before the lapse, and that arrives only
	// now must not make the node lease live again under its epoch: node
	// A would go on dispatching sub_2 and sub_1 with B.
	if _, err := s.AcquireLease(t.Context(), "sub_1", nodeB, at(25), 10*time.Second); err != nil {
		t.Fatalf("node B takes sub_1 from the lapsed node lease: %v", err)
	}
	nl, err = s.RenewNodeLease(t.Context(), nodeA, at(23), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if nl.Epoch == nodeEpoch {
		t.Fatalf("a late renewal kept node epoch %d after another node took a subscription from it", nodeEpoch)
	}
	// Under its new node epoch node A holds none of its old leases:
	// taking sub_2 again gives a new epoch, so nothing the old worker
	// still settles applies.
	if e, err := s.AcquireLease(t.Context(), "sub_2", nodeA, at(26), 10*time.Second); err != nil || e != epochs["sub_2"]+1 {
		t.Fatalf("sub_2 under the new node lease: epoch %d, %v; want %d", e, err, epochs["sub_2"]+1)
	}
	errs := settle(t, s, herald.SettleItem{SubscriptionID: "sub_2", Epoch: epochs["sub_2"],
		Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders.sub_2", Seq: 1}}}})
	wantCode(t, "Settle under the lease of the lapsed node lease", errs[0], herald.CodeConflict)

	// A node lease that lapsed with no one taking anything comes back
	// under a new epoch too, and its subscriptions' leases with it are
	// ended: node B may take sub_2.
	nl2, err := s.RenewNodeLease(t.Context(), nodeA, at(60), 10*time.Second)
	if err != nil || nl2.Epoch == nl.Epoch {
		t.Fatalf("renewal of a lapsed node lease: %+v, %v; want a new epoch (was %d)", nl2, err, nl.Epoch)
	}
	if _, err := s.AcquireLease(t.Context(), "sub_2", nodeB, at(61), 10*time.Second); err != nil {
		t.Fatalf("node B takes a lease of node A's lapsed node lease: %v", err)
	}
	if _, err := s.RenewNodeLease(t.Context(), "", at(5), time.Second); !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("RenewNodeLease with no node: %v, want CodeInvalid", err)
	}
}

// runCountBacklog checks the dispatcher's gauge query: retry sets and
// dead letters of the subscriptions a node leases, or of all.
func runCountBacklog(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Parallel()
	s := open(t)
	for _, id := range []string{"sub_1", "sub_2"} {
		subTopic(t, s, "orders."+id, 3, "k")
		createSub(t, s, plainSub(id, "orders."+id), herald.StartPosition{Earliest: true})
	}
	e1, err := s.AcquireLease(t.Context(), "sub_1", nodeA, at(0), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := s.AcquireLease(t.Context(), "sub_2", nodeB, at(0), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	settleOK(t, s, "sub_1", e1, herald.Settlement{
		AddRetries:  []herald.Retry{retry("sub_1", "orders.sub_1", 1, "k", 1, at(30)), retry("sub_1", "orders.sub_1", 2, "k", 1, at(30))},
		DeadLetters: []herald.DeadLetter{deadLetter("sub_1", "orders.sub_1", 3, "k", 3, at(20))},
	})
	settleOK(t, s, "sub_2", e2, herald.Settlement{
		AddRetries: []herald.Retry{retry("sub_2", "orders.sub_2", 1, "k", 1, at(30))},
	})
	for _, c := range []struct {
		node        string
		retries, dl int64
	}{{nodeA, 2, 1}, {nodeB, 1, 0}, {"", 3, 1}, {"nobody", 0, 0}} {
		r, d, err := s.CountBacklog(t.Context(), c.node)
		if err != nil {
			t.Fatalf("CountBacklog(%q): %v", c.node, err)
		}
		if r != c.retries || d != c.dl {
			t.Fatalf("CountBacklog(%q) = %d retries, %d dead letters; want %d, %d", c.node, r, d, c.retries, c.dl)
		}
	}
}

// runGetRetry checks the lookup of one event in a retry set, which the
// delivery-status API uses.
func runGetRetry(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Parallel()
	s := open(t)
	subTopic(t, s, "orders", 3, "k")
	createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{Earliest: true})
	e := lease(t, s, "sub_1")
	settleOK(t, s, "sub_1", e, herald.Settlement{AddRetries: []herald.Retry{retry("sub_1", "orders", 2, "k", 3, at(30))}})
	r, err := s.GetRetry(t.Context(), "sub_1", "orders", 2)
	if err != nil {
		t.Fatalf("GetRetry: %v", err)
	}
	if r.Seq != 2 || r.Attempt != 3 || !r.DueAt.Equal(at(30)) || r.Topic != "orders" || r.SubscriptionID != "sub_1" {
		t.Fatalf("GetRetry = %+v, want seq 2, attempt 3, due at 30s", r)
	}
	for _, c := range []struct {
		id, topic string
		seq       int64
	}{{"sub_1", "orders", 1}, {"sub_1", "other", 2}, {"sub_2", "orders", 2}} {
		_, err := s.GetRetry(t.Context(), c.id, c.topic, c.seq)
		wantCode(t, fmt.Sprintf("GetRetry(%s, %s, %d)", c.id, c.topic, c.seq), err, herald.CodeNotFound)
	}
}
