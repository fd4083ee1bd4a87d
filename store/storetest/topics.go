package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func runTopics(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("PutCreatesThenUpdatesSettings", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		created := base()
		in := herald.Topic{Name: "orders.created", Retention: 48 * time.Hour, MaxEventBytes: 1000,
			DedupWindow: time.Hour, CreatedAt: created, UpdatedAt: created}
		got, isNew, err := s.PutTopic(t.Context(), in)
		if err != nil || !isNew {
			t.Fatalf("PutTopic new: created %v, err %v; want true, nil", isNew, err)
		}
		if got.Name != in.Name || got.Retention != in.Retention || got.MaxEventBytes != in.MaxEventBytes ||
			got.DedupWindow != in.DedupWindow || !got.CreatedAt.Equal(created) || got.HeadSeq != 0 || got.FirstSeq != 0 {
			t.Fatalf("PutTopic new returned %+v, want the settings of %+v and no events", got, in)
		}
		appendStored(t, s, event(in.Name, created, "a"), event(in.Name, created, "b"))

		upd := in
		upd.Retention, upd.MaxEventBytes, upd.DedupWindow = 72*time.Hour, 2000, 0
		upd.CreatedAt, upd.UpdatedAt = created.Add(time.Hour), created.Add(time.Hour)
		got, isNew, err = s.PutTopic(t.Context(), upd)
		if err != nil || isNew {
			t.Fatalf("PutTopic existing: created %v, err %v; want false, nil", isNew, err)
		}
		if got.Retention != upd.Retention || got.MaxEventBytes != upd.MaxEventBytes || got.DedupWindow != 0 {
			t.Fatalf("PutTopic existing returned settings %v/%d/%v, want %v/%d/0",
				got.Retention, got.MaxEventBytes, got.DedupWindow, upd.Retention, upd.MaxEventBytes)
		}
		if !got.CreatedAt.Equal(created) {
			t.Fatalf("PutTopic existing changed CreatedAt to %v, want %v kept", got.CreatedAt, created)
		}
		if !got.UpdatedAt.Equal(upd.UpdatedAt) {
			t.Fatalf("PutTopic existing: UpdatedAt %v, want %v", got.UpdatedAt, upd.UpdatedAt)
		}
		if got.HeadSeq != 2 || got.FirstSeq != 1 {
			t.Fatalf("PutTopic existing: HeadSeq %d FirstSeq %d, want seqs kept (2, 1)", got.HeadSeq, got.FirstSeq)
		}
		stored := getTopic(t, s, in.Name)
		if !sameTopic(stored, got) {
			t.Fatalf("GetTopic after update = %+v, want what PutTopic returned, %+v", stored, got)
		}
		if seqs := appendStored(t, s, event(in.Name, created, "c")); seqs[0] != 3 {
			t.Fatalf("append after update got seq %d, want 3", seqs[0])
		}
	})

	t.Run("GetUnknownIsNotFound", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		_, err := s.GetTopic(t.Context(), "no.such.topic")
		wantCode(t, "GetTopic unknown", err, herald.CodeNotFound)
	})

	t.Run("ListPagesInByteOrder", func(t *testing.T) {
		s := open(t)
		// Mixed case and punctuation: the order is byte order, whatever
		// the backend's collation would say.
		names := []string{"b", "a.b", "Zeta", "a-b", "a_b", "0day", "B", "a", "a.a.a", "z_last"}
		for _, n := range names {
			putTopic(t, s, topic(n))
		}
		appendStored(t, s, event("a.b", base(), "x"), event("a.b", base(), "y"))
		want := slices.Sorted(slices.Values(names))

		var got []string
		after := ""
		for page := 0; ; page++ {
			ts, err := s.ListTopics(t.Context(), after, 3)
			if err != nil {
				t.Fatalf("ListTopics(%q, 3): %v", after, err)
			}
			if len(ts) > 3 {
				t.Fatalf("ListTopics(%q, 3) returned %d topics", after, len(ts))
			}
			for _, tp := range ts {
				got = append(got, tp.Name)
				if tp.Name == "a.b" && (tp.HeadSeq != 2 || tp.FirstSeq != 1) {
					t.Fatalf("ListTopics stats for a.b: HeadSeq %d FirstSeq %d, want 2, 1", tp.HeadSeq, tp.FirstSeq)
				}
				if tp.Retention != herald.DefaultRetention {
					t.Fatalf("ListTopics: %s retention %v, want %v", tp.Name, tp.Retention, herald.DefaultRetention)
				}
			}
			if len(ts) < 3 {
				break
			}
			after = ts[len(ts)-1].Name
			if page > len(names) {
				t.Fatal("ListTopics paging does not end")
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ListTopics pages gave %q, want %q", got, want)
		}
		// "after" need not be an existing name.
		ts, err := s.ListTopics(t.Context(), "a.c", 2)
		if err != nil || len(ts) != 2 || ts[0].Name != "a_b" || ts[1].Name != "b" {
			t.Fatalf("ListTopics(\"a.c\", 2) = %v, %v; want a_b, b", topicNames(ts), err)
		}
		ts, err = s.ListTopics(t.Context(), "z_last", 5)
		if err != nil || len(ts) != 0 {
			t.Fatalf("ListTopics after the last name = %v, %v; want none", topicNames(ts), err)
		}
	})

	t.Run("DeleteRemovesEventsAndKeysAndRecreateStartsAtOne", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		tp := topic("deleted.topic")
		putTopic(t, s, tp)
		old := []*herald.Event{withKey(event(tp.Name, base(), "1"), "idem-1"), event(tp.Name, base(), "2"), event(tp.Name, base(), "3")}
		appendStored(t, s, old...)

		if err := s.DeleteTopic(t.Context(), tp.Name); err != nil {
			t.Fatalf("DeleteTopic: %v", err)
		}
		_, err := s.GetTopic(t.Context(), tp.Name)
		wantCode(t, "GetTopic after delete", err, herald.CodeNotFound)
		wantCode(t, "DeleteTopic twice", s.DeleteTopic(t.Context(), tp.Name), herald.CodeNotFound)
		if evs := readAll(t, s, tp.Name); len(evs) != 0 {
			t.Fatalf("ReadEvents after delete returned %d events", len(evs))
		}
		_, err = s.GetEvent(t.Context(), tp.Name, old[1].ID)
		wantCode(t, "GetEvent after delete", err, herald.CodeNotFound)
		res := appendOK(t, s, event(tp.Name, base(), "orphan"))
		wantCode(t, "Append to deleted topic", res[0].Err, herald.CodeNotFound)

		got := putTopic(t, s, tp)
		if got.HeadSeq != 0 || got.FirstSeq != 0 || got.EventCount() != 0 {
			t.Fatalf("recreated topic has HeadSeq %d FirstSeq %d; want a fresh log", got.HeadSeq, got.FirstSeq)
		}
		// The old idempotency key is gone with the topic.
		fresh := withKey(event(tp.Name, base(), "new"), "idem-1")
		wantSeqs(t, "append to recreated topic", appendStored(t, s, fresh), 1)
		evs := readAll(t, s, tp.Name)
		if len(evs) != 1 {
			t.Fatalf("recreated topic reads %d events, want only the new one", len(evs))
		}
		sameEvent(t, evs[0], fresh)
		_, err = s.GetEvent(t.Context(), tp.Name, old[1].ID)
		wantCode(t, "GetEvent of an old event after recreate", err, herald.CodeNotFound)
		wantStats(t, s, tp.Name, 1, 1, 1)
	})

	t.Run("DeleteUnknownIsNotFound", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		wantCode(t, "DeleteTopic unknown", s.DeleteTopic(t.Context(), "never.was"), herald.CodeNotFound)
	})

	t.Run("StatsFollowAppendsAndPrunes", func(t *testing.T) {
		s := open(t)
		now := base()
		tp := topic("stats")
		tp.Retention = time.Hour
		putTopic(t, s, tp)
		wantStats(t, s, tp.Name, 0, 0, 0)

		old := now.Add(-2 * time.Hour)
		appendStored(t, s, event(tp.Name, old, "1"), event(tp.Name, old, "2"), event(tp.Name, old, "3"))
		appendStored(t, s, event(tp.Name, now, "4"), event(tp.Name, now, "5"))
		wantStats(t, s, tp.Name, 5, 1, 5)

		if n, err := s.Prune(t.Context(), now, 2); err != nil || n != 2 {
			t.Fatalf("Prune(limit 2) = %d, %v; want 2", n, err)
		}
		wantStats(t, s, tp.Name, 5, 3, 3)
		if n, err := s.Prune(t.Context(), now, 100); err != nil || n != 1 {
			t.Fatalf("Prune(limit 100) = %d, %v; want 1", n, err)
		}
		wantStats(t, s, tp.Name, 5, 4, 2)

		// Everything expires: the head stays, nothing is retained.
		if n, err := s.Prune(t.Context(), now.Add(2*time.Hour), 100); err != nil || n != 2 {
			t.Fatalf("Prune of the rest = %d, %v; want 2", n, err)
		}
		wantStats(t, s, tp.Name, 5, 0, 0)
		wantSeqs(t, "append after the log emptied", appendStored(t, s, event(tp.Name, now.Add(2*time.Hour), "6")), 6)
		wantStats(t, s, tp.Name, 6, 6, 1)
	})
}

func topicNames(ts []herald.Topic) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

// sameTopic compares settings, times (as instants) and statistics.
func sameTopic(a, b herald.Topic) bool {
	return a.Name == b.Name && a.Retention == b.Retention && a.MaxEventBytes == b.MaxEventBytes &&
		a.DedupWindow == b.DedupWindow && a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) &&
		a.HeadSeq == b.HeadSeq && a.FirstSeq == b.FirstSeq
}
