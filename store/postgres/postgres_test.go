package postgres

import (
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/store/storetest"
)

// TestConformance runs the Store conformance suite, each subtest on a
// fresh schema of HERALD_TEST_POSTGRES.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) herald.Store { return newTestStore(t) })
}

// TestConformanceCopy runs the suite again with every Append writing its
// events by COPY, the path large batches take, which the suite's small
// batches would otherwise never reach.
func TestConformanceCopy(t *testing.T) {
	storetest.Run(t, func(t *testing.T) herald.Store {
		s := newTestStore(t)
		s.copyFrom = 1
		return s
	})
}

// TestSubscriptionConformance runs the SubscriptionStore conformance
// suite, each subtest on a fresh schema of HERALD_TEST_POSTGRES.
func TestSubscriptionConformance(t *testing.T) {
	storetest.RunSubscriptions(t, func(t *testing.T) storetest.SubscriptionTestStore { return newTestStore(t) })
}

// TestTimeConformance runs the TimeStore conformance suite: delayed
// events, schedules and named leases.
func TestTimeConformance(t *testing.T) {
	storetest.RunTime(t, func(t *testing.T) herald.Store { return newTestStore(t) })
}

// TestSourceConformance runs the SourceStore conformance suite.
func TestSourceConformance(t *testing.T) {
	storetest.RunSources(t, func(t *testing.T) herald.SourceStore { return newTestStore(t) })
}

// TestUsersConformance runs the UserStore conformance suite.
func TestUsersConformance(t *testing.T) {
	storetest.RunUsers(t, func(t *testing.T) herald.Store { return newTestStore(t) })
}
