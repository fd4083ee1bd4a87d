package storetest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// SubscriptionTestStore is a store with subscriptions: what the
// dispatcher runs on.
type SubscriptionTestStore interface {
	herald.Store
	herald.SubscriptionStore
}

// RunSubscriptions runs the conformance suite of herald.SubscriptionStore,
// one subtest per contract clause, with the same conventions as Run: open
// returns a new, empty, ready store for each subtest and closes it with
// t.Cleanup; subtests that look at the whole store (listing subscriptions,
// pruning attempts) do not run in parallel; times are compared at
// microsecond precision.
//
// Where the contract on herald.SubscriptionStore leaves room, the suite
// takes the reading the dispatcher (package engine) relies on, and says
// so where it checks it:
//
//   - A lease is live while now is before its end (now+ttl); the suite
//     only checks times clearly before and after that end.
//   - Settle checks the epoch only: an item whose epoch is the
//     subscription's current lease epoch applies (less its rows in the
//     topics deleted under that epoch).
//   - DueRetries returns the DueAt of the earliest non-blocked retry it did
//     not return, whether that one is already due (the limit cut it off)
//     or due later.
//   - ScheduleReplay adds the lowest seqs first and counts only rows it
//     added against the limit, so a caller that repeats the call with the
//     same range makes progress.
//   - RedriveDeadLetters and DeleteDeadLetters act on every dead letter
//     only for a nil id list; an empty non-nil list acts on none.
//   - Events added by ScheduleReplay carry the event's id and key.
//   - Reads of an unknown subscription (Cursors, counts, lists) may
//     return nothing or CodeNotFound; the suite accepts both.
func RunSubscriptions(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("Subscriptions", func(t *testing.T) { runSubscriptionCRUD(t, open) })
	t.Run("Versions", func(t *testing.T) { runSubscriptionVersions(t, open) })
	t.Run("StartCursors", func(t *testing.T) { runStartCursors(t, open) })
	t.Run("DeleteTopic", func(t *testing.T) { runSubscriptionDeleteTopic(t, open) })
	t.Run("TopicFences", func(t *testing.T) { runTopicFences(t, open) })
	t.Run("Leases", func(t *testing.T) { runLeases(t, open) })
	t.Run("RenewNodeLease", func(t *testing.T) { runRenewLeases(t, open) })
	t.Run("CountBacklog", func(t *testing.T) { runCountBacklog(t, open) })
	t.Run("GetRetry", func(t *testing.T) { runGetRetry(t, open) })
	t.Run("Settle", func(t *testing.T) { runSettle(t, open) })
	t.Run("Retries", func(t *testing.T) { runRetries(t, open) })
	t.Run("DeadLetters", func(t *testing.T) { runDeadLetters(t, open) })
	t.Run("Attempts", func(t *testing.T) { runAttempts(t, open) })
	t.Run("DeliveryStats", func(t *testing.T) { runDeliveryStats(t, open) })
	t.Run("Tenants", func(t *testing.T) { runTenants(t, open) })
}

// t0 is the fixed instant the subscription subtests count from; their
// times are t0 plus whole seconds, so no test depends on the clock.
var t0 = time.Unix(1_700_000_000, 0).UTC()

// at returns t0 plus sec seconds.
func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// node names used for leases.
const (
	nodeA = "node-a"
	nodeB = "node-b"
)

// newSub returns a subscription with every field set, so a field a
// backend forgets shows up in sameSub.
func newSub(id, pattern string) herald.Subscription {
	return herald.Subscription{
		ID:      id,
		Topic:   pattern,
		Channel: "kafka",
		// The store keeps a config byte for byte, whatever the channel.
		Config:      json.RawMessage(`{"brokers":["k1:9092"],"topic":"erp-` + id + `","password":"s\u00e9cret"}`),
		Description: "orders to the ERP \u00e9",
		Filter:      json.RawMessage(`{"type":["order.created","order.paid"]}`),
		Retry:       herald.RetryPolicy{MaxAttempts: 7, Initial: 1500 * time.Millisecond, Max: 90 * time.Minute},
		Timeout:     12*time.Second + 345*time.Millisecond,
		MaxInFlight: 24,
		RateLimit:   12.5,
		Ordered:     true,
		// 36h and a nanosecond: durations are kept exactly.
		ExpiresAfterIdle: 36*time.Hour + time.Nanosecond,
		State:            herald.StatePending,
		StateReason:      "waiting for the endpoint",
		Challenge:        "challenge-token",
		VerifyDeadline:   at(86400),
		NextChallengeAt:  at(5).Add(250 * time.Microsecond),
		ChallengeTries:   2,
		OwnerKeyID:       "key_owner",
		Tenant:           "acme",
		CreatedAt:        at(0),
		UpdatedAt:        at(1),
		LastActivityAt:   at(2),
		LastSuccessAt:    at(-100),
		FailingSince:     at(-50),
	}
}

// plainSub returns an active subscription with only what the store needs.
func plainSub(id, pattern string) herald.Subscription {
	return herald.Subscription{
		ID: id, Topic: pattern, Channel: herald.ChannelWebhook, State: herald.StateActive,
		Config: json.RawMessage(`{"url":"https://hooks.example.com/` + id + `","secret":"whsec_x"}`),
		Retry:  herald.DefaultRetryPolicy, Timeout: herald.DefaultTimeout, MaxInFlight: herald.DefaultMaxInFlight,
		CreatedAt: t0, UpdatedAt: t0, LastActivityAt: t0,
	}
}

// sameSub fails the test unless got has every field of want: times as
// instants, a nil and an empty filter or header map alike.
func sameSub(t *testing.T, what string, got, want herald.Subscription) {
	t.Helper()
	var diffs []string
	check := func(field string, ok bool, g, w any) {
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: got %v, want %v", field, g, w))
		}
	}
	str := func(field, g, w string) { check(field, g == w, fmt.Sprintf("%q", g), fmt.Sprintf("%q", w)) }
	tm := func(field string, g, w time.Time) { check(field, g.Equal(w), g, w) }
	str("ID", got.ID, want.ID)
	str("Topic", got.Topic, want.Topic)
	str("Channel", got.Channel, want.Channel)
	check("Config", bytes.Equal(got.Config, want.Config), string(got.Config), string(want.Config))
	str("Description", got.Description, want.Description)
	check("Filter", bytes.Equal(got.Filter, want.Filter), string(got.Filter), string(want.Filter))
	check("Retry", got.Retry == want.Retry, got.Retry, want.Retry)
	check("Timeout", got.Timeout == want.Timeout, got.Timeout, want.Timeout)
	check("MaxInFlight", got.MaxInFlight == want.MaxInFlight, got.MaxInFlight, want.MaxInFlight)
	check("RateLimit", got.RateLimit == want.RateLimit, got.RateLimit, want.RateLimit)
	check("Ordered", got.Ordered == want.Ordered, got.Ordered, want.Ordered)
	check("ExpiresAfterIdle", got.ExpiresAfterIdle == want.ExpiresAfterIdle, got.ExpiresAfterIdle, want.ExpiresAfterIdle)
	str("State", string(got.State), string(want.State))
	str("StateReason", got.StateReason, want.StateReason)
	str("Challenge", got.Challenge, want.Challenge)
	tm("VerifyDeadline", got.VerifyDeadline, want.VerifyDeadline)
	tm("NextChallengeAt", got.NextChallengeAt, want.NextChallengeAt)
	check("ChallengeTries", got.ChallengeTries == want.ChallengeTries, got.ChallengeTries, want.ChallengeTries)
	str("OwnerKeyID", got.OwnerKeyID, want.OwnerKeyID)
	str("Tenant", got.Tenant, want.Tenant)
	tm("CreatedAt", got.CreatedAt, want.CreatedAt)
	tm("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	tm("LastActivityAt", got.LastActivityAt, want.LastActivityAt)
	tm("LastSuccessAt", got.LastSuccessAt, want.LastSuccessAt)
	tm("FailingSince", got.FailingSince, want.FailingSince)
	if len(diffs) > 0 {
		t.Fatalf("%s: subscription %s differs:\n  %s", what, want.ID, joinLines(diffs))
	}
}

func joinLines(lines []string) string {
	var b bytes.Buffer
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(l)
	}
	return b.String()
}

func createSub(t *testing.T, s SubscriptionTestStore, sub herald.Subscription, start herald.StartPosition) {
	t.Helper()
	if err := s.CreateSubscription(t.Context(), sub, start); err != nil {
		t.Fatalf("CreateSubscription(%s on %s): %v", sub.ID, sub.Topic, err)
	}
}

func getSub(t *testing.T, s SubscriptionTestStore, id string) herald.Subscription {
	t.Helper()
	got, err := s.GetSubscription(t.Context(), id)
	if err != nil {
		t.Fatalf("GetSubscription(%s): %v", id, err)
	}
	return got
}

// cursorsOf returns the subscription's cursors sorted by topic (the
// contract gives no order). An unknown subscription may have none or be
// CodeNotFound.
func cursorsOf(t *testing.T, s SubscriptionTestStore, id string) []herald.Cursor {
	t.Helper()
	cs, err := s.Cursors(t.Context(), id)
	if herald.IsCode(err, herald.CodeNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("Cursors(%s): %v", id, err)
	}
	slices.SortFunc(cs, func(a, b herald.Cursor) int { return cmp.Compare(a.Topic, b.Topic) })
	return cs
}

func wantCursors(t *testing.T, what string, s SubscriptionTestStore, id string, want ...herald.Cursor) {
	t.Helper()
	got := cursorsOf(t, s, id)
	slices.SortFunc(want, func(a, b herald.Cursor) int { return cmp.Compare(a.Topic, b.Topic) })
	if !slices.Equal(got, want) {
		t.Fatalf("%s: cursors of %s are %v, want %v", what, id, got, want)
	}
}

// lease takes the subscription's lease for nodeA at t0 for a day and
// returns its epoch.
func lease(t *testing.T, s SubscriptionTestStore, id string) int64 {
	t.Helper()
	epoch, err := s.AcquireLease(t.Context(), id, nodeA, t0, 24*time.Hour)
	if err != nil {
		t.Fatalf("AcquireLease(%s): %v", id, err)
	}
	return epoch
}

// settle runs one Settle call and fails the test on a call error.
func settle(t *testing.T, s SubscriptionTestStore, items ...herald.SettleItem) []error {
	t.Helper()
	errs, err := s.Settle(t.Context(), items)
	if err != nil {
		t.Fatalf("Settle(%d items): %v", len(items), err)
	}
	if len(errs) != len(items) {
		t.Fatalf("Settle(%d items) returned %d errors", len(items), len(errs))
	}
	return errs
}

// settleOK settles one item and requires it to apply.
func settleOK(t *testing.T, s SubscriptionTestStore, id string, epoch int64, st herald.Settlement) {
	t.Helper()
	errs := settle(t, s, herald.SettleItem{SubscriptionID: id, Epoch: epoch, Settlement: st})
	if errs[0] != nil {
		t.Fatalf("Settle(%s, epoch %d): %v", id, epoch, errs[0])
	}
}

// retry returns a retry row; due zero means blocked.
func retry(id, topic string, seq int64, key string, attempt int, due time.Time) herald.Retry {
	return herald.Retry{SubscriptionID: id, Topic: topic, Seq: seq, EventID: fmt.Sprintf("evt-%s-%d", topic, seq),
		Key: key, Attempt: attempt, DueAt: due, LastError: fmt.Sprintf("HTTP 500 on try %d", attempt)}
}

func deadLetter(id, topic string, seq int64, key string, attempts int, deadAt time.Time) herald.DeadLetter {
	return herald.DeadLetter{SubscriptionID: id, Topic: topic, Seq: seq, EventID: fmt.Sprintf("evt-%s-%d", topic, seq),
		Key: key, Attempts: attempts, LastError: "connection refused", DeadAt: deadAt}
}

// allRetries returns every retry of the subscription, due or blocked, in
// (topic, seq) order: the due ones through DueRetries far in the future,
// the blocked ones through RetryKeys (only keyed retries can be blocked).
func allRetries(t *testing.T, s SubscriptionTestStore, id string) []herald.Retry {
	t.Helper()
	due, _, err := s.DueRetries(t.Context(), id, at(1_000_000_000), 100_000)
	if err != nil && !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("DueRetries(%s): %v", id, err)
	}
	keyed, err := s.RetryKeys(t.Context(), id)
	if err != nil && !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("RetryKeys(%s): %v", id, err)
	}
	out := due
	for _, r := range keyed {
		if r.DueAt.IsZero() {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b herald.Retry) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Seq, b.Seq))
	})
	return out
}

// sameRetries compares retries field by field (SubscriptionID included),
// in order.
func sameRetries(t *testing.T, what string, got []herald.Retry, want ...herald.Retry) {
	t.Helper()
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		g, w := got[i], want[i]
		same = g.SubscriptionID == w.SubscriptionID && g.Topic == w.Topic && g.Seq == w.Seq && g.EventID == w.EventID &&
			g.Key == w.Key && g.Attempt == w.Attempt && g.DueAt.Equal(w.DueAt) && g.LastError == w.LastError
	}
	if !same {
		t.Fatalf("%s: retries\n  got  %s\n  want %s", what, fmtRetries(got), fmtRetries(want))
	}
}

func fmtRetries(rs []herald.Retry) string {
	var b bytes.Buffer
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		due := "blocked"
		if !r.DueAt.IsZero() {
			due = "due " + r.DueAt.Sub(t0).String()
		}
		fmt.Fprintf(&b, "{%s %s/%d id %s key %q try %d %s err %q}", r.SubscriptionID, r.Topic, r.Seq, r.EventID, r.Key, r.Attempt, due, r.LastError)
	}
	return "[" + b.String() + "]"
}

func countRetries(t *testing.T, s SubscriptionTestStore, id string) int64 {
	t.Helper()
	n, err := s.CountRetries(t.Context(), id)
	if herald.IsCode(err, herald.CodeNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("CountRetries(%s): %v", id, err)
	}
	return n
}

func countDead(t *testing.T, s SubscriptionTestStore, id string) int64 {
	t.Helper()
	n, err := s.CountDeadLetters(t.Context(), id)
	if herald.IsCode(err, herald.CodeNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("CountDeadLetters(%s): %v", id, err)
	}
	return n
}

// allDead returns every dead letter of the subscription in (topic, seq)
// order.
func allDead(t *testing.T, s SubscriptionTestStore, id string) []herald.DeadLetter {
	t.Helper()
	ds, err := s.ListDeadLetters(t.Context(), id, herald.Cursor{}, 100_000)
	if herald.IsCode(err, herald.CodeNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("ListDeadLetters(%s): %v", id, err)
	}
	return ds
}

func sameDead(t *testing.T, what string, got []herald.DeadLetter, want ...herald.DeadLetter) {
	t.Helper()
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		g, w := got[i], want[i]
		same = g.SubscriptionID == w.SubscriptionID && g.Topic == w.Topic && g.Seq == w.Seq && g.EventID == w.EventID &&
			g.Key == w.Key && g.Attempts == w.Attempts && g.LastError == w.LastError && g.DeadAt.Equal(w.DeadAt)
	}
	if !same {
		t.Fatalf("%s: dead letters\n  got  %+v\n  want %+v", what, got, want)
	}
}

// attempts lists the subscription's attempts with the filter.
func attempts(t *testing.T, s SubscriptionTestStore, id string, f herald.AttemptFilter) []herald.Attempt {
	t.Helper()
	as, err := s.ListAttempts(t.Context(), id, f)
	if herald.IsCode(err, herald.CodeNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("ListAttempts(%s, %+v): %v", id, f, err)
	}
	return as
}

func attemptSeqs(as []herald.Attempt) []int64 {
	out := make([]int64, len(as))
	for i, a := range as {
		out[i] = a.Seq
	}
	return out
}

// subTopic creates a topic with n events (times at(1), at(2), ...; keys
// from keys in turn when given) and returns the events.
func subTopic(t *testing.T, s SubscriptionTestStore, name string, n int, keys ...string) []*herald.Event {
	t.Helper()
	putTopic(t, s, topic(name))
	if n == 0 {
		return nil
	}
	evs := make([]*herald.Event, n)
	for i := range evs {
		evs[i] = event(name, at(i+1), fmt.Sprintf("%s-%d", name, i+1))
		if len(keys) > 0 {
			evs[i].Key = keys[i%len(keys)]
		}
	}
	appendStored(t, s, evs...)
	return evs
}
