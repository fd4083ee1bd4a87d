package mqtt_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/channeltest"
	"github.com/heraldhq/herald/channel/mqtt"
)

// brokerURL returns the test service's address, or skips.
func brokerURL(t *testing.T) string { return channeltest.Service(t, "HERALD_TEST_MQTT", "MQTT broker") }

// listener is a test's own client, subscribed to the topics of a test.
type listener struct {
	c   paho.Client
	mu  sync.Mutex
	got map[string][]paho.Message // by topic prefix
}

func newListener(t *testing.T) *listener {
	t.Helper()
	u := brokerURL(t)
	l := &listener{got: map[string][]paho.Message{}}
	opts := paho.NewClientOptions().AddBroker(u).SetClientID("heraldtest-" + strings.ToLower(herald.NewKeyID())).SetConnectTimeout(5 * time.Second)
	l.c = paho.NewClient(opts)
	if tok := l.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Skipf("HERALD_TEST_MQTT=%s: %v", u, tok.Error())
	}
	t.Cleanup(func() { l.c.Disconnect(100) })
	return l
}

// follow subscribes to prefix/# and returns prefix.
func (l *listener) follow(t *testing.T, prefix string) string {
	t.Helper()
	tok := l.c.Subscribe(prefix+"/#", 1, func(_ paho.Client, m paho.Message) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.got[prefix] = append(l.got[prefix], m)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { l.c.Unsubscribe(prefix + "/#").WaitTimeout(5 * time.Second) })
	return prefix
}

func (l *listener) messages(prefix string) []paho.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]paho.Message(nil), l.got[prefix]...)
}

func uniquePrefix(kind string) string {
	return "heraldtest/" + kind + "/" + strings.ToLower(herald.NewKeyID())
}

// envelope is the CloudEvents form a consumer reads.
type envelope struct {
	ID, Subject, Type, Source, Time string
	DataContentType                 string          `json:"datacontenttype"`
	HeraldTopic                     string          `json:"heraldtopic"`
	Data                            json.RawMessage `json:"data"`
	DataBase64                      string          `json:"data_base64"`
}

func (e envelope) payload(t *testing.T) []byte {
	if e.DataBase64 != "" {
		b, err := base64.StdEncoding.DecodeString(e.DataBase64)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return e.Data
}

func TestConformance(t *testing.T) {
	l := newListener(t)
	ch := mqtt.NewChannel(mqtt.ChannelConfig{AllowPrivate: true, DialTimeout: time.Second})
	channeltest.Run(t, channeltest.Harness{
		Channel: ch,
		Config: func(t *testing.T) json.RawMessage {
			prefix := l.follow(t, uniquePrefix("conformance"))
			return json.RawMessage(`{"url":"` + brokerURL(t) + `","topic":"` + prefix + `/{topic}/{key}","format":"cloudevents"}`)
		},
		ConfigAt: func(t *testing.T, addr string) json.RawMessage {
			return json.RawMessage(`{"url":"tcp://` + addr + `","topic":"down/{topic}"}`)
		},
		Received: func(t *testing.T, config json.RawMessage) []channeltest.Message {
			var c struct{ Topic string }
			_ = json.Unmarshal(config, &c)
			prefix, _, _ := strings.Cut(c.Topic, "/{")
			var out []channeltest.Message
			for _, m := range l.messages(prefix) {
				var e envelope
				if err := json.Unmarshal(m.Payload(), &e); err != nil {
					t.Fatalf("a message that is not a CloudEvents envelope: %q", m.Payload())
				}
				out = append(out, channeltest.Message{EventID: e.ID, Key: e.Subject, Payload: e.payload(t)})
			}
			return out
		},
		Secrets: []string{"password"},
		SecretConfig: func(t *testing.T) json.RawMessage {
			return json.RawMessage(`{"url":"tcp://herald:m0squ1tto-pw@` + channeltest.HostPort(t, brokerURL(t)) + `"}`)
		},
	})
}

func newEvent(topic, key, payload string) *herald.Event {
	now := time.Now().UTC()
	return &herald.Event{ID: herald.NewID(now), Topic: topic, Seq: 3, Key: key, Type: "reading.taken", Time: now, ContentType: "application/json", Payload: []byte(payload)}
}

// The raw format is the payload byte for byte on the templated topic, with
// the retain flag when asked: a client subscribing afterwards still gets
// it.
func TestRawRetainedAndQoS2(t *testing.T) {
	l := newListener(t)
	prefix := uniquePrefix("raw")
	ch := mqtt.NewChannel(mqtt.ChannelConfig{AllowPrivate: true})
	sink := channeltest.OpenSink(t, ch, `{"url":"`+brokerURL(t)+`","topic":"`+prefix+`/{topic}/{key}","qos":2,"retain":true}`, 3*time.Second)
	ev := newEvent("sensors.eu", "room/1+#", "\x00binary\xff")
	channeltest.WaitOutcome(t, sink, ev, herald.Delivered, 3*time.Second)
	l.follow(t, prefix) // after the publish: only a retained message reaches it
	deadline := time.Now().Add(10 * time.Second)
	for len(l.messages(prefix)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no retained message within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling the subscription
	}
	m := l.messages(prefix)[0]
	if want := prefix + "/sensors/eu/room_1__"; m.Topic() != want {
		t.Errorf("topic %q; want %q", m.Topic(), want)
	}
	if string(m.Payload()) != "\x00binary\xff" || !m.Retained() {
		t.Errorf("payload %q, retained %v; want the bytes, retained", m.Payload(), m.Retained())
	}
	// Clear the retained message: an empty retained message deletes it.
	l.c.Publish(m.Topic(), 1, true, []byte{}).WaitTimeout(5 * time.Second)
}

// A broker that goes away makes deliveries fail (to retry); the client
// comes back on its own and the retry is delivered.
func TestBrokerDownThenBack(t *testing.T) {
	l := newListener(t)
	prefix := l.follow(t, uniquePrefix("restart"))
	proxy := channeltest.NewProxy(t, channeltest.HostPort(t, brokerURL(t)))
	ch := mqtt.NewChannel(mqtt.ChannelConfig{AllowPrivate: true, DialTimeout: time.Second, ReconnectWait: 50 * time.Millisecond})
	sink := channeltest.OpenSink(t, ch, `{"url":"tcp://`+proxy.Addr()+`","topic":"`+prefix+`/{key}","format":"cloudevents"}`, 3*time.Second)
	first := newEvent("t", "k", `{"n":1}`)
	channeltest.WaitOutcome(t, sink, first, herald.Delivered, 3*time.Second)
	proxy.Down()
	second := newEvent("t", "k", `{"n":2}`)
	r := channeltest.WaitOutcome(t, sink, second, herald.Failed, 3*time.Second)
	t.Logf("while down: %s (%s)", r.Err, r.Detail)
	proxy.Up()
	channeltest.WaitOutcome(t, sink, second, herald.Delivered, 3*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ids := map[string]bool{}
		for _, m := range l.messages(prefix) {
			var e envelope
			_ = json.Unmarshal(m.Payload(), &e)
			ids[e.ID] = true
		}
		if ids[first.ID] && ids[second.ID] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("both events did not arrive within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling the subscription
	}
}

func TestCloudEventsEnvelope(t *testing.T) {
	l := newListener(t)
	prefix := l.follow(t, uniquePrefix("ce"))
	ch := mqtt.NewChannel(mqtt.ChannelConfig{AllowPrivate: true})
	sink := channeltest.OpenSink(t, ch, `{"url":"`+brokerURL(t)+`","topic":"`+prefix+`/x","format":"cloudevents"}`, 3*time.Second)
	ev := newEvent("sensors", "r1", "{ \"t\" : 21.5 , \"s\":\"<&>\u2028\" }")
	channeltest.WaitOutcome(t, sink, ev, herald.Delivered, 3*time.Second)
	text := newEvent("sensors", "", "plain text")
	text.ContentType = "text/plain"
	channeltest.WaitOutcome(t, sink, text, herald.Delivered, 3*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(l.messages(prefix)) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no messages within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling the subscription
	}
	for i, want := range []*herald.Event{ev, text} {
		var e envelope
		if err := json.Unmarshal(l.messages(prefix)[i].Payload(), &e); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		if e.ID != want.ID || e.Type != "reading.taken" || e.Source != "/herald/topics/sensors" || e.HeraldTopic != "sensors" || e.Subject != want.Key || e.DataContentType != want.ContentType {
			t.Errorf("envelope %+v", e)
		}
		if got := e.payload(t); string(got) != string(want.Payload) {
			t.Errorf("payload %q; want %q byte for byte", got, want.Payload)
		}
	}
}

func TestValidate(t *testing.T) {
	ch := mqtt.NewChannel(mqtt.ChannelConfig{})
	for _, tc := range []struct{ config, field string }{
		{`{}`, "url"},
		{`{"url":"http://mq.example.com"}`, "url"},
		{`{"url":"tcp://mq.example.com","max_batch_events":-1}`, "max_batch_events"},
		{`{"url":"tcp://mq.example.com","max_batch_events":100000}`, "max_batch_events"},
		{`{"url":"tcp://mq.example.com","linger_ms":5000}`, "linger_ms"},
		{`{"url":"tcp://127.0.0.1:1883"}`, "url"},
		{`{"url":"tcp://mq.example.com","topic":"a/+/b"}`, "topic"},
		{`{"url":"tcp://mq.example.com","topic":"a/#"}`, "topic"},
		{`{"url":"tcp://mq.example.com","topic":"$SYS/x"}`, "topic"},
		{`{"url":"tcp://mq.example.com","topic":"{id}"}`, "topic"},
		{`{"url":"tcp://mq.example.com","qos":0}`, "qos"},
		{`{"url":"tcp://mq.example.com","qos":3}`, "qos"},
		{`{"url":"tcp://mq.example.com","format":"xml"}`, "format"},
		{`{"url":"tcp://mq.example.com","retain":"yes"}`, "retain"},
		{`{"url":"tcp://mq.example.com","password":"p"}`, "user"},
	} {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(tc.config)})
		he, ok := err.(*herald.Error)
		if !ok || he.Code != herald.CodeInvalid || he.Field != tc.field {
			t.Errorf("%s: %v; want invalid naming %q", tc.config, err, tc.field)
		}
	}
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"url":"mqtts://dev:pw@MQ.example.com","topic":"herald/{topic}"}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"url":"ssl://mq.example.com:8883","topic":"herald/{topic}","qos":1,"retain":false,"format":"raw","user":"dev","password":"pw","max_batch_events":100,"linger_ms":0}`
	if string(canon) != want {
		t.Errorf("canonical form\n got %s\nwant %s", canon, want)
	}
	_, err = ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"url":"ssl://evil.example.com","user":"dev"}`), Previous: canon})
	if he, ok := err.(*herald.Error); !ok || he.Field != "password" {
		t.Errorf("broker changed, password left out: %v; want invalid naming password", err)
	}
}
