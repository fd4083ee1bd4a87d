package webhook

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// TestFailureReasons: a failed attempt reports a reason from the
// documented set, which names no host or address; the raw cause, which
// does, is kept apart as the detail.
func TestFailureReasons(t *testing.T) {
	t.Parallel()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String() + "/hook"
	_ = closed.Close()
	status := func(code int) string {
		return newServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }).URL
	}
	hang := make(chan struct{})
	hung := newServer(t, func(w http.ResponseWriter, r *http.Request) { <-hang }).URL
	t.Cleanup(func() { close(hang) }) // before the server's Close, which waits for it
	reset := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = c.Close()
		}
	}).URL
	untrusted := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(untrusted.Close)

	open := NewChannel(newSender(t, SenderConfig{AllowPrivate: true}), ChannelConfig{AllowPrivate: true})
	guarded := NewChannel(newSender(t, SenderConfig{}), ChannelConfig{AllowPrivate: true})
	cases := []struct {
		name     string
		d        *Channel
		url      string
		want     string
		wantDead herald.DeliveryOutcome
		detail   string // the detail holds this
	}{
		{"connection refused", open, closedURL, ReasonConnectionRefused, herald.Failed, closed.Addr().String()},
		{"private address", guarded, status(204), ReasonDestinationRefused, herald.Failed, "127.0.0.1"},
		{"untrusted certificate", open, untrusted.URL, ReasonTLS, herald.Failed, "certificate"},
		{"no answer in time", open, hung, ReasonTimeout, herald.Failed, ""},
		{"closed without an answer", open, reset, ReasonConnectionReset, herald.Failed, "EOF"},
		{"503", open, status(503), "http-503", herald.Failed, ""},
		{"410", open, status(410), "http-410", herald.Gone, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			timeout := 10 * time.Second
			if c.want == ReasonTimeout {
				timeout = 200 * time.Millisecond
			}
			sub := &herald.Subscription{ID: "sub_1", Config: Config{URL: c.url, Secret: NewSecret()}.Encode(), Timeout: timeout}
			ev := &herald.Event{ID: "evt_1", Topic: "orders", Seq: 1, Payload: []byte("{}")}
			sink, err := c.d.Open(t.Context(), sub)
			if err != nil {
				t.Fatal(err)
			}
			res := sink.Deliver(t.Context(), ev, 1)
			if res.Outcome != c.wantDead || res.Err != c.want {
				t.Fatalf("outcome %v, reason %q (detail %q); want %v, %q", res.Outcome, res.Err, res.Detail, c.wantDead, c.want)
			}
			if !strings.Contains(res.Detail, c.detail) {
				t.Errorf("detail %q does not hold %q", res.Detail, c.detail)
			}
		})
	}

	t.Run("challenge not echoed", func(t *testing.T) {
		sub := &herald.Subscription{ID: "sub_1", Config: Config{URL: status(200), Secret: NewSecret()}.Encode(), Challenge: "tok", Timeout: time.Second}
		res := open.Verify(t.Context(), sub)
		if res.Outcome != herald.Failed || res.Err != ReasonChallengeMismatch || !strings.Contains(res.Detail, "200") {
			t.Fatalf("outcome %v, reason %q, detail %q", res.Outcome, res.Err, res.Detail)
		}
	})
}

// TestClassifyErr covers causes a test cannot produce on demand, in the
// shape the transport wraps them.
func TestClassifyErr(t *testing.T) {
	t.Parallel()
	dial := func(err error) error {
		return fmt.Errorf("post: %w", &net.OpError{Op: "dial", Net: "tcp", Err: err})
	}
	cases := []struct {
		err  error
		want string
	}{
		{dial(&net.DNSError{Err: "no such host", Name: "hooks.internal", Server: "10.255.255.53:53", IsNotFound: true}), ReasonDNS},
		{dial(&net.DNSError{Err: "i/o timeout", Name: "hooks.internal", Server: "10.255.255.53:53", IsTimeout: true}), ReasonDNS},
		{fmt.Errorf("dial 10.0.0.1:443: %w", channel.ErrDestinationRefused), ReasonDestinationRefused},
		{fmt.Errorf("no response within 5s: %w", context.DeadlineExceeded), ReasonTimeout},
		{fmt.Errorf("post: %w", context.Canceled), ReasonCanceled},
		{fmt.Errorf("post: something else"), ReasonNetwork},
	}
	for _, c := range cases {
		if got := classifyErr(c.err); got != c.want {
			t.Errorf("classifyErr(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
