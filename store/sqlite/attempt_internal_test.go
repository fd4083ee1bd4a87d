package sqlite

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// attemptBase is the time the attempt tests count seconds from.
var attemptBase = time.Unix(1_700_000_000, 0).UTC()

func atSec(sec int64) time.Time { return attemptBase.Add(time.Duration(sec) * time.Second) }

// attemptStore opens a store with one leased subscription, sub_1, and
// returns its lease epoch.
func attemptStore(t *testing.T) (*Store, int64) {
	t.Helper()
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	if _, _, err := s.PutTopic(t.Context(), herald.Topic{Name: "orders"}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	sub := herald.Subscription{ID: "sub_1", Topic: "orders", State: herald.StateActive, CreatedAt: attemptBase}
	if err := s.CreateSubscription(t.Context(), sub, herald.StartPosition{}); err != nil {
		t.Fatal(err)
	}
	epoch, err := s.AcquireLease(t.Context(), "sub_1", "node", attemptBase, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s, epoch
}

// writeAttempts appends attempts of sub_1 at the given times (seconds
// after attemptBase), in order, so their ids increase in that order.
func writeAttempts(t *testing.T, s *Store, epoch int64, secs []int64) {
	t.Helper()
	as := make([]herald.Attempt, len(secs))
	for i, sec := range secs {
		as[i] = herald.Attempt{Topic: "orders", Seq: int64(i + 1), EventID: fmt.Sprintf("evt_%05d", i), Attempt: 1,
			Time: atSec(sec), Outcome: herald.OutcomeSuccess}
	}
	errs, err := s.Settle(t.Context(), []herald.SettleItem{{SubscriptionID: "sub_1", Epoch: epoch,
		Settlement: herald.Settlement{Attempts: as}}})
	if err != nil || errs[0] != nil {
		t.Fatalf("Settle: %v, %v", errs, err)
	}
}

// storedAttempts returns the stored attempts' times (Unix nanoseconds) by
// id.
func storedAttempts(t *testing.T, s *Store) map[int64]int64 {
	t.Helper()
	rows, err := s.writer.QueryContext(t.Context(), `SELECT id, time FROM attempts`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]int64{}
	for rows.Next() {
		var id, at int64
		if err := rows.Scan(&id, &at); err != nil {
			t.Fatal(err)
		}
		out[id] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// pruneAll calls PruneAttempts as callers do, while it returns limit, and
// checks each call against the rows before and after it: no more than
// limit deleted, the count right, and no attempt at or after before
// deleted. It returns the results of the calls.
func pruneAll(t *testing.T, s *Store, before time.Time, limit int) []int64 {
	t.Helper()
	cutoff := before.UnixNano()
	var results []int64
	for {
		was := storedAttempts(t, s)
		n, err := s.PruneAttempts(t.Context(), before, limit)
		if err != nil {
			t.Fatalf("PruneAttempts(limit %d): %v", limit, err)
		}
		results = append(results, n)
		is := storedAttempts(t, s)
		if n < 0 || n > int64(limit) || int64(len(was)-len(is)) != n {
			t.Fatalf("PruneAttempts(limit %d) = %d; %d attempts before, %d after", limit, n, len(was), len(is))
		}
		for id, at := range was {
			if _, kept := is[id]; !kept && at >= cutoff {
				t.Fatalf("PruneAttempts deleted attempt %d, %v after the cutoff", id, time.Duration(at-cutoff))
			}
		}
		if n < int64(limit) {
			return results
		}
		if len(results) > 10_000 {
			t.Fatalf("PruneAttempts(limit %d) returns the limit forever", limit)
		}
	}
}

// PruneAttempts works in write order, without an index on time. Attempts
// written out of time order are handled: an old attempt behind a few
// newer ones is deleted in the same pass, one behind a whole chunk of
// newer ones once those have aged too, and an attempt at or after the
// cutoff never.
func TestPruneAttemptsInWriteOrder(t *testing.T) {
	const cutoff = 10_000 // seconds
	var secs []int64
	var headOld int
	// The head: old attempts with every seventh one new, more than a
	// chunk of them.
	for i := range int64(pruneChunk + 200) {
		if i%7 == 3 {
			secs = append(secs, cutoff+5)
		} else {
			secs = append(secs, i)
			headOld++
		}
	}
	headLen := len(secs)
	// More than a chunk of new attempts in a row, old ones behind them,
	// then some at exactly the later cutoff.
	secs = append(secs, slices.Repeat([]int64{cutoff + 10}, pruneChunk+100)...)
	behind := len(secs)
	secs = append(secs, slices.Repeat([]int64{cutoff - 1}, 50)...)
	tail := len(secs)
	secs = append(secs, slices.Repeat([]int64{cutoff + 11}, 20)...)

	for _, limit := range []int{7, 100, pruneChunk, 10_000} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			s, epoch := attemptStore(t)
			writeAttempts(t, s, epoch, secs)
			ids := slices.Sorted(maps.Keys(storedAttempts(t, s)))
			if len(ids) != len(secs) {
				t.Fatalf("wrote %d attempts, %d stored", len(secs), len(ids))
			}

			results := pruneAll(t, s, atSec(cutoff), limit)
			var sum int64
			for _, n := range results {
				sum += n
			}
			if sum != int64(headOld) {
				t.Fatalf("PruneAttempts results %v, %d in all; want the %d old attempts of the head", results, sum, headOld)
			}
			left := storedAttempts(t, s)
			for i, id := range ids {
				_, kept := left[id]
				old := secs[i] < cutoff
				switch {
				case i < headLen && old && kept:
					t.Fatalf("old attempt %d (position %d) of the head was kept", id, i)
				case i >= behind && i < tail && !kept:
					t.Fatalf("old attempt %d behind a chunk of newer ones was deleted: want it kept for a later pass", id)
				}
			}

			// Once the run has aged, all go but those at the cutoff.
			pruneAll(t, s, atSec(cutoff+11), limit)
			left = storedAttempts(t, s)
			var want []int64
			for i, id := range ids {
				if i >= tail {
					want = append(want, id)
				}
			}
			got := slices.Sorted(maps.Keys(left))
			if !slices.Equal(got, want) {
				t.Fatalf("after the later cutoff %d attempts are left, want the last %d (at the cutoff)", len(got), len(want))
			}
		})
	}
}

// With times that increase with ids up to a small jitter, and a few
// attempts far newer than their neighbours, each pass leaves no attempt
// older than its cutoff and deletes none at or after it.
func TestPruneAttemptsJitteredTimes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s, epoch := attemptStore(t)
	const total = 2000
	secs := make([]int64, total)
	for i := range secs {
		secs[i] = int64(i) + rng.Int64N(7) - 3
		if rng.IntN(100) == 0 {
			secs[i] += 1500
		}
	}
	writeAttempts(t, s, epoch, secs)
	limits := []int{1, 3, 50, pruneChunk - 1, pruneChunk, pruneChunk + 1, 2000}
	for cutoff := int64(300); cutoff < total+1600; cutoff += 300 + rng.Int64N(200) {
		limit := limits[rng.IntN(len(limits))]
		pruneAll(t, s, atSec(cutoff), limit)
		for id, at := range storedAttempts(t, s) {
			if at < atSec(cutoff).UnixNano() {
				t.Fatalf("cutoff %ds, limit %d: attempt %d at %v is left", cutoff, limit, id, time.Unix(0, at).Sub(attemptBase))
			}
		}
	}
	pruneAll(t, s, atSec(total+3000), 1000)
	if n := count(t, s, `SELECT count(*) FROM attempts`); n != 0 {
		t.Fatalf("%d attempts left after pruning everything", n)
	}
}

// queryPlan returns the details of the query's plan.
func queryPlan(t *testing.T, s *Store, q string, args ...any) []string {
	t.Helper()
	rows, err := s.writer.QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+q, args...)
	if err != nil {
		t.Fatalf("EXPLAIN %s: %v", q, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

// Pruning walks the table's b-tree from a given id, so each transaction
// reads at most a chunk of rows, and listing the attempts of an event
// searches the (event_id, sid, id) index, in id order without a sort.
func TestAttemptQueryPlans(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	for _, c := range []struct {
		name, sql string
		args      []any
		want      string
	}{
		{"prune window", pruneAttemptsSQL, []any{5, pruneChunk}, "SEARCH attempts USING INTEGER PRIMARY KEY (rowid>?)"},
		{"prune range", pruneRangeSQL, []any{5, 10, 1}, "SEARCH attempts USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"},
	} {
		if plan := queryPlan(t, s, c.sql, c.args...); len(plan) != 1 || plan[0] != c.want {
			t.Errorf("%s is planned with\n  %s\nwant %q", c.name, strings.Join(plan, "\n  "), c.want)
		}
	}
	for _, f := range []herald.AttemptFilter{
		{EventID: "e"},
		{EventID: "e", Limit: 10},
		{EventID: "e", Outcome: herald.OutcomeFailure, BeforeID: 9, Limit: 10},
	} {
		q, args := attemptsQuery("sub", f)
		plan := queryPlan(t, s, q, args...)
		if !slices.ContainsFunc(plan, func(step string) bool {
			return strings.HasPrefix(step, "SEARCH attempts USING INDEX attempts_by_event (event_id=? AND sid=?")
		}) || slices.ContainsFunc(plan, func(step string) bool { return strings.Contains(step, "TEMP B-TREE") }) {
			t.Errorf("ListAttempts(%+v) is planned with\n  %s\nwant a search of attempts_by_event on event_id and sid", f,
				strings.Join(plan, "\n  "))
		}
	}
}

// attemptIndexes returns the attempts table's indexes and their columns.
func attemptIndexes(t *testing.T, s *Store) map[string]string {
	t.Helper()
	rows, err := s.writer.QueryContext(t.Context(), `SELECT m.name, group_concat(i.name, ', ' ORDER BY i.seqno)
		FROM sqlite_master m, pragma_index_info(m.name) i WHERE m.type = 'index' AND m.tbl_name = 'attempts' GROUP BY m.name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name, cols string
		if err := rows.Scan(&name, &cols); err != nil {
			t.Fatal(err)
		}
		out[name] = cols
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var wantAttemptIndexes = map[string]string{
	"attempts_by_sub":   "sid, id",
	"attempts_by_event": "event_id, sid, id",
}

// A store at version 3 with attempts in it loses attempts_by_time and
// keeps the other attempt indexes over its attempts; a new store has the
// same ones.
func TestMigrateAttemptIndexes(t *testing.T) {
	fresh := openTest(t, filepath.Join(t.TempDir(), "fresh.db"))
	if got := attemptIndexes(t, fresh); !maps.Equal(got, wantAttemptIndexes) {
		t.Fatalf("a new store has attempt indexes %v, want %v", got, wantAttemptIndexes)
	}

	path := filepath.Join(t.TempDir(), "h.db")
	ms, err := loadMigrations()
	if err != nil || len(ms) < 4 {
		t.Fatalf("loadMigrations = %d migrations, %v", len(ms), err)
	}
	old := openDB(dsn(path, time.Second, false))
	steps := []string{ms[0].sql, ms[1].sql, ms[2].sql, `CREATE TABLE schema_version (version INTEGER NOT NULL)`,
		`INSERT INTO schema_version (version) VALUES (3)`}
	for _, id := range []string{"sub_1", "sub_2"} {
		steps = append(steps, `INSERT INTO subscriptions (id, topic, url, description, retry_max_attempts,
			retry_initial, retry_max, timeout, max_in_flight, rate_limit, ordered, expires_after_idle, state,
			state_reason, secret, previous_secret, previous_expires_at, challenge, verify_deadline,
			next_challenge_at, challenge_tries, owner_key_id, created_at, updated_at, last_activity_at,
			last_success_at, failing_since)
			VALUES ('`+id+`', 'orders', 'https://hooks.example.com/x', '', 5, 1000000000, 60000000000, 10000000000,
			10, 0, 0, 0, 'active', '', 'whsec_x', '', 0, '', 0, 0, 0, '', 1, 1, 0, 0, 0)`)
	}
	// 1200 attempts, alternately of sub_1 (sid 1) and sub_2 (sid 2), six to
	// an event id; attempt n is at n seconds.
	steps = append(steps, `WITH RECURSIVE n(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM n WHERE n < 1200)
		INSERT INTO attempts (id, sid, topic, seq, event_id, attempt, time, outcome, status_code, latency, error, response)
		SELECT n, 1 + n % 2, 'orders', n / 6, printf('evt_%04d', n / 6), 1, `+
		fmt.Sprint(attemptBase.UnixNano())+` + n * 1000000000, 'success', 200, 0, '', x'' FROM n`)
	for _, q := range steps {
		if _, err := old.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("build a version 3 store: %v", err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path)
	if v := count(t, s, `SELECT version FROM schema_version`); v != int64(SchemaVersion()) {
		t.Fatalf("schema version after open = %d, want %d", v, SchemaVersion())
	}
	if got := attemptIndexes(t, s); !maps.Equal(got, wantAttemptIndexes) {
		t.Fatalf("after migration the attempt indexes are %v, want %v", got, wantAttemptIndexes)
	}
	var check string
	if err := s.writer.QueryRowContext(t.Context(), `PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check after migration: %q, %v", check, err)
	}
	// evt_0010 has attempts 60 to 65; sub_1's are the even ones.
	as, err := s.ListAttempts(t.Context(), "sub_1", herald.AttemptFilter{EventID: "evt_0010"})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, a := range as {
		got = append(got, a.ID)
	}
	if !slices.Equal(got, []int64{64, 62, 60}) {
		t.Fatalf("sub_1's attempts of evt_0010 after migration: %v, want [64 62 60]", got)
	}
	// Attempts 1 to 299 are older than 300s.
	if results := pruneAll(t, s, atSec(300), 100); !slices.Equal(results, []int64{100, 100, 99}) {
		t.Fatalf("PruneAttempts after migration: %v, want [100 100 99]", results)
	}
	if n := count(t, s, `SELECT min(id) FROM attempts`); n != 300 {
		t.Fatalf("the oldest attempt left is %d, want 300", n)
	}
}

// BenchmarkSettleFanOut writes what the settler writes when 100
// subscriptions of one topic deliver it: each Settle carries 3 attempts
// of each of 8 subscriptions, a cursor move and the success times, and the
// subscriptions take turns. With positions=same every subscription
// delivers the same recent events (all caught up), having delivered 500
// before. With positions=spread they deliver the same events too, but
// subscription i is at event 10·i of the backlog, having delivered those
// before it (catching up at its own pace, or behind a slow endpoint).
//
// wal-pages/commit is the number of pages a commit writes to the WAL, the
// writer's real cost. It lives here, not in bench_test.go, because it
// reads the WAL frame count on the writer connection: the benchmark turns
// the automatic checkpoint off and checkpoints every 32 commits itself,
// about as often as the automatic one would.
func BenchmarkSettleFanOut(b *testing.B) {
	for _, spread := range []bool{false, true} {
		name := "positions=same"
		if spread {
			name = "positions=spread"
		}
		b.Run(name, func(b *testing.B) { benchFanOut(b, spread) })
	}
}

func benchFanOut(b *testing.B, spread bool) {
	const subs, perCommit, perSub, prefill = 100, 8, 3, 500
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "h.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// Like the engine's settler, whose context cannot be canceled (see
	// BenchmarkSettle).
	ctx := context.WithoutCancel(b.Context())
	if _, _, err := s.PutTopic(ctx, herald.Topic{Name: "bench"}.WithDefaults()); err != nil {
		b.Fatal(err)
	}
	start := time.Now().UTC()
	var ids []string // the topic's event ids by position, time-ordered like the real ones
	eventID := func(pos int) string {
		for len(ids) <= pos {
			ids = append(ids, herald.NewID(start.Add(time.Duration(len(ids))*time.Millisecond)))
		}
		return ids[pos]
	}
	epochs := make([]int64, subs)
	pos := make([]int, subs)    // the events each subscription has delivered
	target := make([]int, subs) // how many it delivers before the benchmark
	for i := range subs {
		id := fmt.Sprintf("sub_%03d", i)
		sub := herald.Subscription{ID: id, Topic: "bench", State: herald.StateActive,
			Retry: herald.DefaultRetryPolicy, Timeout: herald.DefaultTimeout, MaxInFlight: herald.DefaultMaxInFlight,
			CreatedAt: start, UpdatedAt: start}
		if err := s.CreateSubscription(ctx, sub, herald.StartPosition{}); err != nil {
			b.Fatal(err)
		}
		if epochs[i], err = s.AcquireLease(ctx, id, "node-1", start, time.Hour); err != nil {
			b.Fatal(err)
		}
		target[i] = prefill
		if spread {
			target[i] = 2 * prefill * i / subs
		}
	}
	settle := func(items []herald.SettleItem) {
		errs, err := s.Settle(ctx, items)
		if err != nil {
			b.Fatal(err)
		}
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	// deliver fills it with sub's next n attempts.
	deliver := func(it *herald.SettleItem, sub, n int, at time.Time) {
		*it = herald.SettleItem{SubscriptionID: fmt.Sprintf("sub_%03d", sub), Epoch: epochs[sub],
			Settlement: herald.Settlement{Attempts: it.Attempts[:0], Cursors: it.Cursors[:0], LastSuccess: at, Activity: at}}
		for range n {
			pos[sub]++
			it.Attempts = append(it.Attempts, herald.Attempt{Topic: "bench", Seq: int64(pos[sub]), EventID: eventID(pos[sub] - 1),
				Attempt: 1, Time: at, Outcome: herald.OutcomeSuccess, StatusCode: 200, Latency: 3 * time.Millisecond,
				Response: `{"ok":true}`})
		}
		it.Cursors = append(it.Cursors, herald.Cursor{Topic: "bench", Seq: int64(pos[sub])})
	}
	// The existing log, written in rounds in which every subscription
	// delivers its next 25 events.
	var fill []herald.SettleItem
	for {
		fill = fill[:0]
		at := time.Now().UTC()
		for i := range subs {
			if n := min(25, target[i]-pos[i]); n > 0 {
				fill = append(fill, herald.SettleItem{})
				deliver(&fill[len(fill)-1], i, n, at)
			}
		}
		if len(fill) == 0 {
			break
		}
		settle(fill)
	}

	walFrames := func() int64 {
		var busy, frames, moved int64
		if err := s.writer.QueryRowContext(ctx, `PRAGMA wal_checkpoint(RESTART)`).Scan(&busy, &frames, &moved); err != nil {
			b.Fatal(err)
		}
		if busy != 0 || moved != frames {
			b.Fatalf("checkpoint: busy %d, %d of %d frames moved", busy, moved, frames)
		}
		return frames
	}
	if _, err := s.writer.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 0`); err != nil {
		b.Fatal(err)
	}
	walFrames()
	items := make([]herald.SettleItem, perCommit)
	var frames int64
	turn := 0
	for b.Loop() {
		at := time.Now().UTC()
		for i := range items {
			deliver(&items[i], (turn*perCommit+i)%subs, perSub, at)
		}
		settle(items)
		if turn++; turn%32 == 0 {
			frames += walFrames()
		}
	}
	frames += walFrames()
	b.ReportMetric(float64(perCommit*perSub*b.N)/b.Elapsed().Seconds(), "attempts/s")
	b.ReportMetric(float64(frames)/float64(b.N), "wal-pages/commit")
}
