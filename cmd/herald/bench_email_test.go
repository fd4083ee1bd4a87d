package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/channel/email/smtptest"
)

// BenchmarkEmailThroughServer is the email channel's throughput through
// the real server into an in-process SMTP server (no TLS; it parses and
// keeps every message in this process too): b.N events published to a
// paused subscription (max_in_flight 16, email.max-conns 16, the default
// multipart templates), then timed from the resume until the server holds
// every message. It reports emails/s.
func BenchmarkEmailThroughServer(b *testing.B) {
	mail := smtptest.Start(b, smtptest.Options{TLS: smtptest.None})
	m := benchPeopleServer(b, mail)
	call := func(want int, method, path, body string) []byte {
		status, out := benchCall(b, m, method, path, body)
		if status != want {
			b.Fatalf("%s %s = %d %s", method, path, status, out)
		}
		return out
	}
	call(201, "PUT", "/v1/topics/bench", `{}`)
	var sub struct{ ID string }
	_ = json.Unmarshal(call(201, "POST", "/v1/subscriptions", `{"topic":"bench","channel":"email","verification":"none","max_in_flight":16,"config":{"address":"bench@example.com"}}`), &sub)
	call(200, "POST", "/v1/subscriptions/"+sub.ID+"/pause", "")
	for sent := 0; sent < b.N; {
		n := min(1000, b.N-sent)
		events := make([]string, n)
		for i := range events {
			events[i] = fmt.Sprintf(`{"data":{"order":"A-%d","amount":42.5}}`, sent+i)
		}
		call(201, "POST", "/v1/topics/bench/events:batch", `{"events":[`+strings.Join(events, ",")+`]}`)
		sent += n
	}
	b.ResetTimer()
	start := time.Now()
	call(200, "POST", "/v1/subscriptions/"+sub.ID+"/resume", "")
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(mail.Messages()) < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages after 10 minutes", len(mail.Messages()), b.N)
		}
		<-tick.C
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "emails/s")
}

// benchPeopleServer starts a Herald sending mail to mail without TLS.
func benchPeopleServer(b *testing.B, mail *smtptest.Server) *Main {
	return peopleServerHook(b, b.TempDir(), func(*Main) {}, func(c *Config) {
		c.EmailSMTPHost, c.EmailSMTPPort, c.EmailSMTPTLS, c.EmailMaxConns = mail.Host, mail.Port, "none", 16
		c.EmailFrom = "Herald <herald@example.org>"
		c.LogLevel = 0 // info: debug lines per event would be what is measured
	})
}

func benchCall(b *testing.B, m *Main, method, path, body string) (int, []byte) {
	b.Helper()
	req, err := http.NewRequestWithContext(b.Context(), method, m.URL()+path, strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}
