package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func runSettle(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("EmptyCall", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		errs, err := s.Settle(t.Context(), nil)
		if err != nil || len(errs) != 0 {
			t.Fatalf("Settle(nil) = %v, %v; want no errors", errs, err)
		}
	})

	t.Run("BadItemsChangeNothingWhileOthersApply", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders", 5, "k")
		const stale, good = "sub_stale", "sub_good"
		for _, id := range []string{stale, good} {
			createSub(t, s, plainSub(id, "orders"), herald.StartPosition{Earliest: true})
		}
		old := lease(t, s, stale)
		// Another node takes the lease over: old is stale now.
		cur, err := s.AcquireLease(t.Context(), stale, nodeB, at(1_000_000), time.Minute)
		if err != nil || cur != old+1 {
			t.Fatalf("takeover = %d, %v; want epoch %d", cur, err, old+1)
		}
		settleOK(t, s, stale, cur, herald.Settlement{
			Cursors:    []herald.Cursor{{Topic: "orders", Seq: 1}},
			AddRetries: []herald.Retry{retry(stale, "orders", 1, "k", 1, at(50))},
		})
		before := getSub(t, s, stale)
		beforeRetries := allRetries(t, s, stale)

		// everything returns a settlement that touches every part.
		everything := func(id string) herald.Settlement {
			return herald.Settlement{
				Cursors:     []herald.Cursor{{Topic: "orders", Seq: 5}},
				AddRetries:  []herald.Retry{retry(id, "orders", 2, "k", 1, at(60)), retry(id, "orders", 3, "k", 0, time.Time{})},
				DoneRetries: []herald.Cursor{{Topic: "orders", Seq: 1}},
				DeadLetters: []herald.DeadLetter{deadLetter(id, "orders", 4, "k", 3, at(20))},
				UnblockKeys: []herald.RetryKey{{Topic: "orders", Key: "k"}},
				UnblockAt:   at(21),
				Attempts:    []herald.Attempt{{Topic: "orders", Seq: 5, EventID: "e5", Attempt: 1, Time: at(20), Outcome: herald.OutcomeSuccess, StatusCode: 204}},
				LastSuccess: at(20), FailingSince: at(19), Activity: at(22),
			}
		}
		goodEpoch := lease(t, s, good)
		errs := settle(t, s,
			herald.SettleItem{SubscriptionID: stale, Epoch: old, Settlement: everything(stale)},
			herald.SettleItem{SubscriptionID: good, Epoch: goodEpoch, Settlement: everything(good)},
			herald.SettleItem{SubscriptionID: "sub_missing", Epoch: 1, Settlement: everything("sub_missing")},
			herald.SettleItem{SubscriptionID: stale, Epoch: cur + 1, Settlement: everything(stale)}, // a future epoch is not current either
		)
		wantCode(t, "item with a stale epoch", errs[0], herald.CodeConflict)
		if errs[1] != nil {
			t.Fatalf("item with the current epoch: %v", errs[1])
		}
		wantCode(t, "item of an unknown subscription", errs[2], herald.CodeNotFound)
		wantCode(t, "item with an epoch ahead of the lease", errs[3], herald.CodeConflict)

		// Nothing of the rejected items was applied...
		wantCursors(t, "stale item", s, stale, herald.Cursor{Topic: "orders", Seq: 1})
		sameRetries(t, "stale item", allRetries(t, s, stale), beforeRetries...)
		if n := countDead(t, s, stale); n != 0 {
			t.Fatalf("stale item added %d dead letters", n)
		}
		if as := attempts(t, s, stale, herald.AttemptFilter{Limit: 10}); len(as) != 0 {
			t.Fatalf("stale item added %d attempts", len(as))
		}
		sameSub(t, "stale item", getSub(t, s, stale), before)
		if as := attempts(t, s, "sub_missing", herald.AttemptFilter{Limit: 10}); len(as) != 0 {
			t.Fatalf("item of an unknown subscription added %d attempts", len(as))
		}
		// ...and all of the good one was.
		wantCursors(t, "good item", s, good, herald.Cursor{Topic: "orders", Seq: 5})
		sameRetries(t, "good item", allRetries(t, s, good),
			retry(good, "orders", 2, "k", 1, at(60)), retry(good, "orders", 3, "k", 0, time.Time{}))
		sameDead(t, "good item", allDead(t, s, good), deadLetter(good, "orders", 4, "k", 3, at(20)))
		if as := attempts(t, s, good, herald.AttemptFilter{Limit: 10}); len(as) != 1 {
			t.Fatalf("good item: %d attempts, want 1", len(as))
		}
		g := getSub(t, s, good)
		if !g.LastSuccessAt.Equal(at(20)) || !g.FailingSince.Equal(at(19)) || !g.LastActivityAt.Equal(at(22)) {
			t.Fatalf("good item: LastSuccessAt %v FailingSince %v LastActivityAt %v; want 20s, 19s, 22s after t0",
				g.LastSuccessAt.Sub(t0), g.FailingSince.Sub(t0), g.LastActivityAt.Sub(t0))
		}
	})

	t.Run("FailedCallAppliesNothing", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders", 3)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{Earliest: true})
		epoch := lease(t, s, "sub_1")
		_, err := s.Settle(ctxCanceled(t), []herald.SettleItem{{SubscriptionID: "sub_1", Epoch: epoch, Settlement: herald.Settlement{
			Cursors:    []herald.Cursor{{Topic: "orders", Seq: 3}},
			AddRetries: []herald.Retry{retry("sub_1", "orders", 1, "", 1, at(5))},
			Attempts:   []herald.Attempt{{Topic: "orders", Seq: 1, EventID: "e", Attempt: 1, Time: at(1), Outcome: herald.OutcomeFailure}},
		}}})
		if err == nil {
			t.Fatal("Settle with a canceled context succeeded")
		}
		wantCursors(t, "after a failed Settle", s, "sub_1", herald.Cursor{Topic: "orders", Seq: 0})
		if n := countRetries(t, s, "sub_1"); n != 0 {
			t.Fatalf("failed Settle left %d retries", n)
		}
		if as := attempts(t, s, "sub_1", herald.AttemptFilter{Limit: 10}); len(as) != 0 {
			t.Fatalf("failed Settle left %d attempts", len(as))
		}
	})

	t.Run("CursorsOnlyAdvance", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders.a", 10)
		createSub(t, s, plainSub("sub_1", "orders.*"), herald.StartPosition{Seq: 0, Earliest: true})
		epoch := lease(t, s, "sub_1")
		settleOK(t, s, "sub_1", epoch, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders.a", Seq: 5}}})
		wantCursors(t, "advance", s, "sub_1", herald.Cursor{Topic: "orders.a", Seq: 5})
		settleOK(t, s, "sub_1", epoch, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders.a", Seq: 3}}})
		wantCursors(t, "a cursor below the stored one is ignored", s, "sub_1", herald.Cursor{Topic: "orders.a", Seq: 5})
		settleOK(t, s, "sub_1", epoch, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders.a", Seq: 5}}})
		wantCursors(t, "an equal cursor", s, "sub_1", herald.Cursor{Topic: "orders.a", Seq: 5})
		// A topic created after the subscription gets its first cursor
		// from a settlement.
		subTopic(t, s, "orders.b", 3)
		settleOK(t, s, "sub_1", epoch, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders.a", Seq: 9}, {Topic: "orders.b", Seq: 2}}})
		wantCursors(t, "advance and a new topic", s, "sub_1", herald.Cursor{Topic: "orders.a", Seq: 9}, herald.Cursor{Topic: "orders.b", Seq: 2})
	})

	t.Run("AddRetriesDueReplacesBlockedKeeps", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		epoch := lease(t, s, "sub_1")
		add := func(rs ...herald.Retry) {
			t.Helper()
			settleOK(t, s, "sub_1", epoch, herald.Settlement{AddRetries: rs})
		}
		first := retry("sub_1", "orders", 1, "k", 1, at(10))
		blocked := retry("sub_1", "orders", 2, "k", 0, time.Time{})
		unkeyed := retry("sub_1", "orders", 3, "", 2, at(15))
		add(first, blocked, unkeyed)
		sameRetries(t, "inserted", allRetries(t, s, "sub_1"), first, blocked, unkeyed)

		// The next attempt of a retry replaces it.
		second := retry("sub_1", "orders", 1, "k", 2, at(40))
		add(second)
		sameRetries(t, "a due row replaces", allRetries(t, s, "sub_1"), second, blocked, unkeyed)

		// A blocked row for an event already there (read again after a
		// restart) keeps the stored one, due or blocked.
		add(retry("sub_1", "orders", 1, "k", 0, time.Time{}), retry("sub_1", "orders", 2, "k", 0, time.Time{}))
		sameRetries(t, "a blocked row keeps", allRetries(t, s, "sub_1"), second, blocked, unkeyed)

		// A due row replaces a blocked one.
		unblocked := retry("sub_1", "orders", 2, "k", 1, at(50))
		add(unblocked)
		sameRetries(t, "a due row replaces a blocked one", allRetries(t, s, "sub_1"), second, unblocked, unkeyed)
		if n := countRetries(t, s, "sub_1"); n != 3 {
			t.Fatalf("CountRetries = %d, want 3", n)
		}
	})

	t.Run("DoneRetriesRemoveThem", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders.>"), herald.StartPosition{})
		epoch := lease(t, s, "sub_1")
		r1, r2, r3 := retry("sub_1", "orders.a", 1, "", 1, at(10)), retry("sub_1", "orders.a", 2, "", 1, at(10)), retry("sub_1", "orders.b", 1, "", 1, at(10))
		settleOK(t, s, "sub_1", epoch, herald.Settlement{AddRetries: []herald.Retry{r1, r2, r3}})
		// A pair that is not in the set is no error.
		settleOK(t, s, "sub_1", epoch, herald.Settlement{DoneRetries: []herald.Cursor{{Topic: "orders.a", Seq: 2}, {Topic: "orders.b", Seq: 2}, {Topic: "orders.c", Seq: 1}}})
		sameRetries(t, "after DoneRetries", allRetries(t, s, "sub_1"), r1, r3)
	})

	t.Run("DeadLettersReplaceAndLeaveTheRetrySet", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		epoch := lease(t, s, "sub_1")
		r1, r2 := retry("sub_1", "orders", 1, "k", 14, at(10)), retry("sub_1", "orders", 2, "k", 0, time.Time{})
		settleOK(t, s, "sub_1", epoch, herald.Settlement{AddRetries: []herald.Retry{r1, r2}})

		d1 := deadLetter("sub_1", "orders", 1, "k", 15, at(20))
		settleOK(t, s, "sub_1", epoch, herald.Settlement{DeadLetters: []herald.DeadLetter{d1}})
		sameDead(t, "dead letter", allDead(t, s, "sub_1"), d1)
		sameRetries(t, "the dead event left the retry set", allRetries(t, s, "sub_1"), r2)

		// The same event dead again (after a redrive) replaces the row.
		d1b := d1
		d1b.Attempts, d1b.LastError, d1b.DeadAt = 3, "HTTP 503", at(90)
		settleOK(t, s, "sub_1", epoch, herald.Settlement{DeadLetters: []herald.DeadLetter{d1b}})
		sameDead(t, "dead letter replaced", allDead(t, s, "sub_1"), d1b)
		if n := countDead(t, s, "sub_1"); n != 1 {
			t.Fatalf("CountDeadLetters = %d, want 1", n)
		}
	})

	t.Run("UnblockKeysHealsChains", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		sub := plainSub("sub_1", "orders.>")
		sub.Ordered = true
		createSub(t, s, sub, herald.StartPosition{})
		epoch := lease(t, s, "sub_1")
		blocked := func(topic string, seq int64, key string) herald.Retry {
			return retry("sub_1", topic, seq, key, 0, time.Time{})
		}
		// Chain k in orders.a has a due head; chain j in orders.a and
		// chain k in orders.b are all blocked (their heads were delivered
		// by a settlement that lost its unblock, say).
		kHead := retry("sub_1", "orders.a", 2, "k", 3, at(30))
		settleOK(t, s, "sub_1", epoch, herald.Settlement{AddRetries: []herald.Retry{
			kHead, blocked("orders.a", 4, "k"), blocked("orders.a", 6, "k"),
			blocked("orders.a", 5, "j"), blocked("orders.a", 3, "j"),
			blocked("orders.b", 1, "k"), blocked("orders.b", 7, "k"),
		}})

		settleOK(t, s, "sub_1", epoch, herald.Settlement{
			UnblockKeys: []herald.RetryKey{{Topic: "orders.a", Key: "k"}, {Topic: "orders.a", Key: "j"}, {Topic: "orders.a", Key: "none"}},
			UnblockAt:   at(100),
		})
		jHead := retry("sub_1", "orders.a", 3, "j", 0, at(100))
		sameRetries(t, "after unblocking orders.a's k and j", allRetries(t, s, "sub_1"),
			kHead, jHead, blocked("orders.a", 4, "k"), blocked("orders.a", 5, "j"), blocked("orders.a", 6, "k"),
			blocked("orders.b", 1, "k"), blocked("orders.b", 7, "k"))

		// Delivering a head and unblocking its key in one settlement:
		// DoneRetries applies first, so the next in the chain becomes due.
		settleOK(t, s, "sub_1", epoch, herald.Settlement{
			DoneRetries: []herald.Cursor{{Topic: "orders.a", Seq: 2}},
			UnblockKeys: []herald.RetryKey{{Topic: "orders.a", Key: "k"}},
			UnblockAt:   at(200),
		})
		k4 := retry("sub_1", "orders.a", 4, "k", 0, at(200))
		sameRetries(t, "after delivering k's head", allRetries(t, s, "sub_1"),
			jHead, k4, blocked("orders.a", 5, "j"), blocked("orders.a", 6, "k"),
			blocked("orders.b", 1, "k"), blocked("orders.b", 7, "k"))

		// A head dead-lettered, a blocked event added and the key unblocked,
		// all in one settlement: the lowest remaining seq becomes due.
		settleOK(t, s, "sub_1", epoch, herald.Settlement{
			AddRetries:  []herald.Retry{blocked("orders.a", 8, "j")},
			DeadLetters: []herald.DeadLetter{deadLetter("sub_1", "orders.a", 3, "j", 15, at(300))},
			UnblockKeys: []herald.RetryKey{{Topic: "orders.a", Key: "j"}, {Topic: "orders.b", Key: "k"}},
			UnblockAt:   at(300),
		})
		sameRetries(t, "after dead-lettering j's head", allRetries(t, s, "sub_1"),
			k4, retry("sub_1", "orders.a", 5, "j", 0, at(300)), blocked("orders.a", 6, "k"), blocked("orders.a", 8, "j"),
			retry("sub_1", "orders.b", 1, "k", 0, at(300)), blocked("orders.b", 7, "k"))

		// A failed head that gets a new due time and an unblock of its key
		// in the same settlement: the chain has a due row, nothing else moves.
		k4b := retry("sub_1", "orders.a", 4, "k", 1, at(400))
		settleOK(t, s, "sub_1", epoch, herald.Settlement{
			AddRetries:  []herald.Retry{k4b},
			UnblockKeys: []herald.RetryKey{{Topic: "orders.a", Key: "k"}},
			UnblockAt:   at(350),
		})
		if rs := allRetries(t, s, "sub_1"); len(rs) != 6 || !rs[0].DueAt.Equal(at(400)) || !rs[2].DueAt.IsZero() {
			t.Fatalf("after re-failing k's head: %s; want orders.a/4 due at 400s and orders.a/6 still blocked", fmtRetries(rs))
		}
	})

	t.Run("AttemptsGetIncreasingIDs", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_2", "orders"), herald.StartPosition{})
		e1, e2 := lease(t, s, "sub_1"), lease(t, s, "sub_2")
		mk := func(seq int64, outcome herald.Outcome, sec int) herald.Attempt {
			return herald.Attempt{Topic: "orders", Seq: seq, EventID: "evt-" + string(rune('0'+seq)), Attempt: 1, Time: at(sec), Outcome: outcome}
		}
		full := herald.Attempt{
			Topic: "orders", Seq: 1, EventID: "evt-1", Attempt: 3, Time: at(1).Add(123 * time.Microsecond),
			Outcome: herald.OutcomeFailure, StatusCode: 502, Latency: 1234567 * time.Nanosecond,
			Error: "HTTP 502", Response: "bad gateway\x00\xff\xfe<html>\u00e9", // byte for byte: endpoints answer anything
		}
		// Two items in one call, then another call: ids increase in the
		// order attempts were given.
		errs := settle(t, s,
			herald.SettleItem{SubscriptionID: "sub_1", Epoch: e1, Settlement: herald.Settlement{Attempts: []herald.Attempt{full, mk(2, herald.OutcomeSuccess, 2)}}},
			herald.SettleItem{SubscriptionID: "sub_2", Epoch: e2, Settlement: herald.Settlement{Attempts: []herald.Attempt{mk(1, herald.OutcomeSuccess, 2)}}},
		)
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("Settle: %v", errs)
		}
		settleOK(t, s, "sub_1", e1, herald.Settlement{Attempts: []herald.Attempt{mk(3, herald.OutcomeFailure, 3), mk(1, herald.OutcomeSuccess, 4)}})

		got := attempts(t, s, "sub_1", herald.AttemptFilter{Limit: 100})
		wantSeqs(t, "ListAttempts newest first", attemptSeqs(got), 1, 3, 2, 1)
		for i := 1; i < len(got); i++ {
			if got[i].ID >= got[i-1].ID {
				t.Fatalf("attempt ids not decreasing in the list: %d then %d", got[i-1].ID, got[i].ID)
			}
		}
		other := attempts(t, s, "sub_2", herald.AttemptFilter{Limit: 100})
		if len(other) != 1 || other[0].SubscriptionID != "sub_2" || other[0].ID <= got[2].ID || other[0].ID >= got[1].ID {
			t.Fatalf("sub_2 attempts %+v; want one, with an id between sub_1's first call and its second", other)
		}
		// Every field round trips.
		f := got[3]
		full.ID, full.SubscriptionID = f.ID, "sub_1"
		if !f.Time.Equal(full.Time) {
			t.Fatalf("attempt time read back as %v, want %v", f.Time, full.Time)
		}
		f.Time = full.Time
		if f != full {
			t.Fatalf("attempt read back as\n  %+v\nwant\n  %+v", f, full)
		}
	})

	t.Run("LastSuccessFailingSinceActivity", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		orig := newSub("sub_1", "orders")
		orig.State = herald.StateActive
		orig.LastSuccessAt, orig.FailingSince = time.Time{}, time.Time{}
		createSub(t, s, orig, herald.StartPosition{})
		epoch := lease(t, s, "sub_1")
		want := orig
		step := func(what string, st herald.Settlement) {
			t.Helper()
			settleOK(t, s, "sub_1", epoch, st)
			// Settle never changes UpdatedAt nor anything but these three.
			sameSub(t, what, getSub(t, s, "sub_1"), want)
		}

		want.FailingSince = at(10)
		step("a failure run starts", herald.Settlement{FailingSince: at(10)})
		step("a run already recorded is kept", herald.Settlement{FailingSince: at(20)})
		want.LastSuccessAt, want.FailingSince = at(30), time.Time{}
		step("a success ends the run", herald.Settlement{LastSuccess: at(30)})
		// A success then a failure in one settlement: LastSuccess applies
		// first, so the failure starts a new run.
		want.LastSuccessAt, want.FailingSince = at(40), at(41)
		step("success then failure", herald.Settlement{LastSuccess: at(40), FailingSince: at(41)})
		want.LastActivityAt = at(50)
		step("activity", herald.Settlement{Activity: at(50)})
		// Other changes leave these alone.
		step("cursors only", herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 1}}})
	})

	t.Run("ItemsOfOneSubscriptionApplyInOrder", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders", 5)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{Earliest: true})
		epoch := lease(t, s, "sub_1")
		r1 := retry("sub_1", "orders", 1, "", 1, at(10))
		errs := settle(t, s,
			herald.SettleItem{SubscriptionID: "sub_1", Epoch: epoch, Settlement: herald.Settlement{
				Cursors: []herald.Cursor{{Topic: "orders", Seq: 2}}, AddRetries: []herald.Retry{r1, retry("sub_1", "orders", 2, "", 1, at(10))},
				Attempts: []herald.Attempt{{Topic: "orders", Seq: 1, EventID: "a", Attempt: 1, Time: at(1), Outcome: herald.OutcomeFailure}},
			}},
			herald.SettleItem{SubscriptionID: "sub_1", Epoch: epoch, Settlement: herald.Settlement{
				Cursors: []herald.Cursor{{Topic: "orders", Seq: 4}}, DoneRetries: []herald.Cursor{{Topic: "orders", Seq: 2}},
				Attempts: []herald.Attempt{{Topic: "orders", Seq: 2, EventID: "b", Attempt: 2, Time: at(2), Outcome: herald.OutcomeSuccess}},
			}},
		)
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("Settle: %v", errs)
		}
		wantCursors(t, "two items", s, "sub_1", herald.Cursor{Topic: "orders", Seq: 4})
		sameRetries(t, "two items", allRetries(t, s, "sub_1"), r1)
		wantSeqs(t, "attempts of two items", attemptSeqs(attempts(t, s, "sub_1", herald.AttemptFilter{Limit: 10})), 2, 1)
	})
}
