package postgres

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// leasedSub creates a subscription on topic and takes its lease for node
// "n1"; it returns the epoch.
func leasedSub(t *testing.T, s *Store, id, topic string, now time.Time) int64 {
	t.Helper()
	createSub(t, s, testSub(id, topic, now), herald.StartPosition{})
	epoch, err := s.AcquireLease(t.Context(), id, "n1", now, time.Hour)
	if err != nil {
		t.Fatalf("AcquireLease %s: %v", id, err)
	}
	return epoch
}

// settle applies the items and returns their errors; a call error fails
// the test.
func settle(t *testing.T, s *Store, items ...herald.SettleItem) []error {
	t.Helper()
	errs, err := s.Settle(t.Context(), items)
	if err != nil {
		t.Fatalf("Settle: %v", err)
	}
	if len(errs) != len(items) {
		t.Fatalf("Settle returned %d errors for %d items", len(errs), len(items))
	}
	return errs
}

func settleOK(t *testing.T, s *Store, items ...herald.SettleItem) {
	t.Helper()
	for i, err := range settle(t, s, items...) {
		if err != nil {
			t.Fatalf("Settle item %d: %v", i, err)
		}
	}
}

// retrySet returns the subscription's retries as "topic/seq:attempt@due"
// strings in (topic, seq) order, with "blocked" for no due time and the due
// time as an offset from base.
func retrySet(t *testing.T, s *Store, id string, base time.Time) []string {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `SELECT topic, seq, attempt, coalesce(due_at, 0) FROM retries
		WHERE subscription_id = $1 ORDER BY topic, seq`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var topic string
		var seq, attempt, due int64
		if err := rows.Scan(&topic, &seq, &attempt, &due); err != nil {
			t.Fatal(err)
		}
		d := "blocked"
		if due != 0 {
			d = fromNanos(due).Sub(base).String()
		}
		out = append(out, fmt.Sprintf("%s/%d:%d@%s", topic, seq, attempt, d))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func wantRetrySet(t *testing.T, s *Store, id string, base time.Time, want ...string) {
	t.Helper()
	if got := retrySet(t, s, id, base); !slices.Equal(got, want) {
		t.Fatalf("retry set of %s: %q, want %q", id, got, want)
	}
}

func retry(topic string, seq int64, key string, attempt int, due time.Time) herald.Retry {
	return herald.Retry{Topic: topic, Seq: seq, EventID: fmt.Sprintf("ev%d", seq), Key: key, Attempt: attempt, DueAt: due, LastError: "HTTP 500"}
}

// A settlement under a stale epoch changes nothing; the other items of
// the call apply.
func TestSettleFencing(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	old := leasedSub(t, s, "sub_a", "orders", now)
	eb := leasedSub(t, s, "sub_b", "orders", now)
	// n2 takes sub_a over once n1's lease has expired.
	cur, err := s.AcquireLease(ctx, "sub_a", "n2", now.Add(2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	change := herald.Settlement{
		Cursors:     []herald.Cursor{{Topic: "orders", Seq: 9}},
		AddRetries:  []herald.Retry{retry("orders", 3, "", 1, now)},
		DeadLetters: []herald.DeadLetter{{Topic: "orders", Seq: 2, EventID: "ev2", Attempts: 5, DeadAt: now}},
		Attempts:    []herald.Attempt{{Topic: "orders", Seq: 3, EventID: "ev3", Attempt: 1, Time: now, Outcome: herald.OutcomeFailure}},
		LastSuccess: now, Activity: now,
	}
	before := getSub(t, s, "sub_a")
	errs := settle(t, s,
		herald.SettleItem{SubscriptionID: "sub_a", Epoch: old, Settlement: change},
		herald.SettleItem{SubscriptionID: "sub_b", Epoch: eb, Settlement: change},
		herald.SettleItem{SubscriptionID: "sub_gone", Epoch: 1, Settlement: change},
	)
	wantCode(t, "stale epoch", errs[0], herald.CodeConflict)
	if errs[1] != nil {
		t.Fatalf("current epoch: %v", errs[1])
	}
	wantCode(t, "missing subscription", errs[2], herald.CodeNotFound)

	if got := cursorsOf(t, s, "sub_a"); got["orders"] != 0 {
		t.Errorf("fenced cursor moved to %d", got["orders"])
	}
	for what, count := range map[string]func() (int64, error){
		"retries":      func() (int64, error) { return s.CountRetries(ctx, "sub_a") },
		"dead letters": func() (int64, error) { return s.CountDeadLetters(ctx, "sub_a") },
	} {
		if n, err := count(); err != nil || n != 0 {
			t.Errorf("fenced %s: %d %v, want 0", what, n, err)
		}
	}
	if as, err := s.ListAttempts(ctx, "sub_a", herald.AttemptFilter{}); err != nil || len(as) != 0 {
		t.Errorf("fenced attempts: %d %v", len(as), err)
	}
	if got := getSub(t, s, "sub_a"); !reflect.DeepEqual(got, before) {
		t.Errorf("fenced subscription changed:\n got %+v\nwant %+v", got, before)
	}
	// The new holder's epoch works, and sub_b's item applied.
	settleOK(t, s, herald.SettleItem{SubscriptionID: "sub_a", Epoch: cur, Settlement: change})
	for _, id := range []string{"sub_a", "sub_b"} {
		if got := cursorsOf(t, s, id); got["orders"] != 9 {
			t.Errorf("%s cursor at %d, want 9", id, got["orders"])
		}
		if n, _ := s.CountRetries(ctx, id); n != 1 {
			t.Errorf("%s has %d retries, want 1", id, n)
		}
	}
}

// Within an item the changes apply in the documented order, and items of
// one subscription in one call apply one after the other.
func TestSettleOrder(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	ep := leasedSub(t, s, "sub_1", "orders", now)
	item := func(st herald.Settlement) herald.SettleItem {
		return herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep, Settlement: st}
	}

	// Cursors only advance; the highest of one item wins.
	settleOK(t, s, item(herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 5}, {Topic: "orders", Seq: 7}, {Topic: "x", Seq: 2}}}))
	settleOK(t, s, item(herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 6}, {Topic: "x", Seq: 3}}}))
	if got, want := cursorsOf(t, s, "sub_1"), map[string]int64{"orders": 7, "x": 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("cursors %v, want %v", got, want)
	}

	// AddRetries: a due row replaces, a blocked one keeps what is there.
	settleOK(t, s, item(herald.Settlement{AddRetries: []herald.Retry{
		retry("orders", 1, "", 1, now.Add(time.Second)),
		retry("orders", 2, "k", 0, time.Time{}),
		retry("orders", 5, "", 1, now.Add(2*time.Second)),
	}}))
	settleOK(t, s, item(herald.Settlement{AddRetries: []herald.Retry{
		retry("orders", 1, "", 2, now.Add(3*time.Second)), // next attempt: replaces
		retry("orders", 2, "k", 0, time.Time{}),           // read again after a restart: kept
		retry("orders", 3, "k", 0, time.Time{}),
		retry("orders", 3, "k", 1, now.Add(time.Second)), // due after blocked in one item: due wins
		retry("orders", 4, "", 1, now.Add(time.Second)),
		retry("orders", 4, "", 0, time.Time{}), // blocked after due in one item: due stays
		retry("orders", 5, "", 0, time.Time{}), // read again after a restart: kept
	}}))
	wantRetrySet(t, s, "sub_1", now, "orders/1:2@3s", "orders/2:0@blocked", "orders/3:1@1s", "orders/4:1@1s", "orders/5:1@2s")

	// One item: a retry added, then delivered (DoneRetries), then a dead
	// letter that removes another retry; UnblockKeys then sees key k with
	// only blocked rows left and makes its lowest seq due.
	settleOK(t, s, item(herald.Settlement{
		AddRetries:  []herald.Retry{retry("orders", 9, "", 1, now)},
		DoneRetries: []herald.Cursor{{Topic: "orders", Seq: 9}, {Topic: "orders", Seq: 1}},
		DeadLetters: []herald.DeadLetter{{Topic: "orders", Seq: 3, EventID: "ev3", Key: "k", Attempts: 5, LastError: "HTTP 503", DeadAt: now}},
		UnblockKeys: []herald.RetryKey{{Topic: "orders", Key: "k"}},
		UnblockAt:   now.Add(time.Minute),
	}))
	wantRetrySet(t, s, "sub_1", now, "orders/2:0@1m0s", "orders/4:1@1s", "orders/5:1@2s")
	dls, err := s.ListDeadLetters(ctx, "sub_1", herald.Cursor{}, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters: %v %v", dls, err)
	}
	wantDL := herald.DeadLetter{SubscriptionID: "sub_1", Topic: "orders", Seq: 3, EventID: "ev3", Key: "k", Attempts: 5, LastError: "HTTP 503", DeadAt: now}
	if !reflect.DeepEqual(dls[0], wantDL) {
		t.Fatalf("dead letter %+v, want %+v", dls[0], wantDL)
	}

	// LastSuccess clears FailingSince, then FailingSince starts a run;
	// UpdatedAt never moves. Two items of the subscription in one call
	// apply in order: the second one's FailingSince does not replace the
	// run the first one started.
	sub := getSub(t, s, "sub_1")
	t1, t2, t3 := now.Add(time.Minute), now.Add(2*time.Minute), now.Add(3*time.Minute)
	settleOK(t, s,
		item(herald.Settlement{LastSuccess: t1, FailingSince: t2, Activity: t1}),
		item(herald.Settlement{FailingSince: t3, Activity: t3}),
	)
	got := getSub(t, s, "sub_1")
	if !got.LastSuccessAt.Equal(t1) || !got.FailingSince.Equal(t2) || !got.LastActivityAt.Equal(t3) || !got.UpdatedAt.Equal(sub.UpdatedAt) {
		t.Fatalf("after settle: last success %v, failing since %v, activity %v, updated %v; want %v, %v, %v, %v",
			got.LastSuccessAt, got.FailingSince, got.LastActivityAt, got.UpdatedAt, t1, t2, t3, sub.UpdatedAt)
	}
	settleOK(t, s, item(herald.Settlement{LastSuccess: t3}))
	if got := getSub(t, s, "sub_1"); !got.LastSuccessAt.Equal(t3) || !got.FailingSince.IsZero() {
		t.Fatalf("success after failures: last success %v, failing since %v", got.LastSuccessAt, got.FailingSince)
	}

	// Two items in one call: the first adds a retry, the second delivers it.
	settleOK(t, s,
		item(herald.Settlement{AddRetries: []herald.Retry{retry("orders", 20, "", 1, now)}}),
		item(herald.Settlement{DoneRetries: []herald.Cursor{{Topic: "orders", Seq: 20}}}),
	)
	wantRetrySet(t, s, "sub_1", now, "orders/2:0@1m0s", "orders/4:1@1s", "orders/5:1@2s")

	// An empty settlement is fine; an invalid item fails alone.
	errs := settle(t, s, item(herald.Settlement{}),
		item(herald.Settlement{Cursors: []herald.Cursor{{Topic: "bad\x00", Seq: 1}}}),
		item(herald.Settlement{UnblockKeys: []herald.RetryKey{{Topic: "orders", Key: "k"}}}))
	if errs[0] != nil {
		t.Fatalf("empty settlement: %v", errs[0])
	}
	wantCode(t, "NUL in a topic", errs[1], herald.CodeInvalid)
	wantCode(t, "UnblockKeys without UnblockAt", errs[2], herald.CodeInvalid)
}

// An ordered chain: events of one key behind a failed one are blocked;
// each delivery from the retry set makes the next one due, so the key
// always has exactly one due retry until the chain is empty.
func TestSettleOrderedChain(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	ep := leasedSub(t, s, "sub_1", "orders", now)
	item := func(st herald.Settlement) herald.SettleItem {
		st.UnblockAt = now
		return herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep, Settlement: st}
	}
	k := herald.RetryKey{Topic: "orders", Key: "cus_1"}
	// Event 1 failed (due in 5s); 2 and 4 of the same key are blocked
	// behind it, 3 of another key is not involved.
	settleOK(t, s, item(herald.Settlement{
		AddRetries: []herald.Retry{
			retry("orders", 1, "cus_1", 1, now.Add(5*time.Second)),
			retry("orders", 2, "cus_1", 0, time.Time{}),
			retry("orders", 4, "cus_1", 0, time.Time{}),
		},
		UnblockKeys: []herald.RetryKey{k},
	}))
	wantRetrySet(t, s, "sub_1", now, "orders/1:1@5s", "orders/2:0@blocked", "orders/4:0@blocked")
	keys, err := s.RetryKeys(ctx, "sub_1")
	if err != nil || len(keys) != 3 || keys[0].Seq != 1 || keys[2].Seq != 4 || keys[1].Key != "cus_1" {
		t.Fatalf("RetryKeys: %+v %v", keys, err)
	}
	due, next, err := s.DueRetries(ctx, "sub_1", now, 10)
	if err != nil || len(due) != 0 || !next.Equal(now.Add(5*time.Second)) {
		t.Fatalf("DueRetries before the first is due: %v next %v %v", due, next, err)
	}

	// 1 delivered: 2 becomes due.
	settleOK(t, s, item(herald.Settlement{DoneRetries: []herald.Cursor{{Topic: "orders", Seq: 1}}, UnblockKeys: []herald.RetryKey{k}}))
	wantRetrySet(t, s, "sub_1", now, "orders/2:0@0s", "orders/4:0@blocked")
	// 2 fails again: due later, 4 stays blocked (the key has one due).
	settleOK(t, s, item(herald.Settlement{AddRetries: []herald.Retry{retry("orders", 2, "cus_1", 1, now.Add(time.Minute))}, UnblockKeys: []herald.RetryKey{k}}))
	wantRetrySet(t, s, "sub_1", now, "orders/2:1@1m0s", "orders/4:0@blocked")
	// 2 dead-lettered: 4 becomes due.
	settleOK(t, s, item(herald.Settlement{
		DeadLetters: []herald.DeadLetter{{Topic: "orders", Seq: 2, EventID: "ev2", Key: "cus_1", Attempts: 2, DeadAt: now}},
		UnblockKeys: []herald.RetryKey{k},
	}))
	wantRetrySet(t, s, "sub_1", now, "orders/4:0@0s")
	// 4 delivered: the chain is empty, nothing to unblock.
	settleOK(t, s, item(herald.Settlement{DoneRetries: []herald.Cursor{{Topic: "orders", Seq: 4}}, UnblockKeys: []herald.RetryKey{k}}))
	wantRetrySet(t, s, "sub_1", now)
}

func TestDueRetries(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	ep := leasedSub(t, s, "sub_1", "orders", now)
	settleOK(t, s, herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep, Settlement: herald.Settlement{AddRetries: []herald.Retry{
		retry("orders", 5, "", 1, now.Add(-time.Second)),
		retry("orders", 1, "", 1, now),
		retry("b", 2, "", 1, now.Add(-time.Second)),
		retry("orders", 3, "", 1, now.Add(time.Minute)),
		retry("orders", 4, "k", 0, time.Time{}),
		retry("orders", 6, "", 2, now.Add(time.Hour)),
	}}})
	seqs := func(rs []herald.Retry) []string {
		var out []string
		for _, r := range rs {
			out = append(out, fmt.Sprintf("%s/%d", r.Topic, r.Seq))
		}
		return out
	}
	due, next, err := s.DueRetries(ctx, "sub_1", now, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := seqs(due), []string{"b/2", "orders/5", "orders/1"}; !slices.Equal(got, want) || !next.Equal(now.Add(time.Minute)) {
		t.Fatalf("due %v next %v, want %v next %v", got, next, want, now.Add(time.Minute))
	}
	wantRetry := herald.Retry{SubscriptionID: "sub_1", Topic: "b", Seq: 2, EventID: "ev2", Attempt: 1, DueAt: now.Add(-time.Second), LastError: "HTTP 500"}
	if !reflect.DeepEqual(due[0], wantRetry) {
		t.Fatalf("retry %+v, want %+v", due[0], wantRetry)
	}
	// With a limit the next due time is the first one left out.
	due, next, err = s.DueRetries(ctx, "sub_1", now, 2)
	if got := seqs(due); err != nil || !slices.Equal(got, []string{"b/2", "orders/5"}) || !next.Equal(now) {
		t.Fatalf("limit 2: due %v next %v %v", got, next, err)
	}
	// Nothing left after them: zero.
	due, next, err = s.DueRetries(ctx, "sub_1", now.Add(2*time.Hour), 10)
	if err != nil || len(due) != 5 || !next.IsZero() {
		t.Fatalf("all due: %v next %v %v", seqs(due), next, err)
	}
	if n, err := s.CountRetries(ctx, "sub_1"); err != nil || n != 6 {
		t.Fatalf("CountRetries: %d %v, want 6", n, err)
	}
}

func TestScheduleReplay(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	putTopic(t, s, "orders")
	appendN(t, s, "orders", 10, now, "cus_1")
	ep := leasedSub(t, s, "sub_1", "orders", now)
	// Event 3 is already in the retry set; events 1 and 2 left retention.
	settleOK(t, s, herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep, Settlement: herald.Settlement{
		AddRetries: []herald.Retry{retry("orders", 3, "cus_1", 4, now.Add(time.Hour))},
	}})
	if _, err := s.pool.Exec(ctx, `DELETE FROM events WHERE seq <= 2`); err != nil {
		t.Fatal(err)
	}
	n, err := s.ScheduleReplay(ctx, "sub_1", "orders", 1, 6, now, 2)
	if err != nil || n != 2 {
		t.Fatalf("replay 1-6 limit 2: %d %v, want 2", n, err)
	}
	n, err = s.ScheduleReplay(ctx, "sub_1", "orders", 1, 6, now, 100)
	if err != nil || n != 1 {
		t.Fatalf("replay 1-6 again: %d %v, want 1", n, err)
	}
	wantRetrySet(t, s, "sub_1", now, "orders/3:4@1h0m0s", "orders/4:0@0s", "orders/5:0@0s", "orders/6:0@0s")
	due, _, err := s.DueRetries(ctx, "sub_1", now, 1)
	ev, _ := s.ReadEvents(ctx, "orders", 3, 1)
	if err != nil || len(due) != 1 || due[0].EventID != ev[0].ID || due[0].Key != "cus_1" {
		t.Fatalf("replayed retry %+v %v, want event %s with its key", due, err, ev[0].ID)
	}
	if n, err := s.ScheduleReplay(ctx, "sub_1", "nothing", 1, 6, now, 10); err != nil || n != 0 {
		t.Fatalf("replay of a missing topic: %d %v", n, err)
	}
	_, err = s.ScheduleReplay(ctx, "sub_missing", "orders", 1, 6, now, 10)
	wantCode(t, "replay for a missing subscription", err, herald.CodeNotFound)
}

func TestDeadLetters(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	ep := leasedSub(t, s, "sub_1", "orders", now)
	var dls []herald.DeadLetter
	for i, topic := range []string{"b", "a", "b", "a", "c"} {
		seq := int64(10 - i)
		dls = append(dls, herald.DeadLetter{Topic: topic, Seq: seq, EventID: fmt.Sprintf("ev%d", seq), Attempts: 3, LastError: "timeout", DeadAt: now})
	}
	settleOK(t, s, herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep, Settlement: herald.Settlement{
		DeadLetters: dls,
		AddRetries:  []herald.Retry{retry("b", 10, "", 7, now.Add(time.Hour))}, // removed by its dead letter
	}})
	// A retry of ev8 exists when it is redriven: replaced.
	settleOK(t, s, herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep, Settlement: herald.Settlement{
		AddRetries: []herald.Retry{retry("b", 8, "", 2, now.Add(time.Hour))},
	}})
	var pages []string
	after := herald.Cursor{}
	for {
		page, err := s.ListDeadLetters(ctx, "sub_1", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page {
			pages = append(pages, fmt.Sprintf("%s/%d", d.Topic, d.Seq))
		}
		if len(page) < 2 {
			break
		}
		after = herald.Cursor{Topic: page[1].Topic, Seq: page[1].Seq}
	}
	if want := []string{"a/7", "a/9", "b/8", "b/10", "c/6"}; !slices.Equal(pages, want) {
		t.Fatalf("pages %v, want %v", pages, want)
	}

	later := now.Add(time.Minute)
	n, err := s.RedriveDeadLetters(ctx, "sub_1", []string{"ev8", "ev9", "nope"}, later)
	if err != nil || n != 2 {
		t.Fatalf("redrive 2: %d %v", n, err)
	}
	wantRetrySet(t, s, "sub_1", now, "a/9:0@1m0s", "b/8:0@1m0s")
	if n, err := s.CountDeadLetters(ctx, "sub_1"); err != nil || n != 3 {
		t.Fatalf("CountDeadLetters: %d %v, want 3", n, err)
	}
	if n, err := s.DeleteDeadLetters(ctx, "sub_1", []string{"ev6"}); err != nil || n != 1 {
		t.Fatalf("delete 1: %d %v", n, err)
	}
	if n, err := s.RedriveDeadLetters(ctx, "sub_1", []string{}, later); err != nil || n != 0 {
		t.Fatalf("redrive none: %d %v", n, err)
	}
	if n, err := s.RedriveDeadLetters(ctx, "sub_1", nil, later); err != nil || n != 2 {
		t.Fatalf("redrive all: %d %v", n, err)
	}
	wantRetrySet(t, s, "sub_1", now, "a/7:0@1m0s", "a/9:0@1m0s", "b/8:0@1m0s", "b/10:0@1m0s")
	settleOK(t, s, herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep, Settlement: herald.Settlement{DeadLetters: dls[:2]}})
	if n, err := s.DeleteDeadLetters(ctx, "sub_1", nil); err != nil || n != 2 {
		t.Fatalf("delete all: %d %v", n, err)
	}
	_, err = s.RedriveDeadLetters(ctx, "sub_missing", nil, later)
	wantCode(t, "redrive for a missing subscription", err, herald.CodeNotFound)
}

func TestAttempts(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	ep1 := leasedSub(t, s, "sub_1", "orders", now)
	ep2 := leasedSub(t, s, "sub_2", "orders", now)
	attempt := func(i int) herald.Attempt {
		a := herald.Attempt{Topic: "orders", Seq: int64(i % 3), EventID: fmt.Sprintf("ev%d", i%3), Attempt: i/3 + 1,
			Time: now.Add(time.Duration(i) * time.Second), Outcome: herald.OutcomeFailure, StatusCode: 500,
			Latency: time.Duration(i) * time.Millisecond, Error: "HTTP 500", Response: "oops"}
		if i%2 == 0 {
			a.Outcome, a.StatusCode, a.Error = herald.OutcomeSuccess, 200, ""
		}
		return a
	}
	var first, second []herald.Attempt
	for i := range 6 {
		first = append(first, attempt(i))
		second = append(second, attempt(i+6))
	}
	// What an endpoint answers is kept byte for byte; a bad error text is
	// made storable, not refused.
	second[5].Response = "\xff\x00binary"
	second[5].Error = "bad \xff\x00 text"
	settleOK(t, s,
		herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep1, Settlement: herald.Settlement{Attempts: first}},
		herald.SettleItem{SubscriptionID: "sub_2", Epoch: ep2, Settlement: herald.Settlement{Attempts: first}},
		herald.SettleItem{SubscriptionID: "sub_1", Epoch: ep1, Settlement: herald.Settlement{Attempts: second}},
	)
	all, err := s.ListAttempts(ctx, "sub_1", herald.AttemptFilter{})
	if err != nil || len(all) != 12 {
		t.Fatalf("ListAttempts: %d %v, want 12", len(all), err)
	}
	for i, a := range all {
		want := append(slices.Clone(first), second...)[11-i]
		want.ID, want.SubscriptionID = a.ID, "sub_1"
		if i == 0 {
			want.Error = "bad \uFFFD text"
		}
		if !reflect.DeepEqual(a, want) {
			t.Fatalf("attempt %d: %+v, want %+v", i, a, want)
		}
		if i > 0 && a.ID >= all[i-1].ID {
			t.Fatalf("attempts not newest first: id %d after %d", a.ID, all[i-1].ID)
		}
	}
	// Pages by BeforeID.
	var paged []int64
	for before := int64(0); ; {
		page, err := s.ListAttempts(ctx, "sub_1", herald.AttemptFilter{BeforeID: before, Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page {
			paged = append(paged, a.ID)
		}
		if len(page) < 5 {
			break
		}
		before = page[len(page)-1].ID
	}
	var ids []int64
	for _, a := range all {
		ids = append(ids, a.ID)
	}
	if !slices.Equal(paged, ids) {
		t.Fatalf("paged ids %v, want %v", paged, ids)
	}
	ev1, err := s.ListAttempts(ctx, "sub_1", herald.AttemptFilter{EventID: "ev1", Outcome: herald.OutcomeFailure})
	if err != nil || len(ev1) != 2 { // attempts 1 and 7 (i%3 == 1, odd)
		t.Fatalf("ev1 failures: %d %v, want 2", len(ev1), err)
	}
	for _, a := range ev1 {
		if a.EventID != "ev1" || a.Outcome != herald.OutcomeFailure {
			t.Fatalf("filtered attempt %+v", a)
		}
	}

	// Prune: the attempts before now+4s are those of i = 0 to 3, in each
	// subscription: 8 in all.
	var pruned []int64
	for {
		n, err := s.PruneAttempts(ctx, now.Add(4*time.Second), 3)
		if err != nil {
			t.Fatal(err)
		}
		pruned = append(pruned, n)
		if n < 3 {
			break
		}
	}
	if !slices.Equal(pruned, []int64{3, 3, 2}) {
		t.Fatalf("prune counts %v, want [3 3 2]", pruned)
	}
	left, _ := s.ListAttempts(ctx, "sub_2", herald.AttemptFilter{})
	if len(left) != 2 {
		t.Fatalf("sub_2 has %d attempts after pruning, want 2", len(left))
	}
}

// DeleteTopic takes every subscription's cursor, retries and dead letters
// in the topic with it; DeleteSubscription takes everything of the
// subscription.
func TestDeleteTopicAndSubscriptionState(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	putTopic(t, s, "orders")
	putTopic(t, s, "refunds")
	appendN(t, s, "orders", 3, now, "")
	appendN(t, s, "refunds", 3, now, "")
	var eps []int64
	for _, id := range []string{"sub_1", "sub_2"} {
		ep := leasedSub(t, s, id, ">", now)
		eps = append(eps, ep)
		settleOK(t, s, herald.SettleItem{SubscriptionID: id, Epoch: ep, Settlement: herald.Settlement{
			Cursors:     []herald.Cursor{{Topic: "orders", Seq: 3}, {Topic: "refunds", Seq: 3}},
			AddRetries:  []herald.Retry{retry("orders", 1, "", 1, now), retry("refunds", 1, "", 1, now)},
			DeadLetters: []herald.DeadLetter{{Topic: "orders", Seq: 2, EventID: "ev2", DeadAt: now}, {Topic: "refunds", Seq: 2, EventID: "ev2", DeadAt: now}},
			Attempts:    []herald.Attempt{{Topic: "orders", Seq: 1, EventID: "ev1", Attempt: 1, Time: now, Outcome: herald.OutcomeFailure}},
		}})
	}
	if err := s.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	putTopic(t, s, "orders")
	for _, id := range []string{"sub_1", "sub_2"} {
		if got, want := cursorsOf(t, s, id), map[string]int64{"refunds": 3}; !reflect.DeepEqual(got, want) {
			t.Fatalf("%s cursors after DeleteTopic: %v, want %v", id, got, want)
		}
		wantRetrySet(t, s, id, now, "refunds/1:1@0s")
		dls, err := s.ListDeadLetters(ctx, id, herald.Cursor{}, 10)
		if err != nil || len(dls) != 1 || dls[0].Topic != "refunds" {
			t.Fatalf("%s dead letters after DeleteTopic: %+v %v", id, dls, err)
		}
	}

	if err := s.DeleteSubscription(ctx, "sub_1"); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"cursors", "retries", "dead_letters", "attempts"} {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE subscription_id = 'sub_1'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s rows of a deleted subscription: %d %v", table, n, err)
		}
	}
	if got := cursorsOf(t, s, "sub_2"); len(got) != 1 {
		t.Errorf("sub_2 lost its cursors: %v", got)
	}
	// A settlement for the deleted subscription reports it gone.
	errs := settle(t, s, herald.SettleItem{SubscriptionID: "sub_1", Epoch: eps[0], Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "refunds", Seq: 4}}}})
	wantCode(t, "settle a deleted subscription", errs[0], herald.CodeNotFound)
}

// Two nodes settle many subscriptions at once in overlapping, shuffled
// batches while topics are deleted under them: lock ordering keeps every
// call from deadlocking, and no write is lost.
func TestSettleConcurrent(t *testing.T) {
	dsn, _ := testDSN(t)
	nodes := []*Store{openTest(t, dsn), openTest(t, dsn)}
	ctx := t.Context()
	now := time.Now().UTC()
	const subs, writers, calls = 12, 6, 25
	epochs := make(map[string]int64)
	for i := range subs {
		id := fmt.Sprintf("sub_%02d", i)
		epochs[id] = leasedSub(t, nodes[0], id, ">", now)
	}
	var wg sync.WaitGroup
	for w := range writers {
		node := nodes[w%2]
		wg.Go(func() {
			for c := range calls {
				var items []herald.SettleItem
				for j := range subs {
					id := fmt.Sprintf("sub_%02d", (j*7+w+c)%subs)
					seq := int64(c + 1)
					items = append(items, herald.SettleItem{SubscriptionID: id, Epoch: epochs[id], Settlement: herald.Settlement{
						Cursors:     []herald.Cursor{{Topic: "t", Seq: seq}, {Topic: fmt.Sprint("gone.", c%3), Seq: seq}},
						AddRetries:  []herald.Retry{retry("t", seq*100+int64(w), "k", 1, now), retry(fmt.Sprint("gone.", c%3), seq, "", 1, now)},
						Attempts:    []herald.Attempt{{Topic: "t", Seq: seq, EventID: "e", Attempt: 1, Time: now, Outcome: herald.OutcomeSuccess}},
						LastSuccess: now, Activity: now,
					}})
				}
				errs, err := node.Settle(ctx, items)
				if err != nil {
					t.Errorf("writer %d call %d: %v", w, c, err)
					return
				}
				for i, err := range errs {
					if err != nil {
						t.Errorf("writer %d call %d item %d: %v", w, c, i, err)
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 30 {
			name := fmt.Sprint("gone.", i%3)
			if _, _, err := nodes[1].PutTopic(ctx, herald.Topic{Name: name}.WithDefaults()); err != nil {
				t.Errorf("PutTopic: %v", err)
				return
			}
			if err := nodes[1].DeleteTopic(ctx, name); err != nil {
				t.Errorf("DeleteTopic: %v", err)
				return
			}
		}
	})
	wg.Wait()
	for id := range epochs {
		if got := cursorsOf(t, nodes[0], id); got["t"] != calls {
			t.Errorf("%s cursor at %d, want %d", id, got["t"], calls)
		}
		var n int64
		if err := nodes[0].pool.QueryRow(ctx, `SELECT count(*) FROM retries WHERE subscription_id = $1 AND topic = 't'`, id).Scan(&n); err != nil || n != writers*calls {
			t.Errorf("%s has %d retries in t, want %d (%v)", id, n, writers*calls, err)
		}
		as, err := nodes[0].ListAttempts(ctx, id, herald.AttemptFilter{})
		if err != nil || len(as) != writers*calls {
			t.Errorf("%s has %d attempts, want %d (%v)", id, len(as), writers*calls, err)
		}
	}
}

// A Settle commits without waiting for the WAL flush, for its own
// transaction only: the connection it used, the only one of the pool
// here, is back at the server's synchronous_commit afterwards, so the
// next publish on it is flushed before it is acknowledged.
func TestSettleAsyncCommitStaysInItsTransaction(t *testing.T) {
	dsn, _ := testDSN(t)
	s, err := Open(t.Context(), dsn, Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	var before string
	if err := s.pool.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if before == "off" {
		t.Skip("the server runs with synchronous_commit off: nothing to tell apart")
	}
	now := time.Now().UTC()
	putTopic(t, s, "orders")
	epoch := leasedSub(t, s, "sub_async", "orders", now)
	settleOK(t, s, herald.SettleItem{SubscriptionID: "sub_async", Epoch: epoch,
		Settlement: herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 1}}}})
	var after string
	if err := s.pool.QueryRow(t.Context(), `SHOW synchronous_commit`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("synchronous_commit after a Settle = %q, want the server's %q", after, before)
	}
	cursors, err := s.Cursors(t.Context(), "sub_async")
	if err != nil || len(cursors) != 1 || cursors[0].Seq != 1 {
		t.Fatalf("Cursors = %v, %v; want orders at 1", cursors, err)
	}
}
