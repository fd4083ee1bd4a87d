package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// The examples of docs/sources.md run from the page itself against the test
// services; the test changes only the service addresses and, as the
// services are shared, the names it reads from.

const sourcesDoc = "../../docs/sources.md"

// sourceDocExample returns the named example of docs/sources.md, failing
// if it no longer holds every one of the texts the test replaces.
func sourceDocExample(t *testing.T, name string, holds ...string) string {
	t.Helper()
	ex, ok := docExamples(t, sourcesDoc)[name]
	if !ok {
		t.Fatalf("docs/sources.md has no example %s", name)
	}
	for _, h := range holds {
		if !strings.Contains(ex, h) {
			t.Fatalf("the %s example no longer holds %s", name, h)
		}
	}
	return ex
}

// sourceDocServer starts a server with the example's target topics.
func sourceDocServer(t *testing.T, topics ...string) (*Main, *client.Client) {
	t.Helper()
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	for _, tp := range topics {
		if _, _, err := c.PutTopic(t.Context(), tp, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	return m, c
}

// createdSource checks that an example's answer is a created source and
// returns its id.
func createdSource(t *testing.T, out string) string {
	t.Helper()
	var src struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &src); err != nil || src.ID == "" || src.State != "active" {
		t.Fatalf("the example answered %s", out)
	}
	return src.ID
}

func TestDocsSourcesMQTTExample(t *testing.T) {
	t.Parallel()
	pub, url := mqttTestClient(t)
	host := strings.TrimPrefix(url, "tcp://")
	h, p, _ := net.SplitHostPort(host)
	level := "heralddoc" + strings.ToLower(herald.NewKeyID())
	m, c := sourceDocServer(t, "iot."+level+".dev-7.temperature")
	fix := strings.NewReplacer("tcp://localhost:1883", url, `"sensors/+/temperature"`, `"`+level+`/+/temperature"`)
	createdSource(t, runDocScript(t, m, fix.Replace(sourceDocExample(t, "source-mqtt", "tcp://localhost:1883", `"sensors/+/temperature"`))))
	send := sourceDocExample(t, "source-mqtt-publish", "-h localhost -p 1883", "sensors/dev-7")
	send = strings.NewReplacer("-h localhost -p 1883", "-h "+h+" -p "+p, "sensors/dev-7", level+"/dev-7").Replace(send)
	_, err := exec.LookPath("mosquitto_pub")
	// MQTT keeps messages only for subscriptions that exist: send again
	// until the source's shard has subscribed; the id makes it one event.
	eventually(t, "the example's message as an event", func() bool {
		if err == nil {
			runDocScript(t, m, send)
		} else {
			mqttPublish(t, pub, level+"/dev-7/temperature", []byte(`{"id": "r-1001", "device": "dev-7", "celsius": 21.5}`))
		}
		return len(allEvents(t, c, "iot."+level+".dev-7.temperature")) > 0
	})
	evs := allEvents(t, c, "iot."+level+".dev-7.temperature")
	if len(evs) != 1 || evs[0].Key != "dev-7" || !sameJSON(evs[0].Payload, `{"id": "r-1001", "device": "dev-7", "celsius": 21.5}`) {
		t.Fatalf("events: %+v", evs)
	}
}

func TestDocsSourcesRedisExample(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		t.Skip("HERALD_TEST_REDIS is not set")
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rdb.Close()
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		t.Skipf("HERALD_TEST_REDIS=%s: %v", addr, err)
	}
	stream := "heralddoc-orders-" + strings.ToLower(herald.NewKeyID())
	defer rdb.Del(t.Context(), stream)
	h, p, _ := net.SplitHostPort(addr)
	m, c := sourceDocServer(t, "shop.orders")
	fix := strings.NewReplacer("localhost:6379", addr, `"streams": ["orders"]`, fmt.Sprintf(`"streams": [%q]`, stream))
	createdSource(t, runDocScript(t, m, fix.Replace(sourceDocExample(t, "source-redis", "localhost:6379", `"streams": ["orders"]`))))
	send := sourceDocExample(t, "source-redis-publish", "-h localhost -p 6379", "XADD orders")
	if _, err := exec.LookPath("redis-cli"); err == nil {
		runDocScript(t, m, strings.NewReplacer("-h localhost -p 6379", "-h "+h+" -p "+p, "XADD orders", "XADD "+stream).Replace(send))
	} else if err := rdb.XAdd(t.Context(), &goredis.XAddArgs{Stream: stream, Values: []any{"payload", `{"order": 1001}`,
		"key", "c-42", "type", "order.placed", "content_type", "application/json"}}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the example's entry as an event", func() bool { return len(allEvents(t, c, "shop.orders")) > 0 })
	e := allEvents(t, c, "shop.orders")[0]
	if e.Key != "c-42" || e.Type != "order.placed" || !sameJSON(e.Payload, `{"order": 1001}`) || e.ContentType != "application/json" {
		t.Fatalf("event: %+v", e)
	}
}

// sameJSON tells whether a payload is the JSON text want (the API shows a
// JSON payload compacted).
func sameJSON(got []byte, want string) bool {
	var a, b any
	return json.Unmarshal(got, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && fmt.Sprint(a) == fmt.Sprint(b)
}
