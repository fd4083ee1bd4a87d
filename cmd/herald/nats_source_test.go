package main

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestNATSSourceEndToEnd reads a JetStream stream on the real server
// through Herald: every message becomes one event with its subject as the
// topic and its headers, acknowledged after Herald's commit (the consumer
// ends with nothing pending or unacknowledged).
func TestNATSSourceEndToEnd(t *testing.T) {
	t.Parallel()
	url := os.Getenv("HERALD_TEST_NATS")
	if url == "" {
		t.Skip("HERALD_TEST_NATS is not set; set it to a NATS URL with JetStream, such as nats://127.0.0.1:4222, to run this test")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Skipf("HERALD_TEST_NATS: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	name := fmt.Sprintf("HERALDSRC%d", time.Now().UnixNano())
	subj := fmt.Sprintf("hs%d", time.Now().UnixNano())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj + ".>"}}); err != nil {
		t.Skipf("HERALD_TEST_NATS: JetStream: %v", err)
	}
	defer js.DeleteStream(ctx, name)
	for n := range 200 {
		msg := nats.NewMsg(subj + ".orders")
		msg.Data = fmt.Appendf(nil, `{"n":%d}`, n)
		msg.Header.Set("Order-Key", fmt.Sprintf("k%d", n%4))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "nats", "topic": "{topic}",
		"mapping": map[string]any{"key": "{header.order-key}"},
		"config":  map[string]any{"url": url, "stream": name}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	c := adminClient(m)
	topic := subj + ".orders"
	waitUntil(t, "the messages as events", 15*time.Second, func() bool { return len(allEvents(t, c, topic)) >= 200 })
	evs := allEvents(t, c, topic)
	if len(evs) != 200 {
		t.Fatalf("%d events; want 200", len(evs))
	}
	checkKeyOrder(t, evs)
	if evs[0].Key != "k0" || evs[0].Headers["Order-Key"] != "k0" {
		t.Fatalf("event: %+v", evs[0])
	}
	cons, err := js.Consumer(ctx, name, "herald-"+src["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every message acknowledged", 10*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
}
