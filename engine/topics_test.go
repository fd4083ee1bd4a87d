package engine_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
)

// A topic deleted on another node and created again there: without being
// told of the deletion, the tail cache would answer reads of the new topic
// with the old one's events (its newest old event is newer than the new
// topic's head, so a remote commit does not reset it), and the topic cache
// would serve the old settings. Told, both go back to the store.
func TestTopicDeletedElsewhereLeavesNoStaleCache(t *testing.T) {
	ctx := t.Context()
	st, err := openSQLite(ctx, filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := herald.Topic{Name: "orders", MaxEventBytes: 1000}.WithDefaults()
	if _, _, err := st.PutTopic(ctx, old); err != nil {
		t.Fatal(err)
	}
	topics := engine.NewTopics(st, engine.TopicsConfig{TTL: time.Hour})
	if got, err := topics.Get(ctx, "orders"); err != nil || got.MaxEventBytes != 1000 {
		t.Fatalf("Get: %+v %v", got, err)
	}
	tail := engine.NewTail(engine.TailConfig{})
	var evs []*herald.Event
	for seq := range int64(5) {
		evs = append(evs, &herald.Event{Topic: "orders", Seq: seq + 1, Payload: []byte("old")})
	}
	tail.Add(evs)
	d := engine.NewDispatcher(engine.DispatcherDeps{Store: st, Tail: tail, Channels: channel.NewRegistry()}, engine.DispatcherConfig{})
	feed := engine.NewFeed()
	// Registered against the stage order on purpose: the feed, not the
	// order of registration, makes the caches hear first.
	feed.Listen(engine.StageConsumer, d.Listener())
	feed.Listen(engine.StageCache, tail.Listener())
	feed.Listen(engine.StageCache, topics.Listener())

	// Another node deletes the topic, creates it again with other
	// settings and commits two events to it.
	if err := st.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	renewed := herald.Topic{Name: "orders", MaxEventBytes: 2000}.WithDefaults()
	if _, _, err := st.PutTopic(ctx, renewed); err != nil {
		t.Fatal(err)
	}
	feed.RemoteCommitted("orders", 2)
	if got, ok := tail.Read("orders", 0, 10); !ok || len(got) == 0 {
		t.Fatalf("before the deletion is known: tail read %d events, ok %v; the test no longer shows the hazard", len(got), ok)
	}

	feed.TopicDeleted("orders")
	if got, ok := tail.Read("orders", 0, 10); ok {
		t.Errorf("after the deletion the tail still answers with %d events", len(got))
	}
	if got, err := topics.Get(ctx, "orders"); err != nil || got.MaxEventBytes != 2000 {
		t.Errorf("after Forget: %+v %v, want the new settings", got, err)
	}
}
