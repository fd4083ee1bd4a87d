package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// RunSources runs the conformance suite of herald.SourceStore: sources
// stored and changed under their version, and the leases of their shards
// with fencing epochs, as subscriptions are. open must return a new, empty
// store each call and close it when t ends.
func RunSources(t *testing.T, open func(t *testing.T) herald.SourceStore) {
	t.Run("CRUD", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		at := base()
		src := herald.Source{ID: "src_a", Kind: "outbox", Config: []byte(`{"dsn":"x"}`), Topic: "orders.{topic}",
			Mapping: []byte(`{"key":"{key}"}`), Description: "d", Shards: 3, State: herald.SourceActive,
			CreatedAt: at, UpdatedAt: at, Version: 7}
		if err := s.CreateSource(ctx, src); err != nil {
			t.Fatalf("CreateSource: %v", err)
		}
		if err := s.CreateSource(ctx, src); !herald.IsCode(err, herald.CodeConflict) {
			t.Fatalf("CreateSource again: got %v, want CodeConflict", err)
		}
		got, err := s.GetSource(ctx, "src_a")
		if err != nil {
			t.Fatalf("GetSource: %v", err)
		}
		want := src
		want.Version = 0
		if string(got.Config) != string(want.Config) || string(got.Mapping) != string(want.Mapping) ||
			got.Kind != want.Kind || got.Topic != want.Topic || got.Shards != 3 || got.State != herald.SourceActive ||
			got.Description != "d" || !got.CreatedAt.Equal(at) || got.Version != 0 || got.Managed {
			t.Fatalf("GetSource = %+v, want %+v", got, want)
		}
		if _, err := s.GetSource(ctx, "src_none"); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("GetSource(missing): got %v, want CodeNotFound", err)
		}
		got.State, got.StateReason, got.Shards, got.Managed = herald.SourcePaused, "by hand", 2, true
		if err := s.UpdateSource(ctx, got); err != nil {
			t.Fatalf("UpdateSource: %v", err)
		}
		if err := s.UpdateSource(ctx, got); !herald.IsCode(err, herald.CodeConflict) {
			t.Fatalf("UpdateSource with an old version: got %v, want CodeConflict", err)
		}
		again, _ := s.GetSource(ctx, "src_a")
		if again.State != herald.SourcePaused || again.StateReason != "by hand" || again.Shards != 2 || again.Version != 1 || !again.Managed {
			t.Fatalf("after UpdateSource: %+v", again)
		}
		missing := got
		missing.ID = "src_none"
		if err := s.UpdateSource(ctx, missing); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("UpdateSource(missing): got %v, want CodeNotFound", err)
		}
		src.ID = "src_b"
		if err := s.CreateSource(ctx, src); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListSources(ctx, "", 0)
		if err != nil || len(list) != 2 || list[0].ID != "src_a" || list[1].ID != "src_b" {
			t.Fatalf("ListSources = %v, %v", list, err)
		}
		if list, _ := s.ListSources(ctx, "src_a", 10); len(list) != 1 || list[0].ID != "src_b" {
			t.Fatalf("ListSources after src_a = %v", list)
		}
		if list, _ := s.ListSources(ctx, "", 1); len(list) != 1 {
			t.Fatalf("ListSources limit 1 = %v", list)
		}
		if _, err := s.AcquireSourceLease(ctx, "src_a", 0, "n1", at, time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteSource(ctx, "src_a"); err != nil {
			t.Fatalf("DeleteSource: %v", err)
		}
		if err := s.DeleteSource(ctx, "src_a"); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("DeleteSource again: got %v, want CodeNotFound", err)
		}
		if sh, err := s.SourceShards(ctx, "src_a"); err != nil || len(sh) != 0 {
			t.Fatalf("shards of a deleted source: %v, %v", sh, err)
		}
		// A source created again with the id starts its shards afresh.
		src.ID = "src_a"
		if err := s.CreateSource(ctx, src); err != nil {
			t.Fatal(err)
		}
		if e, err := s.AcquireSourceLease(ctx, "src_a", 0, "n1", at, time.Minute); err != nil || e != 1 {
			t.Fatalf("lease of a source created again: epoch %d, %v; want 1", e, err)
		}
	})

	t.Run("Leases", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		at := base()
		if _, err := s.AcquireSourceLease(ctx, "src_none", 0, "n1", at, time.Minute); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("lease of a missing source: got %v, want CodeNotFound", err)
		}
		if err := s.CreateSource(ctx, herald.Source{ID: "src_l", Kind: "outbox", Topic: "t", Shards: 2, State: herald.SourceActive, CreatedAt: at, UpdatedAt: at}); err != nil {
			t.Fatal(err)
		}
		e1, err := s.AcquireSourceLease(ctx, "src_l", 0, "n1", at, 10*time.Second)
		if err != nil || e1 != 1 {
			t.Fatalf("first lease: %d, %v; want epoch 1", e1, err)
		}
		if e, err := s.AcquireSourceLease(ctx, "src_l", 0, "n1", at.Add(5*time.Second), 10*time.Second); err != nil || e != e1 {
			t.Fatalf("renewal: %d, %v; want the same epoch %d", e, err, e1)
		}
		if _, err := s.AcquireSourceLease(ctx, "src_l", 0, "n2", at.Add(14*time.Second), 10*time.Second); !herald.IsCode(err, herald.CodeConflict) {
			t.Fatalf("another node's live lease: got %v, want CodeConflict", err)
		}
		// Shards are leased apart.
		if e, err := s.AcquireSourceLease(ctx, "src_l", 1, "n2", at, 10*time.Second); err != nil || e != 1 {
			t.Fatalf("lease of shard 1: %d, %v", e, err)
		}
		st := herald.SourceShardStatus{Lag: 5, EventsIn: 10, Duplicates: 3, Errors: 1, LastError: "boom", LastErrorAt: at, ReportedAt: at, State: herald.ShardRetrying}
		if err := s.ReportSource(ctx, "src_l", 0, e1, st); err != nil {
			t.Fatalf("ReportSource: %v", err)
		}
		// n1's lease expires; n2 takes over with a new epoch, and n1's
		// reports under the old one are refused.
		e2, err := s.AcquireSourceLease(ctx, "src_l", 0, "n2", at.Add(16*time.Second), 10*time.Second)
		if err != nil || e2 != e1+1 {
			t.Fatalf("takeover: %d, %v; want epoch %d", e2, err, e1+1)
		}
		if err := s.ReportSource(ctx, "src_l", 0, e1, herald.SourceShardStatus{Lag: 99}); !herald.IsCode(err, herald.CodeConflict) {
			t.Fatalf("stale report: got %v, want CodeConflict", err)
		}
		shards, err := s.SourceShards(ctx, "src_l")
		if err != nil || len(shards) != 2 {
			t.Fatalf("SourceShards = %v, %v", shards, err)
		}
		if sh := shards[0]; sh.Shard != 0 || sh.Node != "n2" || sh.Epoch != e2 || sh.Lag != 5 || sh.EventsIn != 10 || sh.Duplicates != 3 ||
			sh.Errors != 1 || sh.LastError != "boom" || !sh.LastErrorAt.Equal(at) || sh.State != herald.ShardRetrying {
			t.Fatalf("shard 0 = %+v", sh)
		}
		// Release ends the lease only for its holder and epoch.
		if err := s.ReleaseSourceLease(ctx, "src_l", 0, "n1", e1); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AcquireSourceLease(ctx, "src_l", 0, "n1", at.Add(17*time.Second), 10*time.Second); !herald.IsCode(err, herald.CodeConflict) {
			t.Fatalf("release by a former holder freed the lease: %v", err)
		}
		if err := s.ReleaseSourceLease(ctx, "src_l", 0, "n2", e2); err != nil {
			t.Fatal(err)
		}
		if e, err := s.AcquireSourceLease(ctx, "src_l", 0, "n1", at.Add(17*time.Second), 10*time.Second); err != nil || e != e2+1 {
			t.Fatalf("lease after release: %d, %v; want %d", e, err, e2+1)
		}
		if err := s.ReportSource(ctx, "src_none", 0, 1, st); !herald.IsCode(err, herald.CodeNotFound) {
			t.Fatalf("report of a missing source: got %v, want CodeNotFound", err)
		}
	})
}
