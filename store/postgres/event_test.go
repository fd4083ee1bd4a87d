package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// Two stores on one schema are two nodes: many goroutines on each append
// batches that mix topics in random order. Every topic's seqs must come out
// gap-free and unique, consecutive within a call, increasing for each
// writer, and match what is read back. Lock ordering is what keeps the
// multi-topic batches from deadlocking (a deadlock fails an Append).
func TestAppendConcurrentNodes(t *testing.T) {
	dsn, _ := testDSN(t)
	nodes := []*Store{openTest(t, dsn), openTest(t, dsn)}
	ctx := t.Context()
	topics := []string{"conc.a", "conc.b", "conc.c"}
	for _, name := range topics {
		putTopic(t, nodes[0], name)
	}

	const writers, calls = 8, 30
	var mu sync.Mutex
	seqOf := make(map[string]map[int64]string) // topic -> seq -> event id
	for _, name := range topics {
		seqOf[name] = make(map[int64]string)
	}
	var wg sync.WaitGroup
	for w := range writers {
		node := nodes[w%len(nodes)]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			last := make(map[string]int64)
			for c := range calls {
				n := 1 + rng.IntN(6)
				evs := make([]*herald.Event, n)
				for j := range evs {
					evs[j] = &herald.Event{
						ID:      fmt.Sprintf("w%d-c%d-e%d", w, c, j),
						Topic:   topics[rng.IntN(len(topics))],
						Time:    time.Now(),
						Payload: []byte("payload"),
					}
				}
				res, err := node.Append(ctx, evs)
				if err != nil {
					t.Errorf("writer %d call %d: Append: %v", w, c, err)
					return
				}
				inCall := make(map[string]int64)
				mu.Lock()
				for j, r := range res {
					e := evs[j]
					switch {
					case r.Err != nil || r.Duplicate:
						t.Errorf("%s: result %+v, want stored", e.ID, r)
						continue
					case r.ID != e.ID || e.Seq != r.Seq:
						t.Errorf("%s: result %+v, event seq %d", e.ID, r, e.Seq)
					case r.Seq <= last[e.Topic]:
						t.Errorf("%s: seq %d on %s after this writer's %d", e.ID, r.Seq, e.Topic, last[e.Topic])
					case inCall[e.Topic] != 0 && r.Seq != inCall[e.Topic]+1:
						t.Errorf("%s: seq %d on %s, not consecutive to %d in the same call", e.ID, r.Seq, e.Topic, inCall[e.Topic])
					}
					if prev, dup := seqOf[e.Topic][r.Seq]; dup {
						t.Errorf("%s: seq %d on %s already given to %s", e.ID, r.Seq, e.Topic, prev)
					}
					seqOf[e.Topic][r.Seq] = e.ID
					last[e.Topic], inCall[e.Topic] = r.Seq, r.Seq
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	total := 0
	for _, name := range topics {
		n := int64(len(seqOf[name]))
		total += int(n)
		for seq := int64(1); seq <= n; seq++ {
			if _, ok := seqOf[name][seq]; !ok {
				t.Errorf("%s: seq %d missing among %d events", name, seq, n)
			}
		}
		got, err := nodes[1].ReadEvents(ctx, name, 0, int(n)+10)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) != n {
			t.Errorf("%s: read %d events, appended %d", name, len(got), n)
		}
		for i, e := range got {
			if e.Seq != int64(i+1) || e.ID != seqOf[name][e.Seq] {
				t.Errorf("%s: read #%d is seq %d id %s; appended seq %d as %s", name, i, e.Seq, e.ID, e.Seq, seqOf[name][e.Seq])
			}
		}
		tp, err := nodes[0].GetTopic(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if tp.HeadSeq != n || tp.FirstSeq != min(1, n) {
			t.Errorf("%s: head %d first %d, want %d and 1", name, tp.HeadSeq, tp.FirstSeq, n)
		}
	}
	if total == 0 {
		t.Fatal("no events appended")
	}
}

// Two nodes append an event with the same idempotency key at the same
// moment: one is stored, the other reports a duplicate of it, and neither
// fails. A third session holds the topic row lock until both appends wait
// for it, so their transactions really overlap.
func TestAppendDedupRaceAcrossNodes(t *testing.T) {
	dsn, schema := testDSN(t)
	nodes := []*Store{openTest(t, dsn), openTest(t, dsn)}
	ctx := t.Context()
	putTopic(t, nodes[0], "race")

	const rounds = 5
	for round := range rounds {
		blocker, err := nodes[0].pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := blocker.Exec(ctx, `SELECT 1 FROM topics WHERE name = 'race' FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("key-%d", round)
		var wg sync.WaitGroup
		var res [2][]herald.AppendResult
		var errs [2]error
		for i, node := range nodes {
			wg.Go(func() {
				res[i], errs[i] = node.Append(ctx, []*herald.Event{{
					ID: fmt.Sprintf("r%d-node%d", round, i), Topic: "race", IdempotencyKey: key, Time: time.Now(),
				}})
			})
		}
		waitFor(t, "both appends to wait for the topic lock", func() (bool, error) {
			n, err := lockWaiters(ctx, nodes[0], schema)
			return n == 2, err
		})
		if err := blocker.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()

		for i := range nodes {
			if errs[i] != nil {
				t.Fatalf("round %d node %d: Append: %v", round, i, errs[i])
			}
			if err := res[i][0].Err; err != nil {
				t.Fatalf("round %d node %d: result: %v", round, i, err)
			}
		}
		a, b := res[0][0], res[1][0]
		if a.Duplicate == b.Duplicate {
			t.Fatalf("round %d: duplicate flags %v and %v, want exactly one", round, a.Duplicate, b.Duplicate)
		}
		if a.ID != b.ID || a.Seq != b.Seq || a.Seq != int64(round+1) {
			t.Errorf("round %d: results %+v and %+v, want the same stored event at seq %d", round, a, b, round+1)
		}
	}
	got, err := nodes[1].ReadEvents(ctx, "race", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != rounds {
		t.Errorf("stored %d events, want %d (one per key)", len(got), rounds)
	}
}

// A transaction that fails after it allocated seqs rolls them back, and
// one cancelled while it waits for a topic lock stores nothing: either
// way the next append gets the next seq, with no gap.
func TestAppendFailureLeavesNoGap(t *testing.T) {
	dsn, schema := testDSN(t)
	s := openTest(t, dsn)
	ctx := t.Context()
	putTopic(t, s, "abort")
	appendOne := func(ctx context.Context, id string) (herald.AppendResult, error) {
		res, err := s.Append(ctx, []*herald.Event{{ID: id, Topic: "abort", Time: time.Now(), Payload: []byte("p")}})
		if err != nil {
			return herald.AppendResult{}, err
		}
		return res[0], nil
	}
	if r, err := appendOne(ctx, "first"); err != nil || r.Seq != 1 {
		t.Fatalf("first append: %+v %v", r, err)
	}

	// A row already at seq 2 (which Append never writes twice) makes the
	// insert fail after head_seq was incremented to 2.
	if _, err := s.pool.Exec(ctx, `INSERT INTO events (topic_id, seq, id, time_ns, event_type, event_key, idem_key, content_type, payload)
		SELECT id, 2, 'planted', 1, '', '', '', '', '' FROM topics WHERE name = 'abort'`); err != nil {
		t.Fatal(err)
	}
	if r, err := appendOne(ctx, "failed"); err == nil {
		t.Fatalf("append onto a planted seq succeeded: %+v", r)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM events WHERE id = 'planted'`); err != nil {
		t.Fatal(err)
	}

	// Cancelled while another session holds the topic row.
	blocker, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback(context.Background()) }()
	if _, err := blocker.Exec(ctx, `SELECT 1 FROM topics WHERE name = 'abort' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := appendOne(actx, "cancelled")
		done <- err
	}()
	waitFor(t, "the append to wait for the topic lock", func() (bool, error) {
		n, err := lockWaiters(ctx, s, schema)
		return n == 1, err
	})
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the cancelled append succeeded")
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	if r, err := appendOne(ctx, "after"); err != nil || r.Seq != 2 {
		t.Fatalf("append after the failed ones: %+v %v, want seq 2", r, err)
	}
	got, err := s.ReadEvents(ctx, "abort", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(got))
	for i, e := range got {
		ids[i] = fmt.Sprintf("%d:%s", e.Seq, e.ID)
	}
	if want := []string{"1:first", "2:after"}; !slices.Equal(ids, want) {
		t.Errorf("events %v, want %v", ids, want)
	}
}

// An event PostgreSQL cannot store as text fails alone, with CodeInvalid
// and the field; the rest of its batch is stored.
func TestAppendRejectsUnstorableTextAlone(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	putTopic(t, s, "text")
	now := time.Now()
	evs := []*herald.Event{
		{ID: "ok1", Topic: "text", Time: now, Key: "ключ"},
		{ID: "bad-key", Topic: "text", Time: now, Key: "a\xffb"},
		{ID: "bad-idem", Topic: "text", Time: now, IdempotencyKey: "nul\x00"},
		{ID: "bad-header", Topic: "text", Time: now, Headers: map[string]string{"X-A": "\xc3"}},
		{ID: "bad-topic", Topic: "t\x00", Time: now},
		{ID: "ok2", Topic: "text", Time: now},
	}
	res, err := s.Append(ctx, evs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	wantField := []string{"", "key", "idempotency_key", "headers", "", ""}
	for i, r := range res {
		switch {
		case wantField[i] != "":
			e, ok := r.Err.(*herald.Error)
			if !ok || e.Code != herald.CodeInvalid || e.Field != wantField[i] {
				t.Errorf("%s: err %v, want CodeInvalid on %s", evs[i].ID, r.Err, wantField[i])
			}
		case evs[i].ID == "bad-topic":
			if !herald.IsCode(r.Err, herald.CodeNotFound) {
				t.Errorf("%s: err %v, want CodeNotFound", evs[i].ID, r.Err)
			}
		case r.Err != nil:
			t.Errorf("%s: %v", evs[i].ID, r.Err)
		}
	}
	if res[0].Seq != 1 || res[5].Seq != 2 {
		t.Errorf("stored seqs %d and %d, want 1 and 2", res[0].Seq, res[5].Seq)
	}
	got, err := s.GetEvent(ctx, "text", "ok1")
	if err != nil || got.Key != "ключ" {
		t.Errorf("GetEvent ok1: %+v %v", got, err)
	}
	if _, err := s.GetTopic(ctx, "bad\xff"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Errorf("GetTopic with invalid UTF-8: %v, want CodeNotFound", err)
	}
}
