package source_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/source"
	"github.com/heraldhq/herald/store/sqlite"
)

// flaky is a Runner that fails its first runs, then publishes the same two
// messages on every run (as a service redelivering them would) and waits.
type flaky struct {
	failures atomic.Int32
	runs     atomic.Int32
}

func (*flaky) Name() string { return "flaky" }
func (*flaky) Validate(c, _ json.RawMessage) (json.RawMessage, error) {
	return json.RawMessage("{}"), nil
}
func (*flaky) Public(c json.RawMessage) json.RawMessage { return c }
func (f *flaky) Run(ctx context.Context, sh *source.Shard) error {
	if n := f.runs.Add(1); n <= f.failures.Load() {
		return fmt.Errorf("service unreachable (run %d)", n)
	}
	msgs := []source.Message{
		{Topic: "a", Key: "k1", Payload: []byte(`{"n":1,"kind":"x"}`), IdempotencyKey: "m1"},
		{Topic: "a", Key: "k2", Payload: []byte(`{"n":2,"kind":"x"}`), IdempotencyKey: "m2"},
	}
	if err := sh.Publish(ctx, msgs); err != nil {
		return err
	}
	sh.SetLag(0)
	<-ctx.Done()
	return ctx.Err()
}

func newEnv(t *testing.T) (*sqlite.Store, *engine.Publisher) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "h.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	c := engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	pub := engine.NewPublisher(engine.NewTopics(st, engine.TopicsConfig{}), c, engine.PublisherConfig{AutoCreateTopics: true}, nil, nil)
	return st, pub
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRuntimeRetriesReportsAndDeduplicates runs a source whose service
// fails twice, then redelivers the same messages on every run: the
// runtime retries with backoff, shows the last error, and every message
// ends up as exactly one event whatever the redeliveries.
func TestRuntimeRetriesReportsAndDeduplicates(t *testing.T) {
	st, pub := newEnv(t)
	kind := &flaky{}
	kind.failures.Store(2)
	now := time.Now().UTC()
	if err := st.CreateSource(t.Context(), herald.Source{ID: "s1", Kind: "flaky", Topic: "in.{topic}.{payload.kind}",
		Mapping: json.RawMessage(`{"type":"t.{payload.n}"}`), Shards: 1, State: herald.SourceActive, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	rt := source.NewRuntime(source.RuntimeDeps{Store: st, Publisher: pub, Kinds: source.NewRegistry(kind)},
		source.RuntimeConfig{NodeID: "n1", MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, ReportInterval: 20 * time.Millisecond, SyncInterval: 20 * time.Millisecond})
	if err := rt.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer rt.Stop(context.Background())

	waitFor(t, "the events", func() bool {
		evs, _ := st.ReadEvents(t.Context(), "in.a.x", 0, 10)
		return len(evs) == 2
	})
	waitFor(t, "the status report", func() bool {
		sh, _ := st.SourceShards(t.Context(), "s1")
		return len(sh) == 1 && sh[0].Errors == 2 && sh[0].EventsIn == 2 && sh[0].Lag == 0 && sh[0].Node == "n1"
	})
	sh, _ := st.SourceShards(t.Context(), "s1")
	if sh[0].LastError == "" || sh[0].LastErrorAt.IsZero() {
		t.Fatalf("no last error: %+v", sh[0])
	}
	// A change restarts the shard, which publishes the same messages
	// again: duplicates, absorbed.
	src, _ := st.GetSource(t.Context(), "s1")
	src.Description = "changed"
	if err := st.UpdateSource(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	rt.Changed()
	waitFor(t, "a restart", func() bool { return kind.runs.Load() >= 4 })
	evs, _ := st.ReadEvents(t.Context(), "in.a.x", 0, 10)
	if len(evs) != 2 || evs[0].Type != "t.1" || evs[1].Key != "k2" {
		t.Fatalf("events after a redelivery: %+v", evs)
	}
	// Paused: the shard stops and releases its lease.
	src, _ = st.GetSource(t.Context(), "s1")
	src.State = herald.SourcePaused
	if err := st.UpdateSource(t.Context(), src); err != nil {
		t.Fatal(err)
	}
	rt.Changed()
	waitFor(t, "the lease released", func() bool {
		sh, _ := st.SourceShards(t.Context(), "s1")
		return len(sh) == 1 && sh[0].Node == ""
	})
}

// TestRuntimeRunsOnlyOwnedShards gives two runtimes the shards of one
// source by ownership: each shard runs once, on its owner.
func TestRuntimeRunsOnlyOwnedShards(t *testing.T) {
	st, pub := newEnv(t)
	now := time.Now().UTC()
	if err := st.CreateSource(t.Context(), herald.Source{ID: "s2", Kind: "flaky", Topic: "t", Shards: 4, State: herald.SourceActive, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	kinds := [2]*flaky{{}, {}}
	for i, node := range []string{"n0", "n1"} {
		rt := source.NewRuntime(source.RuntimeDeps{Store: st, Publisher: pub, Kinds: source.NewRegistry(kinds[i])},
			source.RuntimeConfig{NodeID: node, SyncInterval: 20 * time.Millisecond, Owns: func(key string) bool {
				return (key == "s2/0" || key == "s2/2") == (i == 0)
			}})
		if err := rt.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer rt.Stop(context.Background())
	}
	waitFor(t, "every shard running", func() bool {
		sh, _ := st.SourceShards(t.Context(), "s2")
		if len(sh) != 4 {
			return false
		}
		for _, s := range sh {
			if want := map[bool]string{true: "n0", false: "n1"}[s.Shard%2 == 0]; s.Node != want {
				return false
			}
		}
		return true
	})
	if a, b := kinds[0].runs.Load(), kinds[1].runs.Load(); a != 2 || b != 2 {
		t.Fatalf("runs: %d on n0, %d on n1; want 2 each", a, b)
	}
	if _, err := st.AcquireSourceLease(t.Context(), "s2", 1, "n0", time.Now(), time.Second); !herald.IsCode(err, herald.CodeConflict) {
		t.Fatalf("n0 took n1's live lease: %v", errors.Unwrap(err))
	}
}
