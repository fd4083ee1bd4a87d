package storetest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// runTopicFences checks that a settlement made under a lease epoch from
// before a topic was deleted writes nothing of the topic afterwards, while
// the rest of it applies, and that a new epoch settles the topic created
// again from scratch.
func runTopicFences(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	// stale returns a settlement of the subscription that touches every
	// kind of row in the topic, as a dispatcher that read the topic before
	// its deletion could still write it.
	stale := func(id, topic string) herald.Settlement {
		return herald.Settlement{
			Cursors:     []herald.Cursor{{Topic: topic, Seq: 5}},
			AddRetries:  []herald.Retry{retry(id, topic, 4, "k", 1, at(60)), retry(id, topic, 5, "k", 0, time.Time{})},
			DoneRetries: []herald.Cursor{{Topic: topic, Seq: 1}},
			DeadLetters: []herald.DeadLetter{deadLetter(id, topic, 2, "k", 3, at(20))},
			UnblockKeys: []herald.RetryKey{{Topic: topic, Key: "k"}},
			UnblockAt:   at(21),
			Attempts:    []herald.Attempt{{Topic: topic, Seq: 5, EventID: "evt-old-5", Attempt: 1, Time: at(20), Outcome: herald.OutcomeSuccess, StatusCode: 204}},
		}
	}

	t.Run("StaleSettlementWritesNothingOfTheDeletedTopic", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		const id = "sub_1"
		subTopic(t, s, "orders", 5, "k")
		createSub(t, s, plainSub(id, "orders"), herald.StartPosition{Earliest: true})
		epoch := lease(t, s, id)
		settleOK(t, s, id, epoch, herald.Settlement{
			Cursors:    []herald.Cursor{{Topic: "orders", Seq: 5}},
			AddRetries: []herald.Retry{retry(id, "orders", 1, "k", 1, at(30))},
		})
		if err := s.DeleteTopic(t.Context(), "orders"); err != nil {
			t.Fatalf("DeleteTopic: %v", err)
		}
		// Created again, with more events than the stale cursor: the
		// settlement cannot be told apart by its seqs.
		subTopic(t, s, "orders", 7, "k")

		st := stale(id, "orders")
		st.LastSuccess, st.Activity = at(20), at(22)
		settleOK(t, s, id, epoch, st)
		wantCursors(t, "a stale settlement after the topic was deleted and created again", s, id)
		if rs := allRetries(t, s, id); len(rs) != 0 {
			t.Fatalf("the stale settlement wrote retries in the deleted topic: %s", fmtRetries(rs))
		}
		if n := countDead(t, s, id); n != 0 {
			t.Fatalf("the stale settlement wrote %d dead letters in the deleted topic", n)
		}
		// What is not about the topic's position still applies: the attempt
		// log and the subscription's times.
		if as := attempts(t, s, id, herald.AttemptFilter{Limit: 10}); len(as) != 1 || as[0].EventID != "evt-old-5" {
			t.Fatalf("attempts after the stale settlement: %+v; want its one attempt", as)
		}
		if g := getSub(t, s, id); !g.LastSuccessAt.Equal(at(20)) || !g.LastActivityAt.Equal(at(22)) {
			t.Fatalf("times after the stale settlement: LastSuccessAt %v, LastActivityAt %v; want 20s and 22s after t0",
				g.LastSuccessAt.Sub(t0), g.LastActivityAt.Sub(t0))
		}

		// The holder renews its lease while its lease is live: a topic was
		// deleted under it, so the epoch moves on, and the new epoch
		// delivers the new topic from its first event.
		fresh, err := s.AcquireLease(t.Context(), id, nodeA, at(1), 24*time.Hour)
		if err != nil || fresh != epoch+1 {
			t.Fatalf("renewal after the deletion = %d, %v; want the new epoch %d", fresh, err, epoch+1)
		}
		if again, err := s.AcquireLease(t.Context(), id, nodeA, at(2), 24*time.Hour); err != nil || again != fresh {
			t.Fatalf("the next renewal = %d, %v; want epoch %d kept", again, err, fresh)
		}
		errs := settle(t, s, herald.SettleItem{SubscriptionID: id, Epoch: epoch, Settlement: stale(id, "orders")})
		wantCode(t, "a settlement under the epoch of the deletion, after the renewal", errs[0], herald.CodeConflict)
		settleOK(t, s, id, fresh, herald.Settlement{
			Cursors:    []herald.Cursor{{Topic: "orders", Seq: 1}},
			AddRetries: []herald.Retry{retry(id, "orders", 2, "k", 1, at(70))},
		})
		wantCursors(t, "the new epoch", s, id, herald.Cursor{Topic: "orders", Seq: 1})
		sameRetries(t, "the new epoch", allRetries(t, s, id), retry(id, "orders", 2, "k", 1, at(70)))
	})

	t.Run("OtherTopicsOfTheItemApply", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		const id = "sub_1"
		subTopic(t, s, "orders.a", 5, "k")
		subTopic(t, s, "orders.b", 6, "k")
		createSub(t, s, plainSub(id, "orders.*"), herald.StartPosition{Earliest: true})
		epoch := lease(t, s, id)
		if err := s.DeleteTopic(t.Context(), "orders.a"); err != nil {
			t.Fatalf("DeleteTopic: %v", err)
		}
		a, b := stale(id, "orders.a"), stale(id, "orders.b")
		settleOK(t, s, id, epoch, herald.Settlement{
			Cursors:     append(a.Cursors, herald.Cursor{Topic: "orders.b", Seq: 6}),
			AddRetries:  append(a.AddRetries, b.AddRetries...),
			DeadLetters: append(a.DeadLetters, b.DeadLetters...),
			UnblockKeys: append(a.UnblockKeys, b.UnblockKeys...),
			UnblockAt:   at(21),
		})
		wantCursors(t, "a pattern subscription after one of its topics was deleted", s, id, herald.Cursor{Topic: "orders.b", Seq: 6})
		// All of orders.b's rows apply: seq 4 due, seq 5 blocked behind it
		// (the chain has a due head, so the unblock changes nothing), the
		// dead letter of seq 2.
		sameRetries(t, "orders.b only", allRetries(t, s, id), b.AddRetries...)
		sameDead(t, "orders.b only", allDead(t, s, id), b.DeadLetters...)
	})

	t.Run("OnlyLeasedMatchingSubscriptionsAreFenced", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders", 3)
		subTopic(t, s, "payments", 3)
		createSub(t, s, plainSub("sub_other", "payments"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_released", "orders"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_pattern", ">"), herald.StartPosition{Earliest: true})
		other, pattern := lease(t, s, "sub_other"), lease(t, s, "sub_pattern")
		released := lease(t, s, "sub_released")
		if err := s.ReleaseLease(t.Context(), "sub_released", nodeA, released); err != nil {
			t.Fatalf("ReleaseLease: %v", err)
		}
		if err := s.DeleteTopic(t.Context(), "orders"); err != nil {
			t.Fatalf("DeleteTopic: %v", err)
		}
		// A subscription of another topic keeps its epoch and settles.
		if e, err := s.AcquireLease(t.Context(), "sub_other", nodeA, at(1), time.Hour); err != nil || e != other {
			t.Fatalf("renewal of a subscription of another topic = %d, %v; want epoch %d kept", e, err, other)
		}
		settleOK(t, s, "sub_other", other, herald.Settlement{Cursors: []herald.Cursor{{Topic: "payments", Seq: 3}}})
		wantCursors(t, "a subscription of another topic", s, "sub_other", herald.Cursor{Topic: "payments", Seq: 3})
		// A pattern that matches the topic is fenced in it, not elsewhere.
		settleOK(t, s, "sub_pattern", pattern, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 3}, {Topic: "payments", Seq: 2}}})
		wantCursors(t, "a matching pattern", s, "sub_pattern", herald.Cursor{Topic: "payments", Seq: 2})
		// A released lease had ended its epoch already: the next one is new
		// and writes the topic created again.
		subTopic(t, s, "orders", 2)
		e := lease(t, s, "sub_released")
		if e != released+1 {
			t.Fatalf("lease after release = %d, want %d", e, released+1)
		}
		settleOK(t, s, "sub_released", e, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 2}}})
		wantCursors(t, "a subscription whose lease was released", s, "sub_released", herald.Cursor{Topic: "orders", Seq: 2})
	})

	t.Run("ASubscriptionCreatedAgainIsNotFencedByItsPredecessor", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders", 3)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		first := lease(t, s, "sub_1")
		if err := s.DeleteTopic(t.Context(), "orders"); err != nil {
			t.Fatalf("DeleteTopic: %v", err)
		}
		if err := s.DeleteSubscription(t.Context(), "sub_1"); err != nil {
			t.Fatalf("DeleteSubscription: %v", err)
		}
		subTopic(t, s, "orders", 3)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		e := lease(t, s, "sub_1")
		if e != first {
			t.Fatalf("first epoch of the subscription created again = %d, want %d as before", e, first)
		}
		settleOK(t, s, "sub_1", e, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 3}}})
		wantCursors(t, "the subscription created again", s, "sub_1", herald.Cursor{Topic: "orders", Seq: 3})
	})

	t.Run("SettlesRacingTheDeletionLeaveNothingBehind", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		const id = "sub_1"
		subTopic(t, s, "orders", 1)
		subTopic(t, s, "payments", 1)
		createSub(t, s, plainSub(id, "*"), herald.StartPosition{})
		epoch := lease(t, s, id)
		// Workers of the lease settle progress in both topics while the
		// topic is deleted: whichever commit first, once DeleteTopic has
		// returned the store holds nothing of the topic, and settlements
		// after it still move the other topic.
		var next, after atomic.Int64
		var deleted atomic.Bool
		var once sync.Once
		applied := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for after.Load() < 40 {
					seq := next.Add(1)
					late := deleted.Load()
					errs, err := s.Settle(t.Context(), []herald.SettleItem{{SubscriptionID: id, Epoch: epoch, Settlement: herald.Settlement{
						Cursors:    []herald.Cursor{{Topic: "orders", Seq: seq}, {Topic: "payments", Seq: seq}},
						AddRetries: []herald.Retry{retry(id, "orders", seq, "", 1, at(60))},
					}}})
					once.Do(func() { close(applied) })
					if err == nil {
						err = errs[0]
					}
					if err != nil {
						t.Errorf("Settle under the lease while the topic is deleted: %v", err)
						after.Store(40) // stop the others too
						return
					}
					if late {
						after.Add(1)
					}
				}
			})
		}
		<-applied
		if err := s.DeleteTopic(t.Context(), "orders"); err != nil {
			t.Fatalf("DeleteTopic: %v", err)
		}
		deleted.Store(true)
		wg.Wait()
		if t.Failed() {
			return
		}
		cs := cursorsOf(t, s, id)
		if len(cs) != 1 || cs[0].Topic != "payments" || cs[0].Seq < 2 {
			t.Fatalf("cursors after settles raced the deletion: %v; want only payments's, moved on", cs)
		}
		if rs := allRetries(t, s, id); len(rs) != 0 {
			t.Fatalf("%d retries of the deleted topic left, first %s", len(rs), fmtRetries(rs[:1]))
		}
	})
}
