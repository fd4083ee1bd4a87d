package main

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// TestAMQPSourceEndToEnd consumes a RabbitMQ queue through Herald: every
// message becomes an event, a message published twice with one message-id
// is one event, and the queue ends empty (acknowledged after the commit).
func TestAMQPSourceEndToEnd(t *testing.T) {
	t.Parallel()
	url := os.Getenv("HERALD_TEST_AMQP")
	if url == "" {
		t.Skip("HERALD_TEST_AMQP is not set; set it to an AMQP URL such as amqp://guest:guest@127.0.0.1:5672/ to run this test")
	}
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Skipf("HERALD_TEST_AMQP: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := fmt.Sprintf("herald-src-%d", time.Now().UnixNano())
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)
	ctx := t.Context()
	for n := range 150 {
		if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp091.Publishing{
			MessageId: fmt.Sprintf("m%d", n), Type: "order.placed", ContentType: "application/json",
			Headers: amqp091.Table{"customer": fmt.Sprintf("c%d", n%3)}, Body: fmt.Appendf(nil, `{"n":%d}`, n),
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The same message again (a producer retry): a duplicate.
	_ = ch.PublishWithContext(ctx, "", queue, false, false, amqp091.Publishing{MessageId: "m7", Body: []byte(`{"n":7}`)})

	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "amqp", "topic": "rabbit.orders",
		"mapping": map[string]any{"key": "{header.customer}"},
		"config":  map[string]any{"url": url, "queue": queue, "prefetch": 50}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	if cfg := src["config"].(map[string]any); cfg["url"] == url {
		t.Fatalf("the URL's password is shown: %v", cfg["url"])
	}
	c := adminClient(m)
	waitUntil(t, "the queue drained", 15*time.Second, func() bool {
		q, err := ch.QueueDeclarePassive(queue, false, true, false, false, nil)
		return err == nil && q.Messages == 0 && len(allEvents(t, c, "rabbit.orders")) >= 150
	})
	evs := allEvents(t, c, "rabbit.orders")
	if len(evs) != 150 {
		t.Fatalf("%d events; want 150 (the repeated message-id is a duplicate)", len(evs))
	}
	checkKeyOrder(t, evs)
	if evs[0].Type != "order.placed" || evs[0].Key != "c0" {
		t.Fatalf("event: %+v", evs[0])
	}
}
