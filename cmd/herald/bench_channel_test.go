package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldhq/herald/bench"
	"github.com/heraldhq/herald/channel/email/smtptest"
)

// TestBenchChannel runs "herald bench --channel" through the CLI against
// a real server: kfake for kafka, the test Redis for redis. Every event
// must come back from the broker, both from Herald and from the bare
// producer.
func TestBenchChannel(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	for _, ch := range []string{"kafka", "redis"} {
		t.Run(ch, func(t *testing.T) {
			// The server runs in this process: its CPU time is the test's.
			args := []string{"bench", "--channel", ch, "--events", "600", "--batch", "50", "--max-batch-events", "40", "--pid", strconv.Itoa(os.Getpid()), "--quiet", "--json"}
			if ch == "redis" {
				addr := os.Getenv("HERALD_TEST_REDIS")
				if addr == "" {
					t.Skip("HERALD_TEST_REDIS is not set")
				}
				args = append(args, "--broker", addr)
			}
			var out, errOut bytes.Buffer
			if code := run(t.Context(), args, strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] }); code != exitOK {
				t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
			}
			var rep bench.ChannelReport
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			for _, r := range []bench.ChannelResult{rep.Bare, rep.Herald} {
				if r.Events != 600 || r.Delivered != 600 || r.Lost != 0 || r.Rate <= 0 || r.Err != "" {
					t.Errorf("%s: %+v; want 600 events, all delivered", r.Target, r)
				}
			}
			if rep.Ratio <= 0 || rep.Scenario.MaxBatchEvents != 40 {
				t.Errorf("report %+v", rep)
			}
			if h := rep.Herald; h.ServerCPU <= 0 || h.ServerCPUPerEvent != h.ServerCPU/float64(h.Delivered)*1e6 {
				t.Errorf("server CPU %v s, %v µs/event; want both, per event over the %d delivered", h.ServerCPU, h.ServerCPUPerEvent, h.Delivered)
			}
		})
	}
	if code := run(t.Context(), []string{"bench", "--channel", "sqs"}, strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}, func(k string) string { return env[k] }); code == exitOK {
		t.Error("bench --channel sqs succeeded")
	}
}

// TestBenchChannelBrokers runs "herald bench --channel" against the test
// NATS server's JetStream, RabbitMQ and Mosquitto: every event comes back,
// from Herald and from the bare producer, each once. MQTT sends 600:
// Mosquitto queues at most 1,000 messages for a subscriber and drops the
// rest, and the reader of a loaded test machine may fall that far behind.
func TestBenchChannelBrokers(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	for _, c := range []struct {
		channel, env string
		events       int64
	}{
		{"nats", "HERALD_TEST_NATS", 1200},
		{"amqp", "HERALD_TEST_AMQP", 1200},
		{"mqtt", "HERALD_TEST_MQTT", 600},
	} {
		t.Run(c.channel, func(t *testing.T) {
			t.Parallel()
			u := os.Getenv(c.env)
			if u == "" {
				t.Skip(c.env + " is not set")
			}
			var out, errOut bytes.Buffer
			args := []string{"bench", "--channel", c.channel, "--broker", u, "--events", strconv.FormatInt(c.events, 10), "--batch", "100", "--max-batch-events", "150", "--linger-ms", "2", "--quiet", "--json"}
			if code := run(t.Context(), args, strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] }); code != exitOK {
				t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
			}
			var rep bench.ChannelReport
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			for _, r := range []bench.ChannelResult{rep.Bare, rep.Herald} {
				if r.Events != c.events || r.Delivered != c.events || r.Lost != 0 || r.Duplicates != 0 || r.Rate <= 0 || r.Err != "" {
					t.Errorf("%s: %+v; want %d events, each delivered once", r.Target, r, c.events)
				}
			}
			if rep.Channel != c.channel || rep.Ratio <= 0 || rep.Scenario.MaxBatchEvents != 150 {
				t.Errorf("report %+v", rep)
			}
		})
	}
}

// TestBenchChannelEmail runs "herald bench --channel email" against a
// Mailpit started from the test (HERALD_TEST_MAILPIT) and a server that
// sends through it: every message comes back through Mailpit's API, from
// Herald and from the bare go-mail sender, each once.
func TestBenchChannelEmail(t *testing.T) {
	t.Parallel()
	mp := smtptest.StartMailpit(t, os.Getenv)
	m := peopleServerHook(t, t.TempDir(), func(*Main) {}, func(c *Config) {
		c.EmailSMTPHost, c.EmailSMTPPort, c.EmailSMTPTLS, c.EmailMaxConns = mp.Host, mp.Port, "none", 4
		c.EmailFrom = "Herald <herald@example.org>"
	})
	env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	const events = 300
	args := []string{"bench", "--channel", "email", "--broker", mp.SMTP(), "--mailpit", mp.API,
		"--events", strconv.Itoa(events), "--batch", "50", "--max-in-flight", "4", "--quiet", "--json"}
	var out, errOut bytes.Buffer
	if code := run(t.Context(), args, strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] }); code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
	}
	var rep bench.ChannelReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, r := range []bench.ChannelResult{rep.Bare, rep.Herald} {
		if r.Events != events || r.Delivered != events || r.Lost != 0 || r.Duplicates != 0 || r.Rate <= 0 || r.Err != "" {
			t.Errorf("%s: %+v; want %d messages, each delivered once", r.Target, r, events)
		}
	}
	if rep.Channel != "email" || rep.Ratio <= 0 || !strings.Contains(rep.Broker, mp.API) {
		t.Errorf("report %+v", rep)
	}
}
