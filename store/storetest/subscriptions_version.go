package storetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/heraldhq/herald"
)

// runSubscriptionVersions checks the optimistic concurrency of
// UpdateSubscription: the API and the dispatcher both read a subscription,
// change their copy and write it back, so a copy read before another
// writer's change must be refused rather than put the old fields back.
func runSubscriptionVersions(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("StaleCopyIsRefusedAndTheRetryKeepsBothChanges", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		sub := plainSub("sub_v", "orders.*")
		sub.Version = 42 // not the store's to take: every subscription starts at 0
		createSub(t, s, sub, herald.StartPosition{})

		// A user changes the config while the dispatcher disables the
		// subscription; both read it first.
		user, dispatcher := getSub(t, s, sub.ID), getSub(t, s, sub.ID)
		if user.Version != 0 {
			t.Fatalf("a new subscription has version %d, want 0", user.Version)
		}
		user.Config, user.UpdatedAt = json.RawMessage(`{"brokers":["k2:9092"]}`), at(10)
		if err := s.UpdateSubscription(t.Context(), user); err != nil {
			t.Fatalf("UpdateSubscription: %v", err)
		}
		dispatcher.State, dispatcher.StateReason, dispatcher.UpdatedAt = herald.StateDisabled, "the endpoint answered 410 Gone", at(11)
		wantCode(t, "UpdateSubscription of a copy read before another update", s.UpdateSubscription(t.Context(), dispatcher), herald.CodeConflict)
		got := getSub(t, s, sub.ID)
		if !bytes.Equal(got.Config, user.Config) || got.State != herald.StateActive || !got.UpdatedAt.Equal(at(10)) || got.Version != 1 {
			t.Fatalf("after a refused stale update: config %s, state %s, updated %v, version %d; want the user's config, active, at(10), version 1",
				got.Config, got.State, got.UpdatedAt, got.Version)
		}

		// The refused writer reads again and applies its change to the new
		// copy: both changes survive.
		dispatcher = got
		dispatcher.State, dispatcher.StateReason, dispatcher.UpdatedAt = herald.StateDisabled, "the endpoint answered 410 Gone", at(11)
		if err := s.UpdateSubscription(t.Context(), dispatcher); err != nil {
			t.Fatalf("UpdateSubscription of a fresh copy: %v", err)
		}
		got = getSub(t, s, sub.ID)
		if !bytes.Equal(got.Config, user.Config) || got.State != herald.StateDisabled || got.Version != 2 {
			t.Fatalf("after the retry: config %s, state %s, version %d; want the user's config, disabled, version 2", got.Config, got.State, got.Version)
		}

		// A missing subscription is CodeNotFound whatever the version.
		missing := plainSub("sub_missing", "orders.*")
		missing.Version = 2
		wantCode(t, "UpdateSubscription of a missing subscription", s.UpdateSubscription(t.Context(), missing), herald.CodeNotFound)
	})

	t.Run("ConcurrentUpdatesOfOneCopyApplyOnce", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		sub := plainSub("sub_race", "orders.*")
		createSub(t, s, sub, herald.StartPosition{})
		base := getSub(t, s, sub.ID)

		const writers = 8
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				c := base
				c.Description = fmt.Sprintf("writer %d", i)
				errs[i] = s.UpdateSubscription(t.Context(), c)
			})
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("writers %d and %d both updated from the same copy", winner, i)
			case err == nil:
				winner = i
			default:
				wantCode(t, fmt.Sprintf("writer %d", i), err, herald.CodeConflict)
			}
		}
		if winner < 0 {
			t.Fatal("no writer updated the subscription")
		}
		if got := getSub(t, s, sub.ID); got.Description != fmt.Sprintf("writer %d", winner) || got.Version != base.Version+1 {
			t.Fatalf("description %q, version %d; want writer %d's, version %d", got.Description, got.Version, winner, base.Version+1)
		}
	})

	t.Run("SettleChangingTheFailureRunRefusesOlderCopies", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		sub := plainSub("sub_run", "orders.*") // healthy: no failure run
		createSub(t, s, sub, herald.StartPosition{})
		epoch := lease(t, s, sub.ID)

		// A failure starts a run while the owner pauses the subscription
		// from a copy read before: writing that copy would erase the run.
		owner := getSub(t, s, sub.ID)
		settleOK(t, s, sub.ID, epoch, herald.Settlement{FailingSince: at(100)})
		owner.State, owner.StateReason = herald.StatePaused, "paused by its owner"
		wantCode(t, "UpdateSubscription of a copy read before a failure run began", s.UpdateSubscription(t.Context(), owner), herald.CodeConflict)
		got := getSub(t, s, sub.ID)
		if !got.FailingSince.Equal(at(100)) || got.State != herald.StateActive {
			t.Fatalf("failing since %v, state %s; want at(100), active", got.FailingSince, got.State)
		}

		// A success ends the run: a copy from during the run cannot bring
		// it back.
		owner = got
		settleOK(t, s, sub.ID, epoch, herald.Settlement{LastSuccess: at(200)})
		owner.State, owner.StateReason = herald.StatePaused, "paused by its owner"
		wantCode(t, "UpdateSubscription of a copy read before a failure run ended", s.UpdateSubscription(t.Context(), owner), herald.CodeConflict)
		if got = getSub(t, s, sub.ID); !got.FailingSince.IsZero() {
			t.Fatalf("failing since %v after a success and a refused stale update; want none", got.FailingSince)
		}

		// Settlements that leave the run as it is (successes of a healthy
		// subscription, activity, more failures of a failing one) refuse
		// no copy: LastSuccessAt and LastActivityAt only move forward.
		owner = got
		settleOK(t, s, sub.ID, epoch, herald.Settlement{LastSuccess: at(300), Activity: at(300)})
		owner.State, owner.StateReason = herald.StatePaused, "paused by its owner"
		if err := s.UpdateSubscription(t.Context(), owner); err != nil {
			t.Fatalf("UpdateSubscription after a settlement that kept the failure run: %v", err)
		}
		got = getSub(t, s, sub.ID)
		if got.State != herald.StatePaused || !got.LastSuccessAt.Equal(at(300)) || !got.LastActivityAt.Equal(at(300)) {
			t.Fatalf("state %s, last success %v, last activity %v; want paused, at(300), at(300)", got.State, got.LastSuccessAt, got.LastActivityAt)
		}
		settleOK(t, s, sub.ID, epoch, herald.Settlement{FailingSince: at(400)})
		owner = getSub(t, s, sub.ID)
		settleOK(t, s, sub.ID, epoch, herald.Settlement{FailingSince: at(500)})
		owner.Description = "still failing"
		if err := s.UpdateSubscription(t.Context(), owner); err != nil {
			t.Fatalf("UpdateSubscription after a settlement during a failure run: %v", err)
		}
		if got = getSub(t, s, sub.ID); !got.FailingSince.Equal(at(400)) || got.Description != "still failing" {
			t.Fatalf("failing since %v, description %q; want at(400), the update's", got.FailingSince, got.Description)
		}
	})
}
