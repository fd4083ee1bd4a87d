package nats_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/channeltest"
	"github.com/heraldhq/herald/channel/nats"
)

// server returns the test service's address, or skips.
func server(t *testing.T) string { return channeltest.Service(t, "HERALD_TEST_NATS", "NATS server") }

func connect(t *testing.T, u string) (*natsgo.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := natsgo.Connect(u, natsgo.Timeout(5*time.Second))
	if err != nil {
		t.Skipf("HERALD_TEST_NATS=%s: %v", u, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// collector keeps what each subject prefix received, for Received.
type collector struct {
	mu  sync.Mutex
	got map[string][]channeltest.Message // by prefix
}

func (c *collector) add(prefix string, m *natsgo.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[prefix] = append(c.got[prefix], channeltest.Message{
		EventID: m.Header.Get("Herald-Event-Id"), Key: m.Header.Get("Herald-Event-Key"), Payload: append([]byte(nil), m.Data...),
	})
}

func (c *collector) read(t *testing.T, config json.RawMessage) []channeltest.Message {
	var cfg struct{ Subject string }
	if err := json.Unmarshal(config, &cfg); err != nil {
		t.Fatal(err)
	}
	prefix, _, _ := strings.Cut(cfg.Subject, ".{")
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]channeltest.Message(nil), c.got[prefix]...)
}

// uniquePrefix returns a subject prefix no other test uses.
func uniquePrefix(kind string) string {
	return "heraldtest." + kind + "." + strings.ReplaceAll(herald.NewKeyID(), "-", "_")
}

func TestConformanceCore(t *testing.T) {
	u := server(t)
	nc, _ := connect(t, u)
	col := &collector{got: map[string][]channeltest.Message{}}
	ch := nats.NewChannel(nats.ChannelConfig{AllowPrivate: true, DialTimeout: time.Second})
	channeltest.Run(t, channeltest.Harness{
		Channel: ch,
		Config: func(t *testing.T) json.RawMessage {
			prefix := uniquePrefix("core")
			sub, err := nc.Subscribe(prefix+".>", func(m *natsgo.Msg) { col.add(prefix, m) })
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil { // the subscription is on the server before anything is sent
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			return json.RawMessage(`{"url":"` + u + `","subject":"` + prefix + `.{topic}.{key}"}`)
		},
		ConfigAt: func(t *testing.T, addr string) json.RawMessage {
			return json.RawMessage(`{"url":"nats://` + addr + `","subject":"down.{topic}"}`)
		},
		Received: col.read,
		Secrets:  []string{"password"},
		SecretConfig: func(t *testing.T) json.RawMessage {
			return json.RawMessage(`{"url":"nats://herald:s3cret-pass@` + channeltest.HostPort(t, u) + `","subject":"x"}`)
		},
	})
}

func TestConformanceJetStream(t *testing.T) {
	u := server(t)
	_, js := connect(t, u)
	stream := streamFor(t, js)
	col := &collector{got: map[string][]channeltest.Message{}}
	ch := nats.NewChannel(nats.ChannelConfig{AllowPrivate: true, DialTimeout: time.Second})
	channeltest.Run(t, channeltest.Harness{
		Channel: ch,
		Config: func(t *testing.T) json.RawMessage {
			prefix := stream.prefix + "." + strings.ReplaceAll(herald.NewKeyID(), "-", "_")
			cons, err := js.OrderedConsumer(t.Context(), stream.name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ".>"}})
			if err != nil {
				t.Fatal(err)
			}
			cc, err := cons.Consume(func(m jetstream.Msg) {
				col.add(prefix, &natsgo.Msg{Header: m.Headers(), Data: m.Data()})
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cc.Stop)
			return json.RawMessage(`{"url":"` + u + `","subject":"` + prefix + `.{topic}.{key}","jetstream":true,"stream":"` + stream.name + `"}`)
		},
		ConfigAt: func(t *testing.T, addr string) json.RawMessage {
			return json.RawMessage(`{"url":"nats://` + addr + `","subject":"down.{topic}","jetstream":true}`)
		},
		Received: col.read,
		Secrets:  []string{"token"},
		SecretConfig: func(t *testing.T) json.RawMessage {
			return json.RawMessage(`{"url":"` + u + `","token":"t0ken-value-secret","jetstream":true}`)
		},
	})
}

type testStream struct{ name, prefix string }

// streamFor makes a JetStream stream of its own for the test, deleted at
// its end.
func streamFor(t *testing.T, js jetstream.JetStream) testStream {
	t.Helper()
	id := strings.ToUpper(strings.ReplaceAll(herald.NewKeyID(), "-", "_"))
	s := testStream{name: "HERALDTEST_" + id, prefix: "heraldjs." + id}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: s.name, Subjects: []string{s.prefix + ".>"}, Storage: jetstream.MemoryStorage, Duplicates: time.Minute,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, s.name)
	})
	return s
}

// streamCount returns how many messages the stream holds.
func streamCount(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func newEvent(topic, key string, payload string) *herald.Event {
	now := time.Now().UTC()
	return &herald.Event{ID: herald.NewID(now), Topic: topic, Seq: 1, Key: key, Type: "t", Time: now, Payload: []byte(payload)}
}

// A broker that goes away makes deliveries fail (to retry), never lose
// them: once it is back the connection comes back on its own, the retry is
// delivered, and the stream holds each event once, its Nats-Msg-Id
// dropping the copy of an attempt whose acknowledgement was lost.
func TestServerDownThenBack(t *testing.T) {
	u := server(t)
	_, js := connect(t, u)
	stream := streamFor(t, js)
	proxy := channeltest.NewProxy(t, channeltest.HostPort(t, u))
	ch := nats.NewChannel(nats.ChannelConfig{AllowPrivate: true, DialTimeout: time.Second, ReconnectWait: 50 * time.Millisecond})
	sink := channeltest.OpenSink(t, ch, `{"url":"nats://`+proxy.Addr()+`","subject":"`+stream.prefix+`.{topic}","jetstream":true}`, 2*time.Second)

	first := newEvent("orders", "k", `{"n":1}`)
	channeltest.WaitOutcome(t, sink, first, herald.Delivered, 2*time.Second)

	proxy.Down()
	second := newEvent("orders", "k", `{"n":2}`)
	r := channeltest.WaitOutcome(t, sink, second, herald.Failed, 2*time.Second)
	if r.Err == "" {
		t.Error("a failure without a reason")
	}
	t.Logf("while down: %s (%s)", r.Err, r.Detail)

	proxy.Up()
	channeltest.WaitOutcome(t, sink, second, herald.Delivered, 2*time.Second)
	// Sent again, as after a lost acknowledgement: the stream keeps one.
	if r := channeltest.Deliver(t, sink, second, 3, 2*time.Second); r.Outcome != herald.Delivered {
		t.Fatalf("a repeat: %v %s", r.Outcome, r.Err)
	}
	if n := streamCount(t, js, stream.name); n != 2 {
		t.Errorf("the stream holds %d messages; want 2 (each event once)", n)
	}
}

// A JetStream publish no stream takes fails with no-stream (and retries),
// rather than counting as delivered.
func TestNoStreamIsFailed(t *testing.T) {
	u := server(t)
	connect(t, u)
	ch := nats.NewChannel(nats.ChannelConfig{AllowPrivate: true})
	sink := channeltest.OpenSink(t, ch, `{"url":"`+u+`","subject":"`+uniquePrefix("nostream")+`.{topic}","jetstream":true}`, 2*time.Second)
	r := channeltest.WaitOutcome(t, sink, newEvent("orders", "", `{}`), herald.Failed, 2*time.Second)
	if r.Err != nats.ReasonNoStream {
		t.Errorf("reason %q (%s); want %q", r.Err, r.Detail, nats.ReasonNoStream)
	}
}

// Headers carry the event's metadata; the key becomes one subject token,
// whatever it holds.
func TestMessageShape(t *testing.T) {
	u := server(t)
	nc, _ := connect(t, u)
	prefix := uniquePrefix("shape")
	msgs := make(chan *natsgo.Msg, 4)
	sub, err := nc.ChanSubscribe(prefix+".>", msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ch := nats.NewChannel(nats.ChannelConfig{AllowPrivate: true})
	sink := channeltest.OpenSink(t, ch, `{"url":"`+u+`","subject":"`+prefix+`.{topic}.{key}.{type}"}`, 2*time.Second)
	ev := newEvent("orders.eu", "a.b *>c", `{"x":1}`)
	ev.Type, ev.ContentType, ev.Headers = "order.created", "application/json", map[string]string{"X-Trace": "t1", "Herald-Topic": "forged"}
	if r := channeltest.Deliver(t, sink, ev, 2, 2*time.Second); r.Outcome != herald.Delivered {
		t.Fatalf("%v %s %s", r.Outcome, r.Err, r.Detail)
	}
	select {
	case m := <-msgs:
		if want := prefix + ".orders.eu.a_b___c.order.created"; m.Subject != want {
			t.Errorf("subject %q; want %q", m.Subject, want)
		}
		for k, want := range map[string]string{
			"Herald-Event-Id": ev.ID, "Herald-Topic": "orders.eu", "Herald-Event-Key": "a.b *>c", "Herald-Event-Type": "order.created",
			"Herald-Attempt": "2", "Herald-Seq": "1", "Herald-Subscription-Id": "sub_test", "Content-Type": "application/json", "X-Trace": "t1",
		} {
			if got := m.Header.Get(k); got != want {
				t.Errorf("header %s = %q; want %q", k, got, want)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
}

func TestValidate(t *testing.T) {
	ch := nats.NewChannel(nats.ChannelConfig{})
	for _, tc := range []struct {
		config, field string
	}{
		{`{}`, "url"},
		{`{"url":"http://nats.example.com"}`, "url"},
		{`{"url":"nats://nats.example.com","max_batch_events":-1}`, "max_batch_events"},
		{`{"url":"nats://nats.example.com","max_batch_events":100000}`, "max_batch_events"},
		{`{"url":"nats://nats.example.com","linger_ms":5000}`, "linger_ms"},
		{`{"url":"nats://127.0.0.1:4222"}`, "url"}, // private: refused by default
		{`{"url":"nats://localhost:4222"}`, "url"},
		{`{"url":"nats://nats.example.com:99999"}`, "url"},
		{`{"url":"nats://nats.example.com","subject":"a.*"}`, "subject"},
		{`{"url":"nats://nats.example.com","subject":"a.>"}`, "subject"},
		{`{"url":"nats://nats.example.com","subject":"a..{key}"}`, "subject"},
		{`{"url":"nats://nats.example.com","subject":"a.{nope}"}`, "subject"},
		{`{"url":"nats://nats.example.com","subject":"a.{key"}`, "subject"},
		{`{"url":"nats://nats.example.com","stream":"S"}`, "stream"},
		{`{"url":"nats://nats.example.com","jetstream":true,"stream":"a.b"}`, "stream"},
		{`{"url":"nats://nats.example.com","password":"p"}`, "user"},
		{`{"url":"nats://nats.example.com","token":"t","user":"u","password":"p"}`, "token"},
		{`{"url":"nats://nats.example.com","creds":"not a creds file"}`, "creds"},
		{`{"url":"nats://nats.example.com","jetstream":"yes"}`, "jetstream"},
	} {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(tc.config)})
		he, ok := err.(*herald.Error)
		if !ok || he.Code != herald.CodeInvalid || he.Field != tc.field {
			t.Errorf("%s: %v; want invalid naming %q", tc.config, err, tc.field)
		}
	}

	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"url":"NATS.example.com, tls://u:pw@n2.example.com:4333"}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"url":"nats://nats.example.com:4222,tls://n2.example.com:4333","subject":"{topic}","jetstream":false,"user":"u","password":"pw","max_batch_events":500,"linger_ms":0}`
	if string(canon) != want {
		t.Errorf("canonical form\n got %s\nwant %s", canon, want)
	}
	if pub := string(ch.Public(canon)); strings.Contains(pub, "pw") {
		t.Errorf("Public shows the password: %s", pub)
	}
	if d := ch.Destination(canon); d != "nats://nats.example.com:4222,tls://n2.example.com:4333" {
		t.Errorf("Destination %q", d)
	}
	// Moving to other servers without the password again is refused:
	// a stored secret never follows a subscription elsewhere.
	_, err = ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"url":"nats://evil.example.com","user":"u"}`), Previous: canon})
	if he, ok := err.(*herald.Error); !ok || he.Field != "password" {
		t.Errorf("servers changed, password left out: %v; want invalid naming password", err)
	}
}
