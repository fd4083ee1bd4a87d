package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// mqttTestClient connects a publisher to HERALD_TEST_MQTT, or skips.
func mqttTestClient(t *testing.T) (paho.Client, string) {
	t.Helper()
	url := os.Getenv("HERALD_TEST_MQTT")
	if url == "" {
		t.Skip("HERALD_TEST_MQTT is not set; set it to an MQTT broker URL such as tcp://127.0.0.1:1883 to run this test")
	}
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(url).
		SetClientID(fmt.Sprintf("herald-test-pub-%d", time.Now().UnixNano())).SetConnectTimeout(5 * time.Second))
	if tok := pub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Skipf("HERALD_TEST_MQTT: cannot connect to %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { pub.Disconnect(100) })
	return pub, url
}

func mqttPublish(t *testing.T, pub paho.Client, topic string, payload []byte) {
	t.Helper()
	tok := pub.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish to %s: %v", topic, tok.Error())
	}
}

// TestMQTTSourceEndToEnd reads MQTT topics through a shared subscription
// on the real broker: every message becomes one event, a message sent
// twice with one id is one event, and messages sent while Herald is down
// wait in the shards' persistent sessions (acknowledged only after
// Herald's commit) and arrive after a restart: none lost, none doubled.
func TestMQTTSourceEndToEnd(t *testing.T) {
	t.Parallel()
	pub, url := mqttTestClient(t)
	prefix := fmt.Sprintf("herald-src-%d", time.Now().UnixNano())
	dir := t.TempDir()
	m, _ := testServer(t, dir, func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "mqtt", "topic": "mqtt.orders", "shards": 2,
		"mapping": map[string]any{"key": "{payload.key}", "type": "{header.mqtt-topic}"},
		"config": map[string]any{"url": url, "topics": []string{prefix + "/orders/+"}, "id_from": "{payload.id}",
			"user": "herald", "password": "not-checked-by-the-test-broker"}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	if cfg := src["config"].(map[string]any); cfg["password"] != nil || cfg["url"] != url {
		t.Fatalf("config shown: %v", cfg)
	}
	id := src["id"].(string)
	c := adminClient(m)
	// MQTT keeps messages only for subscriptions that exist: send probes
	// until the first shard's subscription took one.
	waitUntil(t, "the share group subscribed", 20*time.Second, func() bool {
		mqttPublish(t, pub, prefix+"/orders/probe", []byte(`{"id":"probe","n":-1}`))
		return len(allEvents(t, c, "mqtt.orders")) >= 1
	})
	send := func(from, to int) {
		for n := from; n < to; n++ {
			mqttPublish(t, pub, fmt.Sprintf("%s/orders/k%d", prefix, n%3),
				fmt.Appendf(nil, `{"id":"m%d","key":"k%d","n":%d}`, n, n%3, n))
		}
	}
	send(0, 100)
	mqttPublish(t, pub, prefix+"/orders/k7", []byte(`{"id":"m7","key":"k1","n":7}`)) // a producer's retry
	waitUntil(t, "the first 100 messages as events", 20*time.Second, func() bool {
		return len(allEvents(t, c, "mqtt.orders")) >= 101
	})
	// Herald down: the broker keeps what arrives for the shards' sessions.
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	send(100, 150)
	m2, _ := testServer(t, dir, func(c *Config) { c.AutoCreateTopics = true })
	c2 := adminClient(m2)
	waitUntil(t, "the messages sent while Herald was down", 30*time.Second, func() bool {
		return len(allEvents(t, c2, "mqtt.orders")) >= 151
	})
	evs := allEvents(t, c2, "mqtt.orders")
	seen := map[string]int{}
	for _, e := range evs[1:] {
		var p struct{ ID string }
		_ = json.Unmarshal(e.Payload, &p)
		seen[p.ID]++
	}
	for n := range 150 {
		if got := seen[fmt.Sprintf("m%d", n)]; got != 1 {
			t.Errorf("message m%d is %d events; want 1", n, got)
		}
	}
	if len(evs) != 151 {
		t.Fatalf("%d events; want 151 (the probe and 150 messages: duplicates absorbed)", len(evs))
	}
	last := evs[len(evs)-1]
	if last.Type == "" || last.Key == "" {
		t.Fatalf("mapping not applied: %+v", last)
	}
	_, got, _ := call(t, m2, testAdminKey, "GET", "/v1/sources/"+id, nil)
	if got["status"] != "running" {
		t.Fatalf("status %v; want running", got["status"])
	}
	// A broker that cannot be reached shows in the source's status, and
	// the shard retries.
	status, _, _ = call(t, m2, testAdminKey, "PATCH", "/v1/sources/"+id,
		[]byte(`{"config": {"url": "tcp://127.0.0.1:1", "topics": ["x/#"], "user": "herald", "password": "p"}}`))
	if status != 200 {
		t.Fatalf("patch: %d", status)
	}
	waitUntil(t, "the failure in the source's status", 20*time.Second, func() bool {
		_, got, _ := call(t, m2, testAdminKey, "GET", "/v1/sources/"+id, nil)
		s, _ := got["status_reason"].(string)
		return got["status"] == "retrying" && strings.Contains(s, "127.0.0.1:1") && got["errors"].(float64) > 0
	})
}
