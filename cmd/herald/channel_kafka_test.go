package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/kafka"
	"github.com/heraldhq/herald/client"
)

// kafkaTopic reads a Kafka topic from its start in the background for the
// rest of the test.
type kafkaTopic struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

func consumeKafka(t *testing.T, addr, topic string) *kafkaTopic {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(50*time.Millisecond), kgo.MetadataMaxAge(200*time.Millisecond), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	kt := &kafkaTopic{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			kt.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) { kt.recs = append(kt.recs, r) })
			kt.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	return kt
}

// byKey returns the payloads of the records per key, the first copy of
// each event only (a redelivery may repeat one).
func (kt *kafkaTopic) byKey() map[string][]string {
	kt.mu.Lock()
	defer kt.mu.Unlock()
	seen, out := map[string]bool{}, map[string][]string{}
	for _, r := range kt.recs {
		var id string
		for _, h := range r.Headers {
			if h.Key == kafka.HeaderEventID {
				id = string(h.Value)
			}
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		out[string(r.Key)] = append(out[string(r.Key)], string(r.Value))
	}
	return out
}

// TestKafkaChannelEndToEnd drives a kafka subscription through the real
// server: created over HTTP with the documented shape, the password never
// shown, events published with keys reach the Kafka topic named by the
// template in per-key order; while the broker is down the attempts fail
// with the reason and nothing is lost once it is back.
func TestKafkaChannelEndToEnd(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	dir := t.TempDir()
	startKafka := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	kc := startKafka()
	broker := kc.ListenAddrs()[0]

	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"topic":"deposits","channel":"kafka","ordered":true,"retry":{"initial":"100ms","max":"500ms"},"timeout":"2s",
		"config":{"brokers":[%q],"topic":"herald.{topic}","sasl_mechanism":"","max_batch_events":50,"linger_ms":5}}`, broker)
	req, _ := http.NewRequestWithContext(ctx, "POST", m.URL()+"/v1/subscriptions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, raw)
	}
	var sub struct {
		ID, State, Channel string
		Config             json.RawMessage
	}
	if err := json.Unmarshal(raw, &sub); err != nil {
		t.Fatal(err)
	}
	if sub.State != "active" || sub.Channel != "kafka" || !bytes.Contains(sub.Config, []byte(`"topic":"herald.{topic}"`)) {
		t.Fatalf("created subscription: %s", raw)
	}

	// A bad config is a problem naming the member.
	bad := strings.Replace(body, `"max_batch_events":50`, `"max_batch_events":-2`, 1)
	req, _ = http.NewRequestWithContext(ctx, "POST", m.URL()+"/v1/subscriptions", strings.NewReader(bad))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(raw, []byte(`config.max_batch_events`)) {
		t.Fatalf("bad config: %d %s; want 400 naming config.max_batch_events", resp.StatusCode, raw)
	}

	kt := consumeKafka(t, broker, "herald.deposits")
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := c.Publish(ctx, "deposits", fmt.Appendf(nil, "%d", i), client.PublishOptions{ContentType: "text/plain", Key: fmt.Sprintf("wallet-%d", i%4)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	inOrder := func(n int) bool {
		got := kt.byKey()
		total := 0
		for key, vals := range got {
			prev := -1
			for _, v := range vals {
				var i int
				fmt.Sscan(v, &i)
				if i <= prev {
					t.Fatalf("key %s: %v: out of order", key, vals)
				}
				prev = i
			}
			total += len(vals)
		}
		return total == n
	}
	publish(0, 40)
	eventually(t, "40 events in Kafka", func() bool { return inOrder(40) })

	// The broker goes down: attempts fail with the reason, and are retried.
	kc.Close()
	publish(40, 80)
	eventually(t, "a failed attempt", func() bool {
		page, err := c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page.Attempts {
			if a.Error == channel.ReasonConnectionRefused {
				return true
			}
		}
		return false
	})
	startKafka()
	eventually(t, "all 80 events in Kafka after the broker came back", func() bool { return inOrder(80) })

	// The delivery metrics tell the channels apart: an operator sees the
	// kafka rate and its failures beside the webhooks'.
	metrics := scrape(t, m)
	for _, want := range []string{`herald_deliveries_total{channel="kafka",outcome="delivered"}`, `herald_deliveries_total{channel="kafka",outcome="failed"}`,
		`herald_delivery_duration_seconds_count{channel="kafka"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s:\n%s", want, grepLines(metrics, "herald_deliver"))
		}
	}
}

// TestKafkaSecretsAndMetrics: the SASL password is write-only through the
// API (never in an answer, kept by an update that leaves it out, refused
// when the user changes without it), and the channel's metrics are on
// /metrics.
func TestKafkaSecretsAndMetrics(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	broker := kc.ListenAddrs()[0]
	m, logs := testServer(t, t.TempDir(), nil)
	const password = "pw-7c1e55d0-never-shown"
	id, sub := brokerSubscribe(t, m, "payments", "kafka",
		fmt.Sprintf(`{"brokers":[%q],"sasl_mechanism":"SCRAM-SHA-256","username":"herald","password":%q}`, broker, password))
	raw, _ := json.Marshal(sub)
	if strings.Contains(string(raw), password) || !strings.Contains(string(raw), `"username":"herald"`) {
		t.Fatalf("create answered %s", raw)
	}
	status, body := brokerCall(t, m, "PATCH", "/v1/subscriptions/"+id, `{"config":{"linger_ms":10}}`)
	if status != http.StatusOK || strings.Contains(string(body), password) || !strings.Contains(string(body), `"linger_ms":10`) {
		t.Fatalf("PATCH config: %d %s", status, body)
	}
	status, body = brokerCall(t, m, "PATCH", "/v1/subscriptions/"+id, `{"config":{"username":"other"}}`)
	if status != http.StatusBadRequest || !strings.Contains(string(body), "config.password") {
		t.Fatalf("PATCH a new user without its password: %d %s; want 400 naming config.password", status, body)
	}
	for _, path := range []string{"/v1/subscriptions/" + id, "/v1/subscriptions"} {
		if _, body := brokerCall(t, m, "GET", path, ""); strings.Contains(string(body), password) {
			t.Fatalf("GET %s shows the password", path)
		}
	}
	eventually(t, "the kafka metrics", func() bool {
		_, body := brokerCall(t, m, "GET", "/metrics", "")
		return strings.Contains(string(body), "herald_kafka_producers 1")
	})
	if strings.Contains(logs.String(), password) {
		t.Error("the server log holds the password")
	}
}
