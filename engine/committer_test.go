package engine_test

import (
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
)

// TestCommitterHealth checks what readiness relies on: a failed commit
// makes Health report the store's reason, and the publisher's error says
// it too, for FailureWindow; then Health is nil again.
func TestCommitterHealth(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "h.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.PutTopic(t.Context(), herald.Topic{Name: "t"}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		const window = 10 * time.Second
		c := engine.NewCommitter(st, engine.CommitterConfig{FailureWindow: window}, nil, nil)
		if err := c.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer c.Stop(t.Context())
		event := func() []*herald.Event {
			return []*herald.Event{{ID: herald.NewID(time.Now()), Topic: "t", Time: time.Now(), ContentType: "text/plain", Payload: []byte("x")}}
		}
		if _, err := c.Append(t.Context(), event()); err != nil {
			t.Fatal(err)
		}
		if err := c.Health(); err != nil {
			t.Fatalf("Health after a commit = %v, want nil", err)
		}

		_ = st.Close() // every commit fails from now on
		_, err := c.Append(t.Context(), event())
		if !herald.IsCode(err, herald.CodeUnavailable) || !strings.Contains(err.(*herald.Error).Message, "the store is closed") {
			t.Fatalf("Append on a closed store = %v; want unavailable, saying why", err)
		}
		time.Sleep(window - time.Second)
		err = c.Health()
		if !herald.IsCode(err, herald.CodeUnavailable) {
			t.Fatalf("Health %s after a failed commit = %v; want unavailable", window-time.Second, err)
		}
		if msg := err.(*herald.Error).Message; msg != "the event store's last commit failed 9s ago (the store is closed)" {
			t.Fatalf("Health says %q", msg)
		}
		time.Sleep(time.Second)
		if err := c.Health(); err != nil {
			t.Fatalf("Health a window after the failure = %v, want nil", err)
		}
	})
}
