package email_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/email"
	"github.com/heraldhq/herald/channel/email/smtptest"
)

// BenchmarkDeliver is the email channel's throughput into an in-process
// SMTP server (emersion/go-smtp, no TLS, which parses and keeps every
// message in the same process): templates rendered, a multipart message
// built and sent over reused sessions, as a subscription's sink does with
// max_in_flight goroutines. It reports emails/s.
func BenchmarkDeliver(b *testing.B) {
	for _, conns := range []int{8, 16} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			srv := smtptest.Start(b, smtptest.Options{TLS: smtptest.None})
			sender, err := email.NewSender(email.ServerConfig{Host: srv.Host, Port: srv.Port, TLS: email.TLSNone, MaxConns: conns, Timeout: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(sender.Close)
			ch, err := email.NewChannel(sender, email.ChannelConfig{From: "Herald <herald@example.org>", PublicURL: func() string { return publicURL }})
			if err != nil {
				b.Fatal(err)
			}
			canon, err := ch.Validate(context.Background(), channel.ValidateParams{Config: json.RawMessage(`{"address":"bench@example.com"}`)})
			if err != nil {
				b.Fatal(err)
			}
			sub := &herald.Subscription{ID: "sub_bench", Topic: "orders.>", Channel: "email", Config: canon, State: herald.StateActive}
			sink, err := ch.Open(context.Background(), sub)
			if err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"order":"A-17","amount":42.5,"customer":{"name":"Ann","tier":"gold"}}`)
			b.SetParallelism(conns) // goroutines = conns * GOMAXPROCS, as max_in_flight would
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					now := time.Now()
					ev := &herald.Event{ID: herald.NewID(now), Topic: "orders.paid", Type: "order.paid", Time: now, ContentType: "application/json", Payload: payload}
					if res := sink.Deliver(context.Background(), ev, 1); res.Outcome != herald.Delivered {
						b.Errorf("Deliver = %+v", res)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "emails/s")
		})
	}
}
