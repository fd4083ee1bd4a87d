package storetest

import (
	"testing"

	"github.com/heraldhq/herald"
)

func runLifecycle(t *testing.T, open func(t *testing.T) herald.Store) {
	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		if err := s.Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})

	t.Run("CallsAfterCloseFail", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		putTopic(t, s, topic("closing"))
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := s.GetTopic(t.Context(), "closing"); err == nil {
			t.Fatal("GetTopic after Close succeeded")
		}
		if _, err := s.Append(t.Context(), []*herald.Event{event("closing", base(), "x")}); err == nil {
			t.Fatal("Append after Close succeeded")
		}
		if err := s.Ping(t.Context()); err == nil {
			t.Fatal("Ping after Close succeeded")
		}
	})
}
