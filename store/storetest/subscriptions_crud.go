package storetest

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func runSubscriptionCRUD(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("CreateThenGetRoundTripsEveryField", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		full := newSub("sub_full", "orders.>")
		createSub(t, s, full, herald.StartPosition{})
		sameSub(t, "GetSubscription", getSub(t, s, full.ID), full)

		// The zero values of everything optional come back as zero.
		// No channel is a webhook; no config, an empty object.
		bare := herald.Subscription{ID: "sub_bare", Topic: "orders.created",
			State: herald.StateActive, CreatedAt: t0, UpdatedAt: t0}
		createSub(t, s, bare, herald.StartPosition{})
		got := getSub(t, s, bare.ID)
		want := bare
		want.Channel, want.Config = herald.ChannelWebhook, json.RawMessage(`{}`)
		sameSub(t, "GetSubscription of a bare subscription", got, want)
		if len(got.Filter) != 0 {
			t.Fatalf("bare subscription read back with filter %q; want none", got.Filter)
		}
	})

	t.Run("CreateDuplicateIDIsConflict", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		first := newSub("sub_dup", "orders.created")
		createSub(t, s, first, herald.StartPosition{})
		second := plainSub("sub_dup", "payments.>")
		wantCode(t, "CreateSubscription with a taken id", s.CreateSubscription(t.Context(), second, herald.StartPosition{}), herald.CodeConflict)
		sameSub(t, "the first subscription after a conflicting create", getSub(t, s, first.ID), first)
	})

	t.Run("GetUnknownIsNotFound", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		_, err := s.GetSubscription(t.Context(), "sub_missing")
		wantCode(t, "GetSubscription unknown", err, herald.CodeNotFound)
	})

	t.Run("ListPagesInIDOrderWithFilters", func(t *testing.T) {
		// Lists every subscription in the store: not parallel, by the
		// convention of Run.
		s := open(t)
		type spec struct {
			id    string
			state herald.SubscriptionState
			owner string
		}
		// Mixed case: the order is byte order.
		specs := []spec{
			{"sub_c", herald.StateActive, "key_1"},
			{"sub_a", herald.StatePaused, "key_2"},
			{"sub_E", herald.StateActive, "key_2"},
			{"sub_b", herald.StateActive, "key_1"},
			{"sub_d", herald.StateDisabled, "key_1"},
			{"sub_B", herald.StatePending, ""},
			{"sub_f", herald.StateActive, "key_1"},
		}
		for _, sp := range specs {
			sub := plainSub(sp.id, "orders.>")
			sub.State, sub.OwnerKeyID = sp.state, sp.owner
			createSub(t, s, sub, herald.StartPosition{})
		}
		want := func(keep func(spec) bool) []string {
			var ids []string
			for _, sp := range specs {
				if keep(sp) {
					ids = append(ids, sp.id)
				}
			}
			slices.Sort(ids)
			return ids
		}
		// pages lists with the filter, limit 2 per page, following After.
		pages := func(f herald.SubscriptionFilter) []string {
			t.Helper()
			f.Limit = 2
			var ids []string
			for page := 0; ; page++ {
				subs, err := s.ListSubscriptions(t.Context(), f)
				if err != nil {
					t.Fatalf("ListSubscriptions(%+v): %v", f, err)
				}
				if len(subs) > 2 {
					t.Fatalf("ListSubscriptions(%+v) returned %d, over the limit", f, len(subs))
				}
				for _, sub := range subs {
					ids = append(ids, sub.ID)
					if (f.State != "" && sub.State != f.State) || (f.Owner != "" && sub.OwnerKeyID != f.Owner) {
						t.Fatalf("ListSubscriptions(%+v) returned %s in state %s owned by %q", f, sub.ID, sub.State, sub.OwnerKeyID)
					}
				}
				if len(subs) < 2 {
					return ids
				}
				f.After = subs[len(subs)-1].ID
				if page > len(specs) {
					t.Fatal("ListSubscriptions paging does not end")
				}
			}
		}
		cases := []struct {
			name string
			f    herald.SubscriptionFilter
			keep func(spec) bool
		}{
			{"all", herald.SubscriptionFilter{}, func(spec) bool { return true }},
			{"active", herald.SubscriptionFilter{State: herald.StateActive}, func(sp spec) bool { return sp.state == herald.StateActive }},
			{"owner key_1", herald.SubscriptionFilter{Owner: "key_1"}, func(sp spec) bool { return sp.owner == "key_1" }},
			{"active of key_2", herald.SubscriptionFilter{State: herald.StateActive, Owner: "key_2"},
				func(sp spec) bool { return sp.state == herald.StateActive && sp.owner == "key_2" }},
			{"failed", herald.SubscriptionFilter{State: herald.StateFailed}, func(spec) bool { return false }},
		}
		for _, c := range cases {
			got, w := pages(c.f), want(c.keep)
			if !slices.Equal(got, w) {
				t.Fatalf("ListSubscriptions %s: pages gave %q, want %q", c.name, got, w)
			}
		}
		// After need not be an existing id, and the list carries whole
		// subscriptions.
		subs, err := s.ListSubscriptions(t.Context(), herald.SubscriptionFilter{After: "sub_bb", Limit: 2})
		if err != nil || len(subs) != 2 || subs[0].ID != "sub_c" || subs[1].ID != "sub_d" {
			t.Fatalf("ListSubscriptions(after sub_bb, 2) = %v, %v; want sub_c, sub_d", subIDs(subs), err)
		}
		want1 := plainSub("sub_c", "orders.>")
		want1.OwnerKeyID = "key_1"
		sameSub(t, "ListSubscriptions entry", subs[0], want1)
	})

	t.Run("UpdateReplacesAllButImmutableFields", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		orig := newSub("sub_upd", "orders.*")
		createSub(t, s, orig, herald.StartPosition{})

		upd := herald.Subscription{
			ID:               orig.ID,
			Topic:            "payments.>",   // immutable: kept
			OwnerKeyID:       "key_intruder", // immutable: kept
			Tenant:           "intruder",     // immutable: kept
			CreatedAt:        at(999),        // immutable: kept
			Channel:          "nats",         // immutable: kept
			Config:           json.RawMessage(`{"url":"nats://n1:4222","subject":"erp.new"}`),
			Description:      "",
			Filter:           json.RawMessage(`{"type":["order.paid"]}`),
			Retry:            herald.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Hour},
			Timeout:          time.Second,
			MaxInFlight:      1,
			RateLimit:        0,
			Ordered:          false,
			ExpiresAfterIdle: 0,
			State:            herald.StateDisabled,
			StateReason:      "the endpoint answered 410 Gone",
			// The verification fields cleared.
			UpdatedAt:      at(500),
			LastActivityAt: at(400),
			LastSuccessAt:  at(300),
			FailingSince:   time.Time{}, // cleared (resume clears a failure run)
		}
		if err := s.UpdateSubscription(t.Context(), upd); err != nil {
			t.Fatalf("UpdateSubscription: %v", err)
		}
		want := upd
		want.Topic, want.OwnerKeyID, want.CreatedAt, want.Channel = orig.Topic, orig.OwnerKeyID, orig.CreatedAt, orig.Channel
		want.Tenant = orig.Tenant
		sameSub(t, "GetSubscription after update", getSub(t, s, orig.ID), want)

		// Clearing the filter stores none. The update took the version
		// from 0 to 1; this copy has to say so.
		upd.Filter, upd.Version = nil, 1
		if err := s.UpdateSubscription(t.Context(), upd); err != nil {
			t.Fatalf("UpdateSubscription without filter: %v", err)
		}
		got := getSub(t, s, orig.ID)
		if len(got.Filter) != 0 {
			t.Fatalf("after clearing, filter %q; want none", got.Filter)
		}
	})

	t.Run("UpdateNeverMovesSuccessOrActivityBack", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		sub := newSub("sub_times", "orders.*")
		createSub(t, s, sub, herald.StartPosition{})
		// A settlement advances both times...
		settleOK(t, s, sub.ID, lease(t, s, sub.ID), herald.Settlement{LastSuccess: at(5000), Activity: at(5000)})
		// ... while the API writes back what it read before.
		stale := getSub(t, s, sub.ID)
		stale.LastSuccessAt, stale.LastActivityAt = at(10), at(10)
		stale.Description = "changed"
		if err := s.UpdateSubscription(t.Context(), stale); err != nil {
			t.Fatal(err)
		}
		got := getSub(t, s, sub.ID)
		if !got.LastSuccessAt.Equal(at(5000)) || !got.LastActivityAt.Equal(at(5000)) || got.Description != "changed" {
			t.Fatalf("after a stale update: last success %v, last activity %v, description %q; want both at(5000) kept and the description changed",
				got.LastSuccessAt, got.LastActivityAt, got.Description)
		}
	})

	t.Run("UpdateUnknownIsNotFound", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		wantCode(t, "UpdateSubscription unknown", s.UpdateSubscription(t.Context(), plainSub("sub_missing", "x")), herald.CodeNotFound)
		_, err := s.GetSubscription(t.Context(), "sub_missing")
		wantCode(t, "UpdateSubscription must not create", err, herald.CodeNotFound)
	})

	t.Run("DeleteRemovesEverythingOfTheSubscription", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders.a", 6, "k1", "k2")
		subTopic(t, s, "orders.b", 2)
		const gone, kept = "sub_gone", "sub_kept"
		for _, id := range []string{gone, kept} {
			createSub(t, s, plainSub(id, "orders.>"), herald.StartPosition{Earliest: true})
			settleOK(t, s, id, lease(t, s, id), herald.Settlement{
				Cursors:     []herald.Cursor{{Topic: "orders.a", Seq: 6}, {Topic: "orders.b", Seq: 2}},
				AddRetries:  []herald.Retry{retry(id, "orders.a", 1, "k1", 1, at(60)), retry(id, "orders.a", 3, "k1", 0, time.Time{})},
				DeadLetters: []herald.DeadLetter{deadLetter(id, "orders.a", 2, "k2", 15, at(10))},
				Attempts: []herald.Attempt{
					{Topic: "orders.a", Seq: 1, EventID: "evt-orders.a-1", Attempt: 1, Time: at(5), Outcome: herald.OutcomeFailure, StatusCode: 500},
					{Topic: "orders.b", Seq: 1, EventID: "evt-orders.b-1", Attempt: 1, Time: at(6), Outcome: herald.OutcomeSuccess, StatusCode: 200},
				},
			})
		}
		keptRetries, keptDead := allRetries(t, s, kept), allDead(t, s, kept)

		if err := s.DeleteSubscription(t.Context(), gone); err != nil {
			t.Fatalf("DeleteSubscription: %v", err)
		}
		_, err := s.GetSubscription(t.Context(), gone)
		wantCode(t, "GetSubscription after delete", err, herald.CodeNotFound)
		wantCode(t, "DeleteSubscription twice", s.DeleteSubscription(t.Context(), gone), herald.CodeNotFound)
		if cs := cursorsOf(t, s, gone); len(cs) != 0 {
			t.Fatalf("deleted subscription still has cursors %v", cs)
		}
		if n := countRetries(t, s, gone); n != 0 {
			t.Fatalf("deleted subscription still has %d retries", n)
		}
		if n := countDead(t, s, gone); n != 0 {
			t.Fatalf("deleted subscription still has %d dead letters", n)
		}
		if as := attempts(t, s, gone, herald.AttemptFilter{Limit: 100}); len(as) != 0 {
			t.Fatalf("deleted subscription still has %d attempts", len(as))
		}
		errs := settle(t, s, herald.SettleItem{SubscriptionID: gone, Epoch: 1,
			Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders.a", Seq: 6}}}})
		wantCode(t, "Settle of a deleted subscription", errs[0], herald.CodeNotFound)

		// The same id created again starts clean: cursors where its start
		// puts them, no retries, dead letters or attempts, and no lease.
		createSub(t, s, plainSub(gone, "orders.>"), herald.StartPosition{})
		wantCursors(t, "recreated subscription", s, gone, herald.Cursor{Topic: "orders.a", Seq: 6}, herald.Cursor{Topic: "orders.b", Seq: 2})
		if r, d, a := allRetries(t, s, gone), allDead(t, s, gone), attempts(t, s, gone, herald.AttemptFilter{Limit: 100}); len(r)+len(d)+len(a) != 0 {
			t.Fatalf("recreated subscription has retries %v, dead letters %v, attempts %v; want none", fmtRetries(r), d, a)
		}
		if _, err := s.AcquireLease(t.Context(), gone, nodeB, at(1), time.Minute); err != nil {
			t.Fatalf("AcquireLease by another node after delete and create: %v (the old lease must be gone)", err)
		}

		// The other subscription kept everything.
		wantCursors(t, "the other subscription", s, kept, herald.Cursor{Topic: "orders.a", Seq: 6}, herald.Cursor{Topic: "orders.b", Seq: 2})
		sameRetries(t, "the other subscription", allRetries(t, s, kept), keptRetries...)
		sameDead(t, "the other subscription", allDead(t, s, kept), keptDead...)
		if as := attempts(t, s, kept, herald.AttemptFilter{Limit: 100}); len(as) != 2 {
			t.Fatalf("the other subscription has %d attempts, want 2", len(as))
		}
	})

	t.Run("DeleteUnknownIsNotFound", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		wantCode(t, "DeleteSubscription unknown", s.DeleteSubscription(t.Context(), "sub_never"), herald.CodeNotFound)
	})
}

func subIDs(subs []herald.Subscription) []string {
	out := make([]string, len(subs))
	for i, s := range subs {
		out[i] = s.ID
	}
	return out
}

func runStartCursors(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("NameStartsAtHeadByDefault", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders", 3)
		subTopic(t, s, "orders.empty", 0)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		wantCursors(t, "name at head", s, "sub_1", herald.Cursor{Topic: "orders", Seq: 3})
		// An existing topic with no events gets a cursor at 0.
		createSub(t, s, plainSub("sub_2", "orders.empty"), herald.StartPosition{})
		wantCursors(t, "empty topic", s, "sub_2", herald.Cursor{Topic: "orders.empty", Seq: 0})
	})

	t.Run("NameOfMissingTopicHasNoCursor", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders.other", 2)
		createSub(t, s, plainSub("sub_1", "orders.later"), herald.StartPosition{Earliest: true})
		wantCursors(t, "before the topic exists", s, "sub_1")
		// A topic created later has no cursor: it starts from its first
		// event.
		subTopic(t, s, "orders.later", 2)
		wantCursors(t, "after the topic is created", s, "sub_1")
	})

	t.Run("PatternGetsCursorsInExistingMatchingTopicsOnly", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders", 1)
		subTopic(t, s, "orders.eu", 4)
		subTopic(t, s, "orders.us", 2)
		subTopic(t, s, "orders.eu.north", 5)
		subTopic(t, s, "orders_x.eu", 3) // '_' must not act as a wildcard
		subTopic(t, s, "payments.eu", 6)
		subTopic(t, s, "ordersX", 1)

		createSub(t, s, plainSub("sub_star", "orders.*"), herald.StartPosition{})
		wantCursors(t, "orders.*", s, "sub_star", herald.Cursor{Topic: "orders.eu", Seq: 4}, herald.Cursor{Topic: "orders.us", Seq: 2})
		createSub(t, s, plainSub("sub_rest", "orders.>"), herald.StartPosition{})
		wantCursors(t, "orders.>", s, "sub_rest", herald.Cursor{Topic: "orders.eu", Seq: 4},
			herald.Cursor{Topic: "orders.eu.north", Seq: 5}, herald.Cursor{Topic: "orders.us", Seq: 2})
		createSub(t, s, plainSub("sub_mid", "*.eu"), herald.StartPosition{})
		wantCursors(t, "*.eu", s, "sub_mid", herald.Cursor{Topic: "orders.eu", Seq: 4},
			herald.Cursor{Topic: "orders_x.eu", Seq: 3}, herald.Cursor{Topic: "payments.eu", Seq: 6})

		subTopic(t, s, "orders.asia", 2)
		wantCursors(t, "orders.* after a new matching topic", s, "sub_star", herald.Cursor{Topic: "orders.eu", Seq: 4}, herald.Cursor{Topic: "orders.us", Seq: 2})
	})

	t.Run("EarliestIsBeforeTheFirstRetainedEvent", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		// orders.pruned: seqs 1-2 expire, 3-5 stay. orders.gone: all
		// expire. orders.empty: never had an event.
		for _, name := range []string{"orders.pruned", "orders.gone"} {
			tp := topic(name)
			tp.Retention = time.Hour
			putTopic(t, s, tp)
		}
		putTopic(t, s, topic("orders.empty"))
		old := t0.Add(-2 * time.Hour)
		appendStored(t, s, event("orders.pruned", old, "1"), event("orders.pruned", old, "2"),
			event("orders.pruned", t0, "3"), event("orders.pruned", t0, "4"), event("orders.pruned", t0, "5"))
		appendStored(t, s, event("orders.gone", old, "1"), event("orders.gone", old, "2"))
		if n := prune(t, s, t0, 100); n != 4 {
			t.Fatalf("Prune deleted %d events, want 4", n)
		}
		wantStats(t, s, "orders.pruned", 5, 3, 3)

		createSub(t, s, plainSub("sub_1", "orders.>"), herald.StartPosition{Earliest: true})
		wantCursors(t, "earliest", s, "sub_1", herald.Cursor{Topic: "orders.empty", Seq: 0},
			herald.Cursor{Topic: "orders.gone", Seq: 2}, herald.Cursor{Topic: "orders.pruned", Seq: 2})
	})

	t.Run("SeqIsAfterThatSeq", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders", 5)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{Seq: 2})
		wantCursors(t, "after seq 2", s, "sub_1", herald.Cursor{Topic: "orders", Seq: 2})
		createSub(t, s, plainSub("sub_2", "orders"), herald.StartPosition{Seq: 5})
		wantCursors(t, "after seq 5", s, "sub_2", herald.Cursor{Topic: "orders", Seq: 5})
	})

	t.Run("TimeIsBeforeTheFirstEventAtOrAfterIt", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("orders.a"))
		putTopic(t, s, topic("orders.b"))
		// orders.a: seqs 1-4 at 0s, 10s, 20s, 30s; orders.b: 1-2 at 12s, 40s.
		appendStored(t, s, event("orders.a", at(0), "1"), event("orders.a", at(10), "2"),
			event("orders.a", at(20), "3"), event("orders.a", at(30), "4"))
		appendStored(t, s, event("orders.b", at(12), "1"), event("orders.b", at(40), "2"))
		cases := []struct {
			at   time.Time
			a, b int64
		}{
			{at(-5), 0, 0},
			{at(10), 1, 0},                        // an event exactly at the time is included
			{at(15).Add(time.Microsecond), 2, 1},  // between events
			{at(30), 3, 1},                        //
			{at(35), 4, 1},                        // after orders.a's last event: at its head
			{at(41), 4, 2},                        // after every event: at the heads
			{at(12).Add(-time.Microsecond), 2, 0}, // just before orders.b's first
			{at(12).Add(time.Microsecond), 2, 1},  // just after it
			{time.Unix(1, 0).UTC(), 0, 0},         // far in the past
			{at(1_000_000_000), 4, 2},             // far in the future
		}
		for i, c := range cases {
			id := "sub_" + string(rune('a'+i))
			createSub(t, s, plainSub(id, "orders.*"), herald.StartPosition{Time: c.at})
			wantCursors(t, "start at "+c.at.Sub(t0).String(), s, id, herald.Cursor{Topic: "orders.a", Seq: c.a}, herald.Cursor{Topic: "orders.b", Seq: c.b})
		}
	})
}

func runSubscriptionDeleteTopic(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("ClearsEverySubscriptionsRowsInThatTopic", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		subTopic(t, s, "orders.a", 4, "k")
		subTopic(t, s, "orders.b", 4, "k")
		for _, id := range []string{"sub_1", "sub_2"} {
			createSub(t, s, plainSub(id, "orders.*"), herald.StartPosition{Earliest: true})
			settleOK(t, s, id, lease(t, s, id), herald.Settlement{
				Cursors: []herald.Cursor{{Topic: "orders.a", Seq: 4}, {Topic: "orders.b", Seq: 4}},
				AddRetries: []herald.Retry{
					retry(id, "orders.a", 1, "k", 1, at(30)), retry(id, "orders.a", 2, "k", 0, time.Time{}),
					retry(id, "orders.b", 1, "k", 1, at(30)), retry(id, "orders.b", 2, "k", 0, time.Time{}),
				},
				DeadLetters: []herald.DeadLetter{deadLetter(id, "orders.a", 3, "k", 5, at(1)), deadLetter(id, "orders.b", 3, "k", 5, at(1))},
			})
		}
		if err := s.DeleteTopic(t.Context(), "orders.a"); err != nil {
			t.Fatalf("DeleteTopic: %v", err)
		}
		for _, id := range []string{"sub_1", "sub_2"} {
			wantCursors(t, "after DeleteTopic", s, id, herald.Cursor{Topic: "orders.b", Seq: 4})
			sameRetries(t, "after DeleteTopic", allRetries(t, s, id),
				retry(id, "orders.b", 1, "k", 1, at(30)), retry(id, "orders.b", 2, "k", 0, time.Time{}))
			if n := countRetries(t, s, id); n != 2 {
				t.Fatalf("CountRetries after DeleteTopic = %d, want 2", n)
			}
			sameDead(t, "after DeleteTopic", allDead(t, s, id), deadLetter(id, "orders.b", 3, "k", 5, at(1)))
			if n := countDead(t, s, id); n != 1 {
				t.Fatalf("CountDeadLetters after DeleteTopic = %d, want 1", n)
			}
		}

		// The topic created again starts clean: no cursor, so the
		// subscriptions read it from its first event.
		subTopic(t, s, "orders.a", 2, "k")
		wantCursors(t, "after the topic is created again", s, "sub_1", herald.Cursor{Topic: "orders.b", Seq: 4})
		if rs := allRetries(t, s, "sub_1"); len(rs) != 2 {
			t.Fatalf("retries after the topic is created again: %s", fmtRetries(rs))
		}
	})
}
