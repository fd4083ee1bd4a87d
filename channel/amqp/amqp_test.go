package amqp_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	amqpgo "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/amqp"
	"github.com/heraldhq/herald/channel/channeltest"
)

// broker returns the test service's address, or skips.
func broker(t *testing.T) string { return channeltest.Service(t, "HERALD_TEST_AMQP", "AMQP broker") }

// admin is a test's own connection to the broker, to declare queues and
// read what reached them.
type admin struct {
	t   *testing.T
	url string
	mu  sync.Mutex
	ch  *amqpgo.Channel
	got map[string][]channeltest.Message // by queue
}

func newAdmin(t *testing.T) *admin {
	t.Helper()
	u := broker(t)
	c, err := amqpgo.DialConfig(u, amqpgo.Config{Dial: amqpgo.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Skipf("HERALD_TEST_AMQP=%s: %v", u, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return &admin{t: t, url: u, ch: ch, got: map[string][]channeltest.Message{}}
}

// queue declares a queue of its own for the test, deleted at its end,
// bound to the exchange with the binding keys when exchange is not "".
func (a *admin) queue(t *testing.T, exchange string, bindings ...string) string {
	t.Helper()
	name := "heraldtest." + strings.ToLower(herald.NewKeyID())
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, b := range bindings {
		if err := a.ch.QueueBind(name, b, exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		_, _ = a.ch.QueueDelete(name, false, false, false)
	})
	return name
}

// exchange declares a topic exchange of its own for the test.
func (a *admin) exchange(t *testing.T) string {
	t.Helper()
	name := "heraldtest.x." + strings.ToLower(herald.NewKeyID())
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.ch.ExchangeDeclare(name, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		_ = a.ch.ExchangeDelete(name, false, false)
	})
	return name
}

// read takes what the queue holds now and returns everything it received.
func (a *admin) read(t *testing.T, queue string) []channeltest.Message {
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		d, ok, err := a.ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		id, _ := d.Headers["Herald-Event-Id"].(string)
		key, _ := d.Headers["Herald-Event-Key"].(string)
		if id != d.MessageId {
			t.Errorf("message id %q, Herald-Event-Id %q: want the same", d.MessageId, id)
		}
		if d.DeliveryMode != amqpgo.Persistent {
			t.Errorf("delivery mode %d; want persistent", d.DeliveryMode)
		}
		a.got[queue] = append(a.got[queue], channeltest.Message{EventID: d.MessageId, Key: key, Payload: d.Body})
	}
	return append([]channeltest.Message(nil), a.got[queue]...)
}

func TestConformance(t *testing.T) {
	a := newAdmin(t)
	ch := amqp.NewChannel(amqp.ChannelConfig{AllowPrivate: true, DialTimeout: time.Second})
	channeltest.Run(t, channeltest.Harness{
		Channel: ch,
		Config: func(t *testing.T) json.RawMessage {
			q := a.queue(t, "")
			return json.RawMessage(`{"url":"` + a.url + `","exchange":"","routing_key":"` + q + `"}`)
		},
		ConfigAt: func(t *testing.T, addr string) json.RawMessage {
			return json.RawMessage(`{"url":"amqp://guest:guest@` + addr + `/","routing_key":"q"}`)
		},
		Received: func(t *testing.T, config json.RawMessage) []channeltest.Message {
			var c struct {
				RoutingKey string `json:"routing_key"`
			}
			_ = json.Unmarshal(config, &c)
			return a.read(t, c.RoutingKey)
		},
		Secrets: []string{"password"},
		SecretConfig: func(t *testing.T) json.RawMessage {
			return json.RawMessage(`{"url":"amqp://herald:pa55-w0rd-x@` + channeltest.HostPort(t, a.url) + `/"}`)
		},
	})
}

func newEvent(topic, key, payload string) *herald.Event {
	now := time.Now().UTC()
	return &herald.Event{ID: herald.NewID(now), Topic: topic, Seq: 7, Key: key, Type: "order.created", Time: now, ContentType: "application/json", Payload: []byte(payload)}
}

// A topic exchange routes by the templated key; a message no queue takes
// fails as unroutable (mandatory), and one to a missing exchange as
// no-exchange: both retry rather than vanish.
func TestExchangeRoutingAndFailures(t *testing.T) {
	a := newAdmin(t)
	x := a.exchange(t)
	q := a.queue(t, x, "orders.*.created")
	ch := amqp.NewChannel(amqp.ChannelConfig{AllowPrivate: true})
	sink := channeltest.OpenSink(t, ch, `{"url":"`+a.url+`","exchange":"`+x+`","routing_key":"{topic}.{key}.created"}`, 3*time.Second)

	ev := newEvent("orders", "eu.42", `{"id":42}`)
	ev.Headers = map[string]string{"X-Trace": "t1", "Herald-Topic": "forged"}
	if r := channeltest.Deliver(t, sink, ev, 2, 3*time.Second); r.Outcome != herald.Delivered {
		t.Fatalf("routable: %v %s %s", r.Outcome, r.Err, r.Detail)
	}
	a.mu.Lock()
	d, ok, err := a.ch.Get(q, true)
	a.mu.Unlock()
	if err != nil || !ok {
		t.Fatalf("the bound queue holds nothing: %v", err)
	}
	if d.RoutingKey != "orders.eu_42.created" || d.MessageId != ev.ID || d.Type != "order.created" || d.ContentType != "application/json" || d.AppId != "herald" {
		t.Errorf("message: routing key %q, id %q, type %q, content type %q, app %q", d.RoutingKey, d.MessageId, d.Type, d.ContentType, d.AppId)
	}
	for k, want := range map[string]string{"Herald-Topic": "orders", "Herald-Event-Key": "eu.42", "Herald-Seq": "7", "Herald-Attempt": "2", "Herald-Subscription-Id": "sub_test", "X-Trace": "t1"} {
		if got, _ := d.Headers[k].(string); got != want {
			t.Errorf("header %s = %q; want %q", k, got, want)
		}
	}

	// No binding takes "payments.*": unroutable, twice in a batch.
	other := channeltest.OpenSink(t, ch, `{"url":"`+a.url+`","exchange":"`+x+`","routing_key":"payments.{key}"}`, 3*time.Second).(channel.Batcher)
	res := other.DeliverBatch(t.Context(), []channel.Delivery{{Event: newEvent("p", "a", "1"), Attempt: 1}, {Event: newEvent("p", "b", "2"), Attempt: 1}})
	for i, r := range res {
		if r.Outcome != herald.Failed || r.Err != amqp.ReasonUnroutable {
			t.Errorf("unroutable event %d: %v %q %s", i, r.Outcome, r.Err, r.Detail)
		}
	}
	// Not mandatory: the broker drops it, and that is what was asked.
	loose := channeltest.OpenSink(t, ch, `{"url":"`+a.url+`","exchange":"`+x+`","routing_key":"payments.{key}","mandatory":false}`, 3*time.Second)
	if r := channeltest.Deliver(t, loose, newEvent("p", "c", "3"), 1, 3*time.Second); r.Outcome != herald.Delivered {
		t.Errorf("not mandatory: %v %s", r.Outcome, r.Err)
	}

	missing := channeltest.OpenSink(t, ch, `{"url":"`+a.url+`","exchange":"heraldtest.no-such-exchange","routing_key":"k"}`, 3*time.Second)
	if r := channeltest.Deliver(t, missing, newEvent("p", "", "4"), 1, 3*time.Second); r.Outcome != herald.Failed || r.Err != amqp.ReasonNoExchange {
		t.Errorf("missing exchange: %v %q %s", r.Outcome, r.Err, r.Detail)
	}
	// The connection survives the channel the broker closed.
	if r := channeltest.Deliver(t, sink, newEvent("orders", "x", "5"), 1, 3*time.Second); r.Outcome != herald.Delivered {
		t.Errorf("after a closed channel: %v %s %s", r.Outcome, r.Err, r.Detail)
	}
}

// A broker restart (the connection cut, then refused, then back) makes
// deliveries fail, then the connection comes back on its own and the
// retried event is delivered: none is lost. Sinks of one broker share one
// connection.
func TestBrokerRestart(t *testing.T) {
	a := newAdmin(t)
	q := a.queue(t, "")
	proxy := channeltest.NewProxy(t, channeltest.HostPort(t, a.url))
	reg := prometheus.NewRegistry()
	ch := amqp.NewChannel(amqp.ChannelConfig{AllowPrivate: true, DialTimeout: time.Second, ReconnectWait: 50 * time.Millisecond, Registry: reg})
	config := `{"url":"amqp://guest:guest@` + proxy.Addr() + `/","routing_key":"` + q + `"}`
	sink := channeltest.OpenSink(t, ch, config, 3*time.Second)
	twin := channeltest.OpenSink(t, ch, config, 3*time.Second)

	first := newEvent("orders", "k", `{"n":1}`)
	channeltest.WaitOutcome(t, sink, first, herald.Delivered, 3*time.Second)
	channeltest.WaitOutcome(t, twin, newEvent("orders", "k", `{"n":0}`), herald.Delivered, 3*time.Second)
	if n := testutil.ToFloat64(counter(t, reg, "herald_amqp_connects_total")); n != 1 {
		t.Errorf("%v connections made for two sinks of one broker; want 1", n)
	}

	proxy.Down()
	second := newEvent("orders", "k", `{"n":2}`)
	r := channeltest.WaitOutcome(t, sink, second, herald.Failed, 3*time.Second)
	t.Logf("while down: %s (%s)", r.Err, r.Detail)
	if r.Err == "" {
		t.Error("a failure without a reason")
	}
	proxy.Up()
	channeltest.WaitOutcome(t, sink, second, herald.Delivered, 3*time.Second)

	deadline := time.Now().Add(10 * time.Second)
	for {
		got := a.read(t, q)
		ids := map[string]bool{}
		for _, m := range got {
			ids[m.EventID] = true
		}
		if ids[first.ID] && ids[second.ID] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue holds %d messages, not both events", len(got))
		}
		time.Sleep(20 * time.Millisecond) // polling the broker
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: "copy"}, func() float64 { return mf.GetMetric()[0].GetCounter().GetValue() })
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func TestValidate(t *testing.T) {
	ch := amqp.NewChannel(amqp.ChannelConfig{})
	for _, tc := range []struct{ config, field string }{
		{`{}`, "url"},
		{`{"url":"http://mq.example.com"}`, "url"},
		{`{"url":"amqp://mq.example.com","max_batch_events":-1}`, "max_batch_events"},
		{`{"url":"amqp://mq.example.com","max_batch_events":100000}`, "max_batch_events"},
		{`{"url":"amqp://mq.example.com","linger_ms":5000}`, "linger_ms"},
		{`{"url":"amqp://127.0.0.1"}`, "url"},
		{`{"url":"amqp://mq.example.com?heartbeat=5"}`, "url"},
		{`{"url":"amqp://mq.example.com","routing_key":"{nope}"}`, "routing_key"},
		{`{"url":"amqp://mq.example.com","routing_key":"` + strings.Repeat("k", 256) + `"}`, "routing_key"},
		{`{"url":"amqp://mq.example.com","exchange":"a\nb"}`, "exchange"},
		{`{"url":"amqp://mq.example.com","password":"p"}`, "user"},
		{`{"url":"amqp://u:p@mq.example.com","user":"v"}`, "url"},
		{`{"url":"amqp://mq.example.com","mandatory":"yes"}`, "mandatory"},
	} {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(tc.config)})
		he, ok := err.(*herald.Error)
		if !ok || he.Code != herald.CodeInvalid || he.Field != tc.field {
			t.Errorf("%s: %v; want invalid naming %q", tc.config, err, tc.field)
		}
	}
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"url":"amqps://app:s%40cret@MQ.example.com/prod","exchange":"events"}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"url":"amqps://mq.example.com:5671/prod","exchange":"events","routing_key":"{topic}","mandatory":true,"user":"app","password":"s@cret","max_batch_events":500,"linger_ms":0}`
	if string(canon) != want {
		t.Errorf("canonical form\n got %s\nwant %s", canon, want)
	}
	if pub := string(ch.Public(canon)); strings.Contains(pub, "cret") {
		t.Errorf("Public shows the password: %s", pub)
	}
	_, err = ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"url":"amqps://evil.example.com","user":"app"}`), Previous: canon})
	if he, ok := err.(*herald.Error); !ok || he.Field != "password" {
		t.Errorf("broker changed, password left out: %v; want invalid naming password", err)
	}
}
