package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// BenchmarkDeliver measures one signed delivery through the channel's sink and
// the Sender to a loopback receiver that answers 204: the per-delivery
// work of Herald's webhook path (headers, signature, HTTP client) plus the
// receiver's, with a kept-alive connection. Run in parallel like the
// dispatcher's workers.
func BenchmarkDeliver(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	s := NewSender(SenderConfig{AllowPrivate: true})
	defer s.Close()
	sub := &herald.Subscription{ID: "sub_bench", Channel: herald.ChannelWebhook, State: herald.StateActive,
		Config: Config{URL: srv.URL, Secret: NewSecret(), Headers: map[string]string{"X-Tenant": "acme"}}.Encode()}
	d, err := NewChannel(s, ChannelConfig{AllowPrivate: true}).Open(context.Background(), sub)
	if err != nil {
		b.Fatal(err)
	}
	ev := &herald.Event{ID: "evt_bench", Topic: "orders.eu", Seq: 42, Type: "order.created", Key: "order-7",
		ContentType: "application/json", Payload: []byte(`{"total":` + strings.Repeat("1", 180) + `}`),
		Time: time.Now()}
	// The engine hands a SelfTimed sink a context without a deadline of
	// its own (issue 20); "engine-deadline" is the context it made for
	// every delivery before, kept to show what that cost.
	for _, c := range []struct {
		name  string
		guard bool
	}{{"self-timed", false}, {"engine-deadline", true}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(16) // requests in flight, as a busy dispatcher has
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ctx := context.WithoutCancel(context.Background())
					cancel := context.CancelFunc(func() {})
					if c.guard {
						ctx, cancel = context.WithTimeout(ctx, sub.Timeout+5*time.Second)
					}
					res := d.Deliver(ctx, ev, 1)
					cancel()
					if res.Outcome != herald.Delivered {
						b.Errorf("outcome %v: %s", res.Outcome, res.Err)
						return
					}
				}
			})
		})
	}
}
