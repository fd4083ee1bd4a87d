package channeltest

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Helpers for a channel's own tests, beside the suite.

// Service returns the address of a test service from the environment
// variable env (what says what it is: "an AMQP broker"), or skips the
// test when it is not set.
func Service(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		t.Skipf("%s is not set: no %s to test against", env, what)
	}
	return v
}

// HostPort returns the host:port of a service URL.
func HostPort(t testing.TB, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.Host
}

// OpenSink validates config as an admin's would be and opens a sink of
// it for the subscription "sub_test" with the timeout; the sink is closed
// when the test ends.
func OpenSink(t testing.TB, ch channel.Channel, config string, timeout time.Duration) channel.Sink {
	t.Helper()
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(config), Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := ch.Open(t.Context(), &herald.Subscription{ID: "sub_test", Channel: ch.Name(), Config: canon, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close(context.Background()) })
	return sink
}

// Deliver makes one attempt, bounded by timeout.
func Deliver(t testing.TB, sink channel.Sink, ev *herald.Event, attempt int, timeout time.Duration) herald.DeliveryResult {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	return sink.Deliver(ctx, ev, attempt)
}

// WaitOutcome delivers the event, each attempt bounded by timeout, until
// it has the outcome, as the engine's retries would (a client reconnects
// on its own: poll it), for at most 20 seconds.
func WaitOutcome(t testing.TB, sink channel.Sink, ev *herald.Event, want herald.DeliveryOutcome, timeout time.Duration) herald.DeliveryResult {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 1; ; attempt++ {
		r := Deliver(t, sink, ev, attempt, timeout)
		if r.Outcome == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %s: outcome %v (%s %s) after 20s; want %v", ev.ID, r.Outcome, r.Err, r.Detail, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
