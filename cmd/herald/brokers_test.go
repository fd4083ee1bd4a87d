package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqpgo "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel/channeltest"
)

// brokerCall sends a JSON request with the admin key and returns the
// status and body.
func brokerCall(t *testing.T, m *Main, method, path, body string) (int, []byte) {
	t.Helper()
	return brokerCallHeader(t, m, method, path, body)
}

// brokerCallHeader is brokerCall with request headers, as name, value
// pairs.
func brokerCallHeader(t *testing.T, m *Main, method, path, body string, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, m.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// brokerSubscribe creates a subscription of the channel and config and
// returns its id and its JSON.
func brokerSubscribe(t *testing.T, m *Main, topic, ch, config string) (string, map[string]any) {
	t.Helper()
	if status, body := brokerCall(t, m, "PUT", "/v1/topics/"+topic, `{}`); status >= 300 {
		t.Fatalf("create topic: %d %s", status, body)
	}
	status, body := brokerCall(t, m, "POST", "/v1/subscriptions",
		`{"topic":"`+topic+`","channel":"`+ch+`","config":`+config+`,"ordered":true,"retry":{"initial":"50ms","max":"200ms"},"timeout":"2s"}`)
	if status != http.StatusCreated {
		t.Fatalf("create %s subscription: %d %s", ch, status, body)
	}
	var sub map[string]any
	if err := json.Unmarshal(body, &sub); err != nil {
		t.Fatal(err)
	}
	if sub["channel"] != ch || sub["state"] != "active" {
		t.Fatalf("created %s", body)
	}
	return sub["id"].(string), sub
}

// brokerPublish publishes n events of the topic (keys k0..k2) over HTTP
// and returns their ids in order.
func brokerPublish(t *testing.T, m *Main, topic string, from, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for i := from; i < from+n; i++ {
		status, body := brokerCallHeader(t, m, "POST", "/v1/topics/"+topic+"/events", fmt.Sprintf(`{"n":%d}`, i), "Herald-Event-Key", fmt.Sprint("k", i%3))
		if status != http.StatusAccepted && status != http.StatusCreated && status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
		var r struct{ ID string }
		_ = json.Unmarshal(body, &r)
		ids = append(ids, r.ID)
	}
	return ids
}

// received keeps what a broker handed a test consumer, by event id.
type received struct {
	// dedup makes a repeated id count once, as a consumer that drops
	// redeliveries by event id does: at-least-once allows repeats.
	dedup bool
	mu    sync.Mutex
	count map[string]int
	order []string // event ids in arrival order
	keys  map[string]string
	body  map[string]string
}

func newReceived() *received {
	return &received{count: map[string]int{}, keys: map[string]string{}, body: map[string]string{}}
}

func (r *received) add(id, key string, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dedup && r.count[id] > 0 {
		return
	}
	r.count[id]++
	r.order = append(r.order, id)
	r.keys[id], r.body[id] = key, string(payload)
}

func (r *received) has(ids []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.count[id] == 0 {
			return false
		}
	}
	return true
}

// checkOnceInKeyOrder requires each id once and the ids of each key in
// publish order.
func (r *received) checkOnceInKeyOrder(t *testing.T, ids []string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.count[id] != 1 {
			t.Errorf("event %s received %d times; want once", id, r.count[id])
		}
	}
	pos := map[string]int{}
	for i, id := range ids {
		pos[id] = i
	}
	last := map[string]int{}
	for _, id := range r.order {
		p, ok := pos[id]
		if !ok {
			continue
		}
		if k := r.keys[id]; p < last[k] {
			t.Errorf("key %s: event %d arrived after event %d", k, p, last[k])
		} else {
			last[k] = p
		}
	}
}

// brokerSettled waits until the subscription has nothing in flight or to
// retry.
func brokerSettled(t *testing.T, m *Main, subID string) {
	t.Helper()
	eventually(t, "the subscription settled", func() bool {
		_, body := brokerCall(t, m, "GET", "/v1/subscriptions/"+subID, "")
		var s struct{ Stats struct{ Lag, Retries int64 } }
		_ = json.Unmarshal(body, &s)
		return s.Stats.Lag == 0 && s.Stats.Retries == 0
	})
}

func natsURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("HERALD_TEST_NATS")
	if u == "" {
		t.Skip("HERALD_TEST_NATS is not set: no NATS server to test against")
	}
	return u
}

// TestNATSChannelEndToEnd drives the nats channel through the server: a
// JetStream subscription made over HTTP, events published over HTTP and
// read back from the stream, with their metadata; then the broker goes
// away (a proxy in front of it is cut), events published meanwhile fail
// and retry, and once it is back every one arrives, once, in key order.
func TestNATSChannelEndToEnd(t *testing.T) {
	u := natsURL(t)
	nc, err := natsgo.Connect(u, natsgo.Timeout(5*time.Second))
	if err != nil {
		t.Skipf("HERALD_TEST_NATS=%s: %v", u, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.ToUpper(strings.ReplaceAll(herald.NewKeyID(), "-", "_"))
	stream, prefix := "HERALDE2E_"+id, "heralde2e."+id
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), stream) }()
	got := newReceived()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		h := msg.Headers()
		if want := prefix + ".orders." + h.Get("Herald-Event-Key"); msg.Subject() != want {
			t.Errorf("subject %q; want %q", msg.Subject(), want)
		}
		got.add(h.Get("Herald-Event-Id"), h.Get("Herald-Event-Key"), msg.Data())
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()

	pu, _ := url.Parse(u)
	proxy := channeltest.NewProxy(t, pu.Host)
	m, _ := testServer(t, t.TempDir(), nil)
	subID, sub := brokerSubscribe(t, m, "orders", "nats",
		`{"url":"nats://herald:not-shown@`+proxy.Addr()+`","subject":"`+prefix+`.{topic}.{key}","jetstream":true,"stream":"`+stream+`"}`)
	cfg, _ := json.Marshal(sub["config"])
	if strings.Contains(string(cfg), "not-shown") || !strings.Contains(string(cfg), `"user":"herald"`) {
		t.Errorf("config shown as %s: want the user and no password", cfg)
	}

	ids := brokerPublish(t, m, "orders", 0, 6)
	eventually(t, "the first events in the stream", func() bool { return got.has(ids) })
	got.mu.Lock()
	if b := got.body[ids[0]]; b != `{"n":0}` {
		t.Errorf("payload %q", b)
	}
	got.mu.Unlock()

	proxy.Down()
	more := brokerPublish(t, m, "orders", 6, 6)
	eventually(t, "a failed attempt while NATS is away", func() bool {
		_, body := brokerCall(t, m, "GET", "/v1/subscriptions/"+subID+"/attempts", "")
		return strings.Contains(string(body), `"not-connected"`) || strings.Contains(string(body), `"connection-refused"`) || strings.Contains(string(body), `"connection-reset"`)
	})
	proxy.Up()
	all := append(ids, more...)
	eventually(t, "every event in the stream after NATS came back", func() bool { return got.has(all) })
	got.checkOnceInKeyOrder(t, all)
}

// TestBrokerChannelsRefuseBadConfig: a broker config that is wrong, or
// names a private address on a server that does not allow them, is a
// problem naming the member at fault, and a secret never comes back.
func TestBrokerChannelsRefuseBadConfig(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AllowPrivateDestinations = false })
	if status, body := brokerCall(t, m, "PUT", "/v1/topics/orders", `{}`); status >= 300 {
		t.Fatalf("create topic: %d %s", status, body)
	}
	for _, tc := range []struct{ channel, config, field string }{
		{"nats", `{"url":"nats://127.0.0.1:4222"}`, "config.url"},
		{"nats", `{"url":"nats://10.1.2.3:4222"}`, "config.url"},
		{"nats", `{"url":"nats://nats.example.com","subject":"orders.*"}`, "config.subject"},
		{"nats", `{"url":"nats://nats.example.com","jetstream":true,"sream":"S"}`, "config.sream"},
		{"amqp", `{"url":"amqp://127.0.0.1:5672/"}`, "config.url"},
		{"amqp", `{"url":"amqp://mq.example.com","routing_key":"{id}"}`, "config.routing_key"},
		{"amqp", `{"url":"http://mq.example.com"}`, "config.url"},
		{"mqtt", `{"url":"tcp://192.168.1.10:1883"}`, "config.url"},
		{"mqtt", `{"url":"tcp://mq.example.com","topic":"a/+"}`, "config.topic"},
		{"mqtt", `{"url":"tcp://mq.example.com","qos":0}`, "config.qos"},
	} {
		status, body := brokerCall(t, m, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"`+tc.channel+`","config":`+tc.config+`}`)
		var p struct{ Type, Field, Detail string }
		_ = json.Unmarshal(body, &p)
		if status != http.StatusBadRequest || p.Field != tc.field || p.Detail == "" || !strings.HasSuffix(p.Type, "/invalid") {
			t.Errorf("%s %s: %d %s; want 400 invalid naming %s", tc.channel, tc.config, status, body, tc.field)
		}
	}
	status, body := brokerCall(t, m, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"nats","config":{"url":"nats://nats.example.com","token":"tok-secret-1"}}`)
	if status != http.StatusCreated || strings.Contains(string(body), "tok-secret-1") {
		t.Errorf("create with a token: %d %s; want 201 without the token", status, body)
	}
	var sub struct{ ID string }
	_ = json.Unmarshal(body, &sub)
	for _, path := range []string{"/v1/subscriptions/" + sub.ID, "/v1/subscriptions"} {
		if _, body := brokerCall(t, m, "GET", path, ""); strings.Contains(string(body), "tok-secret-1") {
			t.Errorf("GET %s shows the token: %s", path, body)
		}
	}
}

// TestAMQPChannelEndToEnd drives the amqp channel through the server: a
// subscription made over HTTP publishes to a topic exchange with a
// templated routing key, persistent messages whose message id is the event
// id; then the broker restarts (a proxy in front of it is cut and comes
// back), and every event published meanwhile arrives once it is back.
func TestAMQPChannelEndToEnd(t *testing.T) {
	u := os.Getenv("HERALD_TEST_AMQP")
	if u == "" {
		t.Skip("HERALD_TEST_AMQP is not set: no AMQP broker to test against")
	}
	conn, err := amqpgo.DialConfig(u, amqpgo.Config{Dial: amqpgo.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Skipf("HERALD_TEST_AMQP=%s: %v", u, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	id := strings.ToLower(herald.NewKeyID())
	exchange, queue := "heralde2e.x."+id, "heralde2e.q."+id
	if err := ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ch.ExchangeDelete(exchange, false, false) }()
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = ch.QueueDelete(queue, false, false, false) }()
	if err := ch.QueueBind(queue, "orders.#", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := newReceived()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range deliveries {
			key, _ := d.Headers["Herald-Event-Key"].(string)
			if want := "orders." + key; d.RoutingKey != want || d.DeliveryMode != amqpgo.Persistent {
				t.Errorf("routing key %q, delivery mode %d; want %q, persistent", d.RoutingKey, d.DeliveryMode, want)
			}
			got.add(d.MessageId, key, d.Body)
		}
	}()
	defer func() { _ = ch.Close(); <-done }()

	pu, _ := url.Parse(u)
	proxy := channeltest.NewProxy(t, pu.Host)
	m, _ := testServer(t, t.TempDir(), nil)
	subID, sub := brokerSubscribe(t, m, "orders", "amqp",
		`{"url":"amqp://guest:guest@`+proxy.Addr()+`/","exchange":"`+exchange+`","routing_key":"{topic}.{key}"}`)
	if cfg, _ := json.Marshal(sub["config"]); strings.Contains(string(cfg), `"password"`) || !strings.Contains(string(cfg), `"mandatory":true`) {
		t.Errorf("config shown as %s: want mandatory by default, no password", cfg)
	}

	ids := brokerPublish(t, m, "orders", 0, 6)
	eventually(t, "the first events in the queue", func() bool { return got.has(ids) })
	brokerSettled(t, m, subID) // no confirmation in flight when the broker goes

	proxy.Down()
	more := brokerPublish(t, m, "orders", 6, 6)
	eventually(t, "a failed attempt while the broker is away", func() bool {
		_, body := brokerCall(t, m, "GET", "/v1/subscriptions/"+subID+"/attempts", "")
		return strings.Contains(string(body), `"connection-refused"`) || strings.Contains(string(body), `"connection-reset"`) || strings.Contains(string(body), `"not-connected"`)
	})
	proxy.Up()
	all := append(ids, more...)
	eventually(t, "every event in the queue after the broker came back", func() bool { return got.has(all) })
	got.checkOnceInKeyOrder(t, all)
}

// TestMQTTChannelEndToEnd drives the mqtt channel through the server: a
// subscription made over HTTP publishes CloudEvents envelopes at QoS 1 to
// a templated topic; then the broker goes away, and every event published
// meanwhile arrives once it is back, in key order.
func TestMQTTChannelEndToEnd(t *testing.T) {
	u := os.Getenv("HERALD_TEST_MQTT")
	if u == "" {
		t.Skip("HERALD_TEST_MQTT is not set: no MQTT broker to test against")
	}
	prefix := "heralde2e/" + strings.ToLower(herald.NewKeyID())
	got := newReceived()
	// A QoS 1 message in flight when the connection broke may reach the
	// broker twice (Paho sends it again, and Herald retries it): the
	// consumer drops repeats by the envelope's id.
	got.dedup = true
	opts := paho.NewClientOptions().AddBroker(u).SetClientID("heralde2e-" + strings.ToLower(herald.NewKeyID())).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Skipf("HERALD_TEST_MQTT=%s: %v", u, tok.Error())
	}
	defer c.Disconnect(100)
	tok := c.Subscribe(prefix+"/#", 1, func(_ paho.Client, m paho.Message) {
		var e struct {
			ID, Subject string
			Data        json.RawMessage
		}
		if err := json.Unmarshal(m.Payload(), &e); err != nil {
			t.Errorf("not a CloudEvents envelope: %q", m.Payload())
			return
		}
		if want := prefix + "/orders/" + e.Subject; m.Topic() != want {
			t.Errorf("topic %q; want %q", m.Topic(), want)
		}
		got.add(e.ID, e.Subject, e.Data)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	pu, _ := url.Parse(u)
	proxy := channeltest.NewProxy(t, pu.Host)
	m, _ := testServer(t, t.TempDir(), nil)
	subID, sub := brokerSubscribe(t, m, "orders", "mqtt",
		`{"url":"tcp://`+proxy.Addr()+`","topic":"`+prefix+`/{topic}/{key}","format":"cloudevents"}`)
	if cfg, _ := json.Marshal(sub["config"]); !strings.Contains(string(cfg), `"qos":1`) {
		t.Errorf("config shown as %s: want qos 1 by default", cfg)
	}
	ids := brokerPublish(t, m, "orders", 0, 6)
	eventually(t, "the first events at the subscriber", func() bool { return got.has(ids) })
	got.mu.Lock()
	if b := got.body[ids[0]]; b != `{"n":0}` {
		t.Errorf("payload %q", b)
	}
	got.mu.Unlock()
	brokerSettled(t, m, subID)

	proxy.Down()
	more := brokerPublish(t, m, "orders", 6, 6)
	eventually(t, "a failed attempt while the broker is away", func() bool {
		_, body := brokerCall(t, m, "GET", "/v1/subscriptions/"+subID+"/attempts", "")
		return strings.Contains(string(body), `"outcome":"failure"`)
	})
	proxy.Up()
	all := append(ids, more...)
	eventually(t, "every event at the subscriber after the broker came back", func() bool { return got.has(all) })
	got.checkOnceInKeyOrder(t, all)
}
