package main

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// TestRedisSourceEndToEnd reads a Redis stream through a consumer group on
// the real server. Before Herald starts, the group already holds entries
// that were read and never acknowledged: some by the consumer of shard 0
// (as when Herald died between reading and its commit) and some by a
// consumer of a shard that no longer exists. Every entry ends as exactly
// one event, mapped from its fields, and the group ends with nothing
// pending and no lag.
func TestRedisSourceEndToEnd(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		t.Skip("HERALD_TEST_REDIS is not set; set it to a Redis address such as 127.0.0.1:6379 to run this test")
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	ctx := t.Context()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Skipf("HERALD_TEST_REDIS: %v", err)
	}
	stream := fmt.Sprintf("herald-src-%d", time.Now().UnixNano())
	defer rdb.Del(ctx, stream)
	for n := range 200 {
		if err := rdb.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{
			"payload", fmt.Sprintf(`{"n":%d}`, n), "key", fmt.Sprintf("k%d", n%4), "type", "order.placed",
			"content_type", "application/json", "tenant", "acme",
		}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// An entry without a payload field: the event is the entry as JSON.
	if err := rdb.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: []any{"n", "200", "note", "bare"}}).Err(); err != nil {
		t.Fatal(err)
	}
	group := "g-" + stream
	if err := rdb.XGroupCreate(ctx, stream, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	for consumer, count := range map[string]int64{"herald-0": 30, "herald-7": 20} {
		if err := rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: consumer,
			Streams: []string{stream, ">"}, Count: count, Block: -1}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "redis", "topic": "redis.orders", "shards": 2,
		"config": map[string]any{"address": addr, "streams": []string{stream}, "group": group, "batch": 64,
			"claim_idle": "1s", "username": "default", "password": "unused-by-the-test-server"}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	if cfg := src["config"].(map[string]any); cfg["password"] != nil {
		t.Fatalf("the password is shown: %v", cfg)
	}
	id := src["id"].(string)
	// The test server has no password: drop the login (a PATCH that
	// changes the user must give the password again, or none).
	status, _, _ = call(t, m, testAdminKey, "PATCH", "/v1/sources/"+id,
		[]byte(fmt.Sprintf(`{"config": {"address": %q, "streams": [%q], "group": %q, "batch": 64, "claim_idle": "1s"}}`, addr, stream, group)))
	if status != 200 {
		t.Fatalf("patch: %d", status)
	}
	c := adminClient(m)
	waitUntil(t, "every entry as an event, nothing pending", 30*time.Second, func() bool {
		p, err := rdb.XPending(ctx, stream, group).Result()
		return err == nil && p.Count == 0 && len(allEvents(t, c, "redis.orders")) >= 201
	})
	evs := allEvents(t, c, "redis.orders")
	if len(evs) != 201 {
		t.Fatalf("%d events; want 201", len(evs))
	}
	seen := map[string]int{}
	for _, e := range evs {
		seen[string(e.Payload)]++
	}
	for n := range 200 {
		if got := seen[fmt.Sprintf(`{"n":%d}`, n)]; got != 1 {
			t.Errorf("entry %d is %d events; want 1", n, got)
		}
	}
	first := evs[0]
	for _, e := range evs {
		if e.Key != "" {
			first = e
			break
		}
	}
	if first.Type != "order.placed" || first.ContentType != "application/json" || first.Headers["tenant"] != "acme" {
		t.Fatalf("mapping: %+v", first)
	}
	if seen[`{"n":"200","note":"bare"}`] != 1 {
		t.Fatalf("the entry without a payload field: %v", seen)
	}
	waitUntil(t, "lag 0 and running in the status", 15*time.Second, func() bool {
		_, got, _ := call(t, m, testAdminKey, "GET", "/v1/sources/"+id, nil)
		return got["lag"] == float64(0) && got["status"] == "running"
	})
	if status, got, _ := call(t, m, testAdminKey, "POST", "/v1/sources/"+id+"/pause", nil); status != 200 || got["status"] != "paused" {
		t.Fatalf("pause: %d %v", status, got)
	}
}
