package engine

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/store/sqlite"
)

// countingStore records the size of every Append call.
type countingStore struct {
	herald.Store
	mu    sync.Mutex
	calls []int
}

func (s *countingStore) Append(ctx context.Context, events []*herald.Event) ([]herald.AppendResult, error) {
	s.mu.Lock()
	s.calls = append(s.calls, len(events))
	s.mu.Unlock()
	return s.Store.Append(ctx, events)
}

// TestCommitterConflictFailsOnlyItsRequest groups four publishes into one
// transaction, two of which reuse an event id with another payload (one
// against a stored event, one inside its own batch). Those two must fail
// with the conflict, whole (a batch is all or nothing), and the other two
// must be committed as if they had been alone, with gap-free seqs.
func TestCommitterConflictFailsOnlyItsRequest(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, _, err := st.PutTopic(ctx, herald.Topic{Name: "t"}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	ev := func(id, payload string) *herald.Event {
		return &herald.Event{ID: id, Topic: "t", Time: now, ContentType: "text/plain", Payload: []byte(payload)}
	}
	first := ev("x", "a")
	if _, err := st.Append(ctx, []*herald.Event{first}); err != nil {
		t.Fatal(err)
	}

	store := &countingStore{Store: st}
	c := NewCommitter(store, CommitterConfig{}, nil, nil)
	var hooked []*herald.Event
	c.OnCommit(func(evs []*herald.Event) { hooked = append(hooked, evs...) })
	reqs := [][]*herald.Event{
		{ev("", "a1"), ev("", "a2")},               // A: stored
		{ev("x", "b")},                             // B: conflicts with the stored x
		{ev("x", "a")},                             // C: a duplicate of x
		{ev("", "d1"), ev("y", "p"), ev("y", "q")}, // D: conflicts inside itself
	}
	type answer struct {
		res []herald.AppendResult
		err error
	}
	answers := make([]answer, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			res, err := c.Append(ctx, r)
			answers[i] = answer{res, err}
		})
	}
	// Start only once all four wait in the queue, so one transaction
	// takes them together.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for len(c.group.queue) < len(reqs) {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued after 10s, want %d", len(c.group.queue), len(reqs))
		}
		<-tick.C
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	wg.Wait()

	for i, a := range answers {
		if a.err != nil || len(a.res) != len(reqs[i]) {
			t.Fatalf("request %d: %d results, err %v", i, len(a.res), a.err)
		}
	}
	if a := answers[0].res; a[0].Err != nil || a[0].Seq != 2 || a[1].Err != nil || a[1].Seq != 3 {
		t.Errorf("request A: %+v; want stored at seqs 2 and 3", a)
	}
	if b, ok := errors.AsType[*herald.Error](answers[1].res[0].Err); !ok || *b != *herald.EventIDConflict(reqs[1][0], 1) {
		t.Errorf("request B: %+v; want a conflict with seq 1", answers[1].res[0])
	}
	if c := answers[2].res[0]; c.Err != nil || !c.Duplicate || c.ID != "x" || c.Seq != 1 {
		t.Errorf("request C: %+v; want a duplicate of x at seq 1", c)
	}
	d := answers[3].res
	if herald.ErrorCode(d[2].Err) != herald.CodeConflict || d[0] != (herald.AppendResult{}) || d[1] != (herald.AppendResult{}) {
		t.Errorf("request D: %+v; want its third event in conflict and nothing of it stored", d)
	}
	if reqs[3][0].Seq != 0 || reqs[3][0].ID != "" {
		t.Errorf("an event of the failed batch D got id %q seq %d", reqs[3][0].ID, reqs[3][0].Seq)
	}

	stored, err := st.ReadEvents(ctx, "t", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var payloads []string
	for _, e := range stored {
		payloads = append(payloads, string(e.Payload))
	}
	if want := []string{"a", "a1", "a2"}; !slices.Equal(payloads, want) {
		t.Errorf("stored payloads %q, want %q", payloads, want)
	}
	if len(hooked) != 2 || hooked[0] != reqs[0][0] || hooked[1] != reqs[0][1] {
		t.Errorf("OnCommit saw %d events, want request A's two", len(hooked))
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if want := []int{7, 3}; !slices.Equal(store.calls, want) {
		t.Errorf("Append calls of %v events, want %v: one for all, one again without B and D", store.calls, want)
	}
}
