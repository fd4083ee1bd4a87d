package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func runRetries(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("DueRetriesOrderLimitAndNextDue", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders.>"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_2", "orders.>"), herald.StartPosition{})
		epoch := lease(t, s, "sub_1")
		r30 := retry("sub_1", "orders.a", 1, "", 4, at(30))
		r10 := retry("sub_1", "orders.b", 2, "k", 2, at(10))
		r20 := retry("sub_1", "orders.a", 3, "", 1, at(20))
		blocked := retry("sub_1", "orders.a", 4, "k", 0, time.Time{})
		r100 := retry("sub_1", "orders.a", 5, "", 1, at(100))
		settleOK(t, s, "sub_1", epoch, herald.Settlement{AddRetries: []herald.Retry{r30, r10, r20, blocked, r100}})
		// Another subscription's retries are not this one's.
		settleOK(t, s, "sub_2", lease(t, s, "sub_2"), herald.Settlement{AddRetries: []herald.Retry{retry("sub_2", "orders.a", 1, "", 1, at(0))}})

		cases := []struct {
			name  string
			now   time.Time
			limit int
			want  []herald.Retry
			next  time.Time
		}{
			{"nothing due yet", at(5), 10, nil, at(10)},
			{"due at exactly now", at(10), 10, []herald.Retry{r10}, at(20)},
			{"two due", at(25), 10, []herald.Retry{r10, r20}, at(30)},
			// The limit cuts off one that is due: the next due time says
			// to come back at once.
			{"limit", at(25), 1, []herald.Retry{r10}, at(20)},
			{"all due, blocked excluded", at(1000), 10, []herald.Retry{r10, r20, r30, r100}, time.Time{}},
			{"all due, limit", at(1000), 3, []herald.Retry{r10, r20, r30}, at(100)},
		}
		for _, c := range cases {
			got, next, err := s.DueRetries(t.Context(), "sub_1", c.now, c.limit)
			if err != nil {
				t.Fatalf("DueRetries %s: %v", c.name, err)
			}
			sameRetries(t, "DueRetries "+c.name, got, c.want...)
			if !next.Equal(c.next) {
				t.Fatalf("DueRetries %s: next due %v, want %v", c.name, next, c.next)
			}
		}
		// Blocked only: nothing due and no next due time.
		settleOK(t, s, "sub_1", epoch, herald.Settlement{DoneRetries: []herald.Cursor{{Topic: "orders.a", Seq: 1}, {Topic: "orders.b", Seq: 2},
			{Topic: "orders.a", Seq: 3}, {Topic: "orders.a", Seq: 5}}})
		got, next, err := s.DueRetries(t.Context(), "sub_1", at(1000), 10)
		if err != nil || len(got) != 0 || !next.IsZero() {
			t.Fatalf("DueRetries with only a blocked retry = %s, %v, %v; want none, zero", fmtRetries(got), next, err)
		}
	})

	t.Run("RetryKeysListsKeyedRetriesInTopicSeqOrder", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders.>"), herald.StartPosition{})
		rows := []herald.Retry{
			retry("sub_1", "orders.b", 1, "k", 1, at(10)),
			retry("sub_1", "orders.a", 9, "k", 0, time.Time{}),
			retry("sub_1", "orders.a", 2, "j", 3, at(5)),
			retry("sub_1", "orders.a", 3, "", 1, at(5)), // no key: not listed
			retry("sub_1", "orders.B", 4, "k", 1, at(7)),
		}
		settleOK(t, s, "sub_1", lease(t, s, "sub_1"), herald.Settlement{AddRetries: rows})
		got, err := s.RetryKeys(t.Context(), "sub_1")
		if err != nil {
			t.Fatalf("RetryKeys: %v", err)
		}
		// Byte order of topics: "orders.B" before "orders.a".
		sameRetries(t, "RetryKeys", got, rows[4], rows[2], rows[1], rows[0])
	})

	t.Run("CountRetriesCountsBlockedToo", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_2", "orders"), herald.StartPosition{})
		if n := countRetries(t, s, "sub_1"); n != 0 {
			t.Fatalf("CountRetries of a new subscription = %d", n)
		}
		settleOK(t, s, "sub_1", lease(t, s, "sub_1"), herald.Settlement{AddRetries: []herald.Retry{
			retry("sub_1", "orders", 1, "k", 1, at(1)), retry("sub_1", "orders", 2, "k", 0, time.Time{}), retry("sub_1", "orders", 3, "", 1, at(1)),
		}})
		if n := countRetries(t, s, "sub_1"); n != 3 {
			t.Fatalf("CountRetries = %d, want 3", n)
		}
		if n := countRetries(t, s, "sub_2"); n != 0 {
			t.Fatalf("CountRetries of another subscription = %d, want 0", n)
		}
	})

	t.Run("ScheduleReplay", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		// Seqs 1-2 expire; 3-8 are retained, with keys.
		tp := topic("orders")
		tp.Retention = time.Hour
		putTopic(t, s, tp)
		old := t0.Add(-2 * time.Hour)
		evs := []*herald.Event{event("orders", old, "1"), event("orders", old, "2")}
		for i := 3; i <= 8; i++ {
			e := event("orders", t0, "x")
			e.Key = []string{"k", "j"}[i%2]
			evs = append(evs, e)
		}
		appendStored(t, s, evs...)
		if n := prune(t, s, t0, 100); n != 2 {
			t.Fatalf("Prune = %d, want 2", n)
		}
		subTopic(t, s, "orders.other", 3)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_2", "orders"), herald.StartPosition{})
		// Seq 4 is already retrying: it stays as it is.
		existing := retry("sub_1", "orders", 4, evs[3].Key, 6, at(5000))
		existing.EventID = evs[3].ID
		settleOK(t, s, "sub_1", lease(t, s, "sub_1"), herald.Settlement{AddRetries: []herald.Retry{existing}})

		replayed := func(seq int64, now time.Time, sub string) herald.Retry {
			e := evs[seq-1]
			return herald.Retry{SubscriptionID: sub, Topic: "orders", Seq: seq, EventID: e.ID, Key: e.Key, DueAt: now}
		}
		n, err := s.ScheduleReplay(t.Context(), "sub_1", "orders", 1, 6, at(100), 100)
		if err != nil || n != 3 {
			t.Fatalf("ScheduleReplay(1..6) = %d, %v; want 3 (seqs 3, 5, 6: 1-2 are gone, 4 is there)", n, err)
		}
		sameRetries(t, "after replay", allRetries(t, s, "sub_1"),
			replayed(3, at(100), "sub_1"), existing, replayed(5, at(100), "sub_1"), replayed(6, at(100), "sub_1"))
		// Again: everything in range is there already.
		if n, err := s.ScheduleReplay(t.Context(), "sub_1", "orders", 1, 6, at(200), 100); err != nil || n != 0 {
			t.Fatalf("ScheduleReplay again = %d, %v; want 0", n, err)
		}

		// The limit: lowest seqs first, and a repeat of the same call
		// goes on where the last one stopped.
		for i, want := range []int64{2, 2, 2, 0} {
			n, err := s.ScheduleReplay(t.Context(), "sub_2", "orders", 2, 100, at(300), 2)
			if err != nil || n != want {
				t.Fatalf("ScheduleReplay call %d with limit 2 = %d, %v; want %d", i+1, n, err, want)
			}
			if i == 0 {
				sameRetries(t, "first call with limit 2", allRetries(t, s, "sub_2"), replayed(3, at(300), "sub_2"), replayed(4, at(300), "sub_2"))
			}
		}
		if n := countRetries(t, s, "sub_2"); n != 6 {
			t.Fatalf("CountRetries after the replays = %d, want 6", n)
		}
		// Only the named topic.
		for _, r := range allRetries(t, s, "sub_2") {
			if r.Topic != "orders" {
				t.Fatalf("replay of orders scheduled %s/%d", r.Topic, r.Seq)
			}
		}
	})
}

func runDeadLetters(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	// setup creates sub_1 (and sub_2, with one dead letter of its own) and
	// gives sub_1 dead letters in three topics; it returns sub_1's in
	// (topic, seq) byte order and its lease epoch.
	setup := func(t *testing.T, s SubscriptionTestStore) ([]herald.DeadLetter, int64) {
		t.Helper()
		createSub(t, s, plainSub("sub_1", "o.>"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_2", "o.>"), herald.StartPosition{})
		ds := []herald.DeadLetter{
			deadLetter("sub_1", "o.a", 9, "k", 15, at(1)),
			deadLetter("sub_1", "o.B", 3, "", 15, at(2)),
			deadLetter("sub_1", "o.a", 1, "j", 15, at(3)),
			deadLetter("sub_1", "o.a", 5, "", 4, at(4)),
			deadLetter("sub_1", "o.b", 2, "k", 15, at(5)),
		}
		epoch := lease(t, s, "sub_1")
		settleOK(t, s, "sub_1", epoch, herald.Settlement{DeadLetters: ds})
		settleOK(t, s, "sub_2", lease(t, s, "sub_2"), herald.Settlement{DeadLetters: []herald.DeadLetter{deadLetter("sub_2", "o.a", 1, "j", 15, at(3))}})
		// Byte order: "o.B" < "o.a" < "o.b".
		return []herald.DeadLetter{ds[1], ds[2], ds[3], ds[0], ds[4]}, epoch
	}

	t.Run("ListPagesInTopicSeqOrder", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		want, _ := setup(t, s)
		var got []herald.DeadLetter
		after := herald.Cursor{}
		for page := 0; ; page++ {
			ds, err := s.ListDeadLetters(t.Context(), "sub_1", after, 2)
			if err != nil {
				t.Fatalf("ListDeadLetters(after %v, 2): %v", after, err)
			}
			if len(ds) > 2 {
				t.Fatalf("ListDeadLetters(after %v, 2) returned %d", after, len(ds))
			}
			got = append(got, ds...)
			if len(ds) < 2 {
				break
			}
			after = herald.Cursor{Topic: ds[len(ds)-1].Topic, Seq: ds[len(ds)-1].Seq}
			if page > len(want) {
				t.Fatal("ListDeadLetters paging does not end")
			}
		}
		sameDead(t, "ListDeadLetters pages", got, want...)
		// A position that is not a dead letter.
		ds, err := s.ListDeadLetters(t.Context(), "sub_1", herald.Cursor{Topic: "o.a", Seq: 6}, 10)
		if err != nil {
			t.Fatalf("ListDeadLetters(after o.a/6): %v", err)
		}
		sameDead(t, "ListDeadLetters after o.a/6", ds, want[3], want[4])
		if n := countDead(t, s, "sub_1"); n != 5 {
			t.Fatalf("CountDeadLetters = %d, want 5", n)
		}
		if n := countDead(t, s, "sub_2"); n != 1 {
			t.Fatalf("CountDeadLetters of sub_2 = %d, want 1", n)
		}
	})

	t.Run("RedriveSomeThenAll", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ds, _ := setup(t, s)
		back := func(d herald.DeadLetter, now time.Time) herald.Retry {
			// The dead letter's last error may or may not travel with it;
			// compare with whatever the retry row has.
			return herald.Retry{SubscriptionID: d.SubscriptionID, Topic: d.Topic, Seq: d.Seq, EventID: d.EventID, Key: d.Key, DueAt: now}
		}
		ignoreErrors := func(rs []herald.Retry) []herald.Retry {
			for i := range rs {
				rs[i].LastError = ""
			}
			return rs
		}

		// An empty, non-nil list moves none.
		if n, err := s.RedriveDeadLetters(t.Context(), "sub_1", []string{}, at(50)); err != nil || n != 0 {
			t.Fatalf("RedriveDeadLetters(empty list) = %d, %v; want 0", n, err)
		}
		n, err := s.RedriveDeadLetters(t.Context(), "sub_1", []string{ds[1].EventID, ds[4].EventID, "evt-unknown"}, at(100))
		if err != nil || n != 2 {
			t.Fatalf("RedriveDeadLetters(two ids and an unknown one) = %d, %v; want 2", n, err)
		}
		sameRetries(t, "after redriving two", ignoreErrors(allRetries(t, s, "sub_1")), back(ds[1], at(100)), back(ds[4], at(100)))
		sameDead(t, "after redriving two", allDead(t, s, "sub_1"), ds[0], ds[2], ds[3])

		n, err = s.RedriveDeadLetters(t.Context(), "sub_1", nil, at(200))
		if err != nil || n != 3 {
			t.Fatalf("RedriveDeadLetters(all) = %d, %v; want 3", n, err)
		}
		sameRetries(t, "after redriving all", ignoreErrors(allRetries(t, s, "sub_1")),
			back(ds[0], at(200)), back(ds[1], at(100)), back(ds[2], at(200)), back(ds[3], at(200)), back(ds[4], at(100)))
		if n := countDead(t, s, "sub_1"); n != 0 {
			t.Fatalf("CountDeadLetters after redriving all = %d", n)
		}
		// The other subscription's dead letter stays.
		if n := countDead(t, s, "sub_2"); n != 1 {
			t.Fatalf("CountDeadLetters of sub_2 = %d, want 1", n)
		}
		if n := countRetries(t, s, "sub_2"); n != 0 {
			t.Fatalf("sub_2 got %d retries from sub_1's redrive", n)
		}
	})

	t.Run("DeleteSomeThenAll", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ds, _ := setup(t, s)
		if n, err := s.DeleteDeadLetters(t.Context(), "sub_1", []string{}); err != nil || n != 0 {
			t.Fatalf("DeleteDeadLetters(empty list) = %d, %v; want 0", n, err)
		}
		n, err := s.DeleteDeadLetters(t.Context(), "sub_1", []string{ds[0].EventID, ds[3].EventID, "evt-unknown"})
		if err != nil || n != 2 {
			t.Fatalf("DeleteDeadLetters(two ids and an unknown one) = %d, %v; want 2", n, err)
		}
		sameDead(t, "after deleting two", allDead(t, s, "sub_1"), ds[1], ds[2], ds[4])
		n, err = s.DeleteDeadLetters(t.Context(), "sub_1", nil)
		if err != nil || n != 3 {
			t.Fatalf("DeleteDeadLetters(all) = %d, %v; want 3", n, err)
		}
		if n := countDead(t, s, "sub_1"); n != 0 {
			t.Fatalf("CountDeadLetters after deleting all = %d", n)
		}
		if n := countRetries(t, s, "sub_1"); n != 0 {
			t.Fatalf("deleting dead letters added %d retries", n)
		}
		if n := countDead(t, s, "sub_2"); n != 1 {
			t.Fatalf("CountDeadLetters of sub_2 = %d, want 1", n)
		}
	})
}

func runAttempts(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Run("ListFiltersAndPages", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_2", "orders"), herald.StartPosition{})
		// Ten attempts: events e1..e3 in turn, every third one a success.
		var in []herald.Attempt
		for i := range 10 {
			a := herald.Attempt{Topic: "orders", Seq: int64(i%3 + 1), EventID: []string{"e1", "e2", "e3"}[i%3], Attempt: i/3 + 1,
				Time: at(i), Outcome: herald.OutcomeFailure, StatusCode: 500}
			if i%3 == 2 {
				a.Outcome, a.StatusCode = herald.OutcomeSuccess, 200
			}
			in = append(in, a)
		}
		epoch := lease(t, s, "sub_1")
		for i := 0; i < len(in); i += 4 { // over three calls
			settleOK(t, s, "sub_1", epoch, herald.Settlement{Attempts: in[i:min(i+4, len(in))]})
		}
		settleOK(t, s, "sub_2", lease(t, s, "sub_2"), herald.Settlement{Attempts: in[:3]})

		all := attempts(t, s, "sub_1", herald.AttemptFilter{Limit: 100})
		if len(all) != 10 {
			t.Fatalf("ListAttempts = %d attempts, want 10", len(all))
		}
		for i, a := range all {
			if w := in[9-i]; a.EventID != w.EventID || !a.Time.Equal(w.Time) || a.SubscriptionID != "sub_1" {
				t.Fatalf("attempt %d listed is %s at %v, want %s at %v (newest first)", i, a.EventID, a.Time, w.EventID, w.Time)
			}
		}
		// timesOf gives the seconds after t0 of each listed attempt.
		timesOf := func(as []herald.Attempt) []int64 {
			out := make([]int64, len(as))
			for i, a := range as {
				out[i] = int64(a.Time.Sub(t0) / time.Second)
			}
			return out
		}
		cases := []struct {
			name string
			f    herald.AttemptFilter
			want []int64
		}{
			{"event", herald.AttemptFilter{EventID: "e2", Limit: 100}, []int64{7, 4, 1}},
			{"outcome", herald.AttemptFilter{Outcome: herald.OutcomeSuccess, Limit: 100}, []int64{8, 5, 2}},
			{"failures of e1", herald.AttemptFilter{EventID: "e1", Outcome: herald.OutcomeFailure, Limit: 100}, []int64{9, 6, 3, 0}},
			{"limit", herald.AttemptFilter{Limit: 3}, []int64{9, 8, 7}},
			{"before", herald.AttemptFilter{BeforeID: all[3].ID, Limit: 3}, []int64{5, 4, 3}},
			{"before and event", herald.AttemptFilter{BeforeID: all[3].ID, EventID: "e1", Limit: 100}, []int64{3, 0}},
			{"unknown event", herald.AttemptFilter{EventID: "e9", Limit: 100}, []int64{}},
		}
		for _, c := range cases {
			got := timesOf(attempts(t, s, "sub_1", c.f))
			if !slices.Equal(got, c.want) {
				t.Fatalf("ListAttempts %s: attempts at %v s, want %v s", c.name, got, c.want)
			}
		}
		// Paging by BeforeID walks the whole log once.
		var walked []int64
		f := herald.AttemptFilter{Limit: 4}
		for page := 0; ; page++ {
			as := attempts(t, s, "sub_1", f)
			walked = append(walked, timesOf(as)...)
			if len(as) < 4 {
				break
			}
			f.BeforeID = as[len(as)-1].ID
			if page > 10 {
				t.Fatal("paging by BeforeID does not end")
			}
		}
		if !slices.Equal(walked, []int64{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}) {
			t.Fatalf("paging by BeforeID gave %v", walked)
		}
	})

	t.Run("PruneAttempts", func(t *testing.T) {
		// Prunes the whole store: not parallel, by the convention of Run.
		s := open(t)
		createSub(t, s, plainSub("sub_1", "orders"), herald.StartPosition{})
		createSub(t, s, plainSub("sub_2", "orders"), herald.StartPosition{})
		mk := func(secs ...int) []herald.Attempt {
			var out []herald.Attempt
			for _, sec := range secs {
				out = append(out, herald.Attempt{Topic: "orders", Seq: int64(sec), EventID: "e", Attempt: 1, Time: at(sec), Outcome: herald.OutcomeSuccess})
			}
			return out
		}
		settleOK(t, s, "sub_1", lease(t, s, "sub_1"), herald.Settlement{Attempts: mk(1, 2, 3, 7, 8)})
		settleOK(t, s, "sub_2", lease(t, s, "sub_2"), herald.Settlement{Attempts: mk(4, 5, 6, 9)})

		pruneA := func(before time.Time, limit int) int64 {
			t.Helper()
			n, err := s.PruneAttempts(t.Context(), before, limit)
			if err != nil {
				t.Fatalf("PruneAttempts(%v, %d): %v", before.Sub(t0), limit, err)
			}
			return n
		}
		// Older than 7s: six attempts, the one at exactly 7s stays.
		if n := pruneA(at(7), 4); n != 4 {
			t.Fatalf("first PruneAttempts(limit 4) = %d, want 4", n)
		}
		if n := pruneA(at(7), 4); n != 2 {
			t.Fatalf("second PruneAttempts(limit 4) = %d, want 2", n)
		}
		if n := pruneA(at(7), 4); n != 0 {
			t.Fatalf("third PruneAttempts = %d, want 0", n)
		}
		wantSeqs(t, "sub_1 after pruning", attemptSeqs(attempts(t, s, "sub_1", herald.AttemptFilter{Limit: 100})), 8, 7)
		wantSeqs(t, "sub_2 after pruning", attemptSeqs(attempts(t, s, "sub_2", herald.AttemptFilter{Limit: 100})), 9)
	})
}
