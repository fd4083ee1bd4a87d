package engine_test

import (
	"slices"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
)

// Every cache-stage listener hears a notice before any consumer does,
// whatever order they registered in, and a listener without a func for a
// notice is skipped.
func TestFeedOrdersStages(t *testing.T) {
	feed := engine.NewFeed()
	var heard []string
	listener := func(name string) engine.Listener {
		note := func(what string) { heard = append(heard, name+":"+what) }
		return engine.Listener{
			Committed:           func([]*herald.Event) { note("committed") },
			RemoteCommitted:     func(string, int64) { note("remote") },
			TopicDeleted:        func(string) { note("deleted") },
			KeyRevoked:          func(string) { note("revoked") },
			SubscriptionChanged: func(string) { note("changed") },
		}
	}
	feed.Listen(engine.StageConsumer, listener("dispatcher"))
	feed.Listen(engine.StageCache, listener("tail"))
	feed.Listen(engine.StageConsumer, engine.Listener{}) // hears nothing
	feed.Listen(engine.StageConsumer, listener("hub"))
	feed.Listen(engine.StageCache, listener("topics"))

	for _, c := range []struct {
		what   string
		notice func()
	}{
		{"committed", func() { feed.Committed([]*herald.Event{{Topic: "t", Seq: 1}}) }},
		{"remote", func() { feed.RemoteCommitted("t", 2) }},
		{"deleted", func() { feed.TopicDeleted("t") }},
		{"revoked", func() { feed.KeyRevoked("key_1") }},
		{"changed", func() { feed.SubscriptionChanged("sub_1") }},
		{"changed", feed.SubscriptionsChanged},
	} {
		heard = nil
		c.notice()
		want := []string{"tail:" + c.what, "topics:" + c.what, "dispatcher:" + c.what, "hub:" + c.what}
		if !slices.Equal(heard, want) {
			t.Errorf("%s heard as %v, want %v", c.what, heard, want)
		}
	}
}
