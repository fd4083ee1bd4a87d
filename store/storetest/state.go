package storetest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/heraldhq/herald"
)

// runSchemas checks SchemaStore: versions count from 1 per topic, the
// newest is version 0, and DeleteTopic takes the schemas with it.
func runSchemas(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	if _, err := s.AddSchema(ctx, herald.Schema{Topic: "no.such", Kind: herald.SchemaJSON, Definition: []byte(`{}`)}); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("AddSchema on a missing topic: %v, want not-found", err)
	}
	putTopic(t, s, topic("schemas.a"))
	if _, err := s.GetSchema(ctx, "schemas.a", 0); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("GetSchema without one: %v, want not-found", err)
	}
	for i, def := range []string{`{"type":"object"}`, `{"type":"object","required":["a"]}`} {
		got, err := s.AddSchema(ctx, herald.Schema{Topic: "schemas.a", Kind: herald.SchemaJSON, Definition: []byte(def)})
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != i+1 {
			t.Fatalf("version %d, want %d", got.Version, i+1)
		}
	}
	proto := herald.Schema{Topic: "schemas.a", Kind: herald.SchemaProtobuf, Format: "proto", Message: "x.Y", Definition: []byte("syntax = \"proto3\";")}
	if _, err := s.AddSchema(ctx, proto); err != nil {
		t.Fatal(err)
	}
	latest, err := s.GetSchema(ctx, "schemas.a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if latest.Version != 3 || latest.Kind != herald.SchemaProtobuf || latest.Message != "x.Y" || latest.Format != "proto" ||
		!bytes.Equal(latest.Definition, proto.Definition) || latest.CreatedAt.IsZero() {
		t.Fatalf("newest schema %+v", latest)
	}
	v1, err := s.GetSchema(ctx, "schemas.a", 1)
	if err != nil || string(v1.Definition) != `{"type":"object"}` {
		t.Fatalf("version 1: %+v, %v", v1, err)
	}
	if _, err := s.GetSchema(ctx, "schemas.a", 9); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("missing version: %v", err)
	}
	all, err := s.ListSchemas(ctx, "schemas.a")
	if err != nil || len(all) != 3 || all[0].Version != 1 || all[2].Version != 3 {
		t.Fatalf("ListSchemas: %d, %v", len(all), err)
	}
	if err := s.DeleteTopic(ctx, "schemas.a"); err != nil {
		t.Fatal(err)
	}
	putTopic(t, s, topic("schemas.a"))
	if _, err := s.GetSchema(ctx, "schemas.a", 0); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("schema outlived its topic: %v", err)
	}
	if _, err := s.AddSchema(ctx, herald.Schema{Topic: "schemas.a", Kind: herald.SchemaJSON, Definition: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSchemas(ctx, "schemas.a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSchemas(ctx, "schemas.a"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("DeleteSchemas twice: %v", err)
	}
}

// runState checks StateStore: a commit writes and deletes keys and sets
// the position together; owners are separate.
func runState(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	if _, err := s.GetState(ctx, "rule:a", "k1"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("GetState of nothing: %v", err)
	}
	if pos, err := s.StatePosition(ctx, "rule:a"); err != nil || pos != 0 {
		t.Fatalf("position of nothing: %d, %v", pos, err)
	}
	at := base()
	err := s.CommitState(ctx, "rule:a", []herald.StateEntry{
		{Key: "k1", Value: []byte("one"), Seq: 3, UpdatedAt: at},
		{Key: "k2", Value: []byte("two"), Seq: 4, UpdatedAt: at},
		{Key: "k3", Value: []byte{}, Seq: 5, UpdatedAt: at},
	}, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CommitState(ctx, "rule:b", []herald.StateEntry{{Key: "k1", Value: []byte("other"), Seq: 1}}, 1); err != nil {
		t.Fatal(err)
	}
	e, err := s.GetState(ctx, "rule:a", "k1")
	if err != nil || string(e.Value) != "one" || e.Seq != 3 || !e.UpdatedAt.Equal(at) {
		t.Fatalf("GetState: %+v, %v", e, err)
	}
	if e, err := s.GetState(ctx, "rule:a", "k3"); err != nil || len(e.Value) != 0 {
		t.Fatalf("an empty value is a value: %+v, %v", e, err)
	}
	many, err := s.GetStates(ctx, "rule:a", []string{"k2", "nope", "k1", "k3"})
	if err != nil || len(many) != 3 {
		t.Fatalf("GetStates: %+v, %v", many, err)
	}
	for _, e := range many {
		if want := map[string]string{"k1": "one", "k2": "two", "k3": ""}[e.Key]; string(e.Value) != want || e.Seq == 0 || !e.UpdatedAt.Equal(at) {
			t.Fatalf("GetStates entry %+v", e)
		}
	}
	if none, err := s.GetStates(ctx, "rule:a", nil); err != nil || len(none) != 0 {
		t.Fatalf("GetStates of no key: %+v, %v", none, err)
	}
	var keys []string
	for i := range 1200 { // more than one statement's worth
		keys = append(keys, fmt.Sprintf("x%d", i))
	}
	keys = append(keys, "k1")
	if got, err := s.GetStates(ctx, "rule:a", keys); err != nil || len(got) != 1 || got[0].Key != "k1" {
		t.Fatalf("GetStates of 1,201 keys: %d, %v", len(got), err)
	}
	if n, err := s.CountState(ctx, "rule:a"); err != nil || n != 3 {
		t.Fatalf("CountState: %d, %v", n, err)
	}
	// A delete, an update and a position in one commit; position 0 keeps it.
	if err := s.CommitState(ctx, "rule:a", []herald.StateEntry{{Key: "k2"}, {Key: "k1", Value: []byte("uno"), Seq: 6}}, 6); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitState(ctx, "rule:a", nil, 0); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListState(ctx, "rule:a", "", 10)
	if err != nil || len(list) != 2 || list[0].Key != "k1" || string(list[0].Value) != "uno" || list[1].Key != "k3" {
		t.Fatalf("ListState: %+v, %v", list, err)
	}
	if page, err := s.ListState(ctx, "rule:a", "k1", 1); err != nil || len(page) != 1 || page[0].Key != "k3" {
		t.Fatalf("ListState after k1: %+v, %v", page, err)
	}
	if pos, err := s.StatePosition(ctx, "rule:a"); err != nil || pos != 6 {
		t.Fatalf("position %d, %v; want 6", pos, err)
	}
	if err := s.DeleteState(ctx, "rule:a"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.ListState(ctx, "rule:a", "", 10); len(list) != 0 {
		t.Fatalf("state left after DeleteState: %+v", list)
	}
	if pos, _ := s.StatePosition(ctx, "rule:a"); pos != 0 {
		t.Fatalf("position left after DeleteState: %d", pos)
	}
	if n, err := s.CountState(ctx, "rule:a"); err != nil || n != 0 {
		t.Fatalf("CountState after DeleteState: %d, %v", n, err)
	}
	if e, err := s.GetState(ctx, "rule:b", "k1"); err != nil || string(e.Value) != "other" {
		t.Fatalf("another owner's state: %+v, %v", e, err)
	}
}

// runStateBatch checks CommitStateBatch: state, emitted events and the
// subscription's cursors commit together or not at all, under the lease
// epoch; emits are appended as Append stores them.
func runStateBatch(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	putTopic(t, s, topic("sb.in"))
	out := topic("sb.out")
	out.DedupWindow = 0 // no dedup: only the transaction keeps an emit single
	putTopic(t, s, out)
	sub := plainSub("rule_sb", "sb.in")
	if err := s.CreateSubscription(ctx, sub, herald.StartPosition{Earliest: true}); err != nil {
		t.Fatal(err)
	}
	epoch := lease(t, s, sub.ID)
	now := base()
	emit := func(n int) []*herald.Event {
		var evs []*herald.Event
		for i := range n {
			evs = append(evs, &herald.Event{Topic: "sb.out", Time: now, Type: "flag", Key: fmt.Sprint("k", i),
				IdempotencyKey: fmt.Sprint("rule-", i), ContentType: "application/json", Payload: []byte(`{"n":1}`)})
		}
		return evs
	}
	stateOf := func() string {
		t.Helper()
		list, err := s.ListState(ctx, "rule:sb", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for _, e := range list {
			fmt.Fprintf(&b, "%s=%s@%d ", e.Key, e.Value, e.Seq)
		}
		return b.String()
	}
	emitted := func() int {
		t.Helper()
		evs, err := s.ReadEvents(ctx, "sb.out", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}

	evs := emit(2)
	res, err := s.CommitStateBatch(ctx, herald.StateBatch{Owner: "rule:sb",
		Entries: []herald.StateEntry{{Key: "k0", Value: []byte("a"), Seq: 3}}, Position: 3, Emits: evs,
		SubscriptionID: sub.ID, Epoch: epoch, Cursors: []herald.Cursor{{Topic: "sb.in", Seq: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Seq != 1 || res[1].Seq != 2 || evs[1].Seq != 2 || evs[1].ID == "" || evs[1].ID != res[1].ID {
		t.Fatalf("results %+v, events %+v", res, evs[1])
	}
	if got := stateOf(); got != "k0=a@3 " {
		t.Fatalf("state %q", got)
	}
	if pos, _ := s.StatePosition(ctx, "rule:sb"); pos != 3 {
		t.Fatalf("position %d, want 3", pos)
	}
	wantCursors(t, "after the batch", s, sub.ID, herald.Cursor{Topic: "sb.in", Seq: 3})

	// A stale epoch writes nothing at all.
	_, err = s.CommitStateBatch(ctx, herald.StateBatch{Owner: "rule:sb",
		Entries: []herald.StateEntry{{Key: "k0", Value: []byte("b"), Seq: 5}}, Position: 5, Emits: emit(1),
		SubscriptionID: sub.ID, Epoch: epoch + 1, Cursors: []herald.Cursor{{Topic: "sb.in", Seq: 5}}})
	if !herald.IsCode(err, herald.CodeConflict) {
		t.Fatalf("stale epoch: %v, want conflict", err)
	}
	// So does an emit to a topic that does not exist.
	_, err = s.CommitStateBatch(ctx, herald.StateBatch{Owner: "rule:sb",
		Entries: []herald.StateEntry{{Key: "k0", Value: []byte("c"), Seq: 5}}, Position: 5,
		Emits:          append(emit(1), &herald.Event{Topic: "sb.nowhere", Time: now, Payload: []byte("{}")}),
		SubscriptionID: sub.ID, Epoch: epoch, Cursors: []herald.Cursor{{Topic: "sb.in", Seq: 5}}})
	if !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("emit to a missing topic: %v, want not-found", err)
	}
	if _, err := s.CommitStateBatch(ctx, herald.StateBatch{Owner: "rule:sb", SubscriptionID: "rule_none", Epoch: 1}); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("unknown subscription: %v, want not-found", err)
	}
	if got := stateOf(); got != "k0=a@3 " || emitted() != 2 {
		t.Fatalf("a failed batch wrote: state %q, %d events emitted", got, emitted())
	}
	if pos, _ := s.StatePosition(ctx, "rule:sb"); pos != 3 {
		t.Fatalf("position %d after failed batches, want 3", pos)
	}
	wantCursors(t, "after failed batches", s, sub.ID, herald.Cursor{Topic: "sb.in", Seq: 3})

	// Cursors only advance; a batch without a subscription has no lease.
	if _, err := s.CommitStateBatch(ctx, herald.StateBatch{Owner: "rule:sb", SubscriptionID: sub.ID, Epoch: epoch,
		Cursors: []herald.Cursor{{Topic: "sb.in", Seq: 2}}}); err != nil {
		t.Fatal(err)
	}
	wantCursors(t, "after a lower cursor", s, sub.ID, herald.Cursor{Topic: "sb.in", Seq: 3})
	if _, err := s.CommitStateBatch(ctx, herald.StateBatch{Owner: "rule:sb", Entries: []herald.StateEntry{{Key: "k0"}}, Emits: emit(1)}); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(); got != "" || emitted() != 3 {
		t.Fatalf("state %q, %d emitted; want none and 3", got, emitted())
	}
}
