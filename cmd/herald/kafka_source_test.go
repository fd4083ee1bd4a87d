package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaSourceEndToEnd consumes a kfake cluster through the server:
// every record becomes one event with its key, headers and payload byte for
// byte, in partition order per key; offsets are committed after Herald's
// commit, so pausing and resuming re-reads nothing (no duplicates), and the
// records produced while paused arrive after resume.
func TestKafkaSourceEndToEnd(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	addr := kc.ListenAddrs()[0]
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produce := func(from, to int) {
		t.Helper()
		var recs []*kgo.Record
		for n := from; n < to; n++ {
			// A protobuf-like payload: binary, not UTF-8.
			payload := append([]byte{0x08, 0x96, 0x01, 0xff, 0x00}, fmt.Appendf(nil, `{"n":%d}`, n)...)
			recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "cust-%d", n%5), Value: payload,
				Headers: []kgo.RecordHeader{{Key: "ce_type", Value: []byte("order.placed")}, {Key: "content-type", Value: []byte("application/x-protobuf")}}})
		}
		if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 300)

	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "kafka", "topic": "kafka.{topic}", "shards": 2,
		"mapping": map[string]any{"type": "{header.ce_type}"},
		"config":  map[string]any{"brokers": []string{addr}, "topics": []string{"orders"}}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	id := src["id"].(string)
	c := adminClient(m)
	waitUntil(t, "the records as events", 20*time.Second, func() bool { return len(allEvents(t, c, "kafka.orders")) >= 300 })
	evs := allEvents(t, c, "kafka.orders")
	if len(evs) != 300 {
		t.Fatalf("%d events; want 300", len(evs))
	}
	last := map[string]int{}
	for _, e := range evs {
		i := bytes.IndexByte(e.Payload, '{')
		if i != 5 || !bytes.Equal(e.Payload[:5], []byte{0x08, 0x96, 0x01, 0xff, 0x00}) {
			t.Fatalf("payload not byte for byte: %x", e.Payload)
		}
		var p struct{ N int }
		_ = json.Unmarshal(e.Payload[i:], &p)
		if prev, ok := last[e.Key]; ok && p.N <= prev {
			t.Fatalf("key %s: n=%d after n=%d", e.Key, p.N, prev)
		}
		last[e.Key] = p.N
		if e.Type != "order.placed" || e.ContentType != "application/x-protobuf" || e.Headers["ce_type"] != "order.placed" || !strings.HasPrefix(e.Key, "cust-") {
			t.Fatalf("event: %+v", e)
		}
	}

	if status, _, _ := call(t, m, testAdminKey, "POST", "/v1/sources/"+id+"/pause", nil); status != 200 {
		t.Fatal("pause")
	}
	waitUntil(t, "the shards stopped", 10*time.Second, func() bool {
		return strings.Contains(scrape(t, m), "herald_source_shards_running 0")
	})
	produce(300, 350)
	if status, _, _ := call(t, m, testAdminKey, "POST", "/v1/sources/"+id+"/resume", nil); status != 200 {
		t.Fatal("resume")
	}
	waitUntil(t, "the records produced while paused", 20*time.Second, func() bool { return len(allEvents(t, c, "kafka.orders")) >= 350 })
	metrics := scrape(t, m)
	if strings.Contains(metrics, `herald_source_duplicates_total{kind="kafka"`) && !strings.Contains(metrics, `herald_source_duplicates_total{kind="kafka",source="`+id+`"} 0`) {
		t.Fatalf("records read again after resume: offsets were not committed\n%s", grepLines(metrics, "herald_source_"))
	}
	if n := len(allEvents(t, c, "kafka.orders")); n != 350 {
		t.Fatalf("%d events; want 350", n)
	}
}
