package redis_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/channeltest"
	"github.com/heraldhq/herald/channel/redis"
)

// server returns the address of the test Redis, or skips.
func server(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		t.Skip("HERALD_TEST_REDIS is not set (host:port of a Redis to test against)")
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Skipf("HERALD_TEST_REDIS=%s is unreachable: %v", addr, err)
	}
	_ = c.Close()
	return addr
}

func reader(t *testing.T, addr string) *goredis.Client {
	cl := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// freshName is a stream or channel name no other test uses.
func freshName(t *testing.T) string {
	return "herald-test:" + strings.NewReplacer("/", "-", "#", "-").Replace(t.Name()) + ":" + strings.ToLower(herald.NewKeyID())
}

// entries reads a stream as the suite wants it.
func entries(t *testing.T, cl *goredis.Client, stream string) []channeltest.Message {
	msgs, err := cl.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]channeltest.Message, 0, len(msgs))
	for _, m := range msgs {
		key, _ := m.Values[redis.FieldKey].(string)
		id, _ := m.Values[redis.FieldID].(string)
		payload, _ := m.Values[redis.FieldPayload].(string)
		out = append(out, channeltest.Message{EventID: id, Key: key, Payload: []byte(payload)})
	}
	return out
}

func TestConformanceStream(t *testing.T) {
	t.Parallel()
	addr := server(t)
	cl := reader(t, addr)
	channeltest.Run(t, channeltest.Harness{
		Channel: redis.New(redis.ChannelConfig{AllowPrivate: true}),
		Config: func(t *testing.T) json.RawMessage {
			name := freshName(t)
			t.Cleanup(func() { cl.Del(context.Background(), name) })
			return fmt.Appendf(nil, `{"address":%q,"stream":%q,"maxlen":10000}`, addr, name)
		},
		ConfigAt: func(t *testing.T, at string) json.RawMessage {
			return fmt.Appendf(nil, `{"address":%q}`, at)
		},
		Received: func(t *testing.T, config json.RawMessage) []channeltest.Message {
			cfg, err := redis.ParseConfig(config)
			if err != nil {
				t.Fatal(err)
			}
			return entries(t, cl, cfg.Stream)
		},
		Secrets: []string{"password"},
		SecretConfig: func(t *testing.T) json.RawMessage {
			return fmt.Appendf(nil, `{"address":%q,"username":"herald","password":"s3cret-pw"}`, addr)
		},
	})
}

// subscriber collects what a Pub/Sub channel carries, from before the
// first delivery to the end of the test.
type subscriber struct {
	mu   sync.Mutex
	msgs []channeltest.Message
}

func subscribe(t *testing.T, cl *goredis.Client, name string) *subscriber {
	t.Helper()
	ps := cl.Subscribe(context.Background(), name)
	if _, err := ps.Receive(t.Context()); err != nil { // the subscription is confirmed
		t.Fatal(err)
	}
	s := &subscriber{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ps.Channel() {
			var ev struct {
				ID, Subject          string
				Data                 json.RawMessage
				DataBase64           string `json:"data_base64"`
				DataContentType      string
				HeraldTopic          string
				HeraldSeq, HeraldAtt int
			}
			if err := json.Unmarshal([]byte(m.Payload), &ev); err != nil {
				t.Errorf("a Pub/Sub message is not JSON: %v", err)
				continue
			}
			payload := []byte(ev.Data)
			switch {
			case ev.DataBase64 != "":
				payload, _ = base64.StdEncoding.DecodeString(ev.DataBase64)
			case strings.HasPrefix(ev.DataContentType, "text/"):
				var text string
				_ = json.Unmarshal(ev.Data, &text)
				payload = []byte(text)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, channeltest.Message{EventID: ev.ID, Key: ev.Subject, Payload: payload})
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = ps.Close(); <-done })
	return s
}

func TestConformancePubSub(t *testing.T) {
	t.Parallel()
	addr := server(t)
	cl := reader(t, addr)
	var mu sync.Mutex
	subs := map[string]*subscriber{}
	channeltest.Run(t, channeltest.Harness{
		Channel: redis.New(redis.ChannelConfig{AllowPrivate: true}),
		Config: func(t *testing.T) json.RawMessage {
			name := freshName(t)
			s := subscribe(t, cl, name)
			mu.Lock()
			subs[name] = s
			mu.Unlock()
			return fmt.Appendf(nil, `{"address":%q,"mode":"pubsub","stream":%q,"require_subscribers":true}`, addr, name)
		},
		ConfigAt: func(t *testing.T, at string) json.RawMessage {
			return fmt.Appendf(nil, `{"address":%q,"mode":"pubsub"}`, at)
		},
		Received: func(t *testing.T, config json.RawMessage) []channeltest.Message {
			cfg, err := redis.ParseConfig(config)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			s := subs[cfg.Stream]
			mu.Unlock()
			s.mu.Lock()
			defer s.mu.Unlock()
			return append([]channeltest.Message(nil), s.msgs...)
		},
	})
}

func open(t *testing.T, ch *redis.Channel, config string) channel.Batcher {
	t.Helper()
	cfg, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(config), Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := ch.Open(t.Context(), &herald.Subscription{ID: "sub_1", Config: cfg, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close(context.Background()) })
	return sink.(channel.Batcher)
}

func batch(n int, topic string) []channel.Delivery {
	now := time.Now().UTC()
	out := make([]channel.Delivery, n)
	for i := range out {
		out[i] = channel.Delivery{Attempt: 2, Event: &herald.Event{ID: herald.NewID(now), Topic: topic, Seq: int64(i + 1), Time: now, Type: "t.x",
			Key: fmt.Sprintf("k%d", i%3), ContentType: "application/json", Payload: fmt.Appendf(nil, `{"i": %d}`, i),
			Headers: map[string]string{"X-Tenant": "acme"}}}
	}
	return out
}

// TestStreamFieldsAndMaxLen checks a stream entry's fields, the topic
// template, and that MAXLEN ~ trims.
func TestStreamFieldsAndMaxLen(t *testing.T) {
	t.Parallel()
	addr := server(t)
	cl := reader(t, addr)
	prefix := freshName(t)
	stream := prefix + ":orders.created"
	t.Cleanup(func() { cl.Del(context.Background(), stream) })
	sink := open(t, redis.New(redis.ChannelConfig{AllowPrivate: true}), fmt.Sprintf(`{"address":%q,"stream":%q,"maxlen":100}`, addr, prefix+":{topic}"))
	for range 10 {
		for i, r := range sink.DeliverBatch(t.Context(), batch(100, "orders.created")) {
			if r.Outcome != herald.Delivered {
				t.Fatalf("event %d: %+v", i, r)
			}
		}
	}
	n, err := cl.XLen(t.Context(), stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < 100 || n >= 1000 {
		t.Errorf("after 1000 XADDs with MAXLEN ~ 100 the stream holds %d entries", n)
	}
	last, err := cl.XRevRangeN(t.Context(), stream, "+", "-", 1).Result()
	if err != nil || len(last) != 1 {
		t.Fatal(last, err)
	}
	v := last[0].Values
	want := map[string]string{redis.FieldTopic: "orders.created", redis.FieldSeq: "100", redis.FieldType: "t.x", redis.FieldKey: "k0",
		redis.FieldContentType: "application/json", redis.FieldHeaders: `{"X-Tenant":"acme"}`, redis.FieldAttempt: "2",
		redis.FieldSubscriptionID: "sub_1", redis.FieldPayload: `{"i": 99}`}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("field %s = %v, want %q", k, v[k], w)
		}
	}
}

// TestPubSubWithoutSubscribers: Pub/Sub loses a message nobody listens
// to; require_subscribers makes that a failure to retry.
func TestPubSubWithoutSubscribers(t *testing.T) {
	t.Parallel()
	addr := server(t)
	ch := redis.New(redis.ChannelConfig{AllowPrivate: true})
	loose := open(t, ch, fmt.Sprintf(`{"address":%q,"mode":"pubsub","stream":%q}`, addr, freshName(t)))
	if r := loose.DeliverBatch(t.Context(), batch(1, "a"))[0]; r.Outcome != herald.Delivered {
		t.Errorf("PUBLISH without require_subscribers: %+v", r)
	}
	strict := open(t, ch, fmt.Sprintf(`{"address":%q,"mode":"pubsub","stream":%q,"require_subscribers":true}`, addr, freshName(t)))
	for _, r := range strict.DeliverBatch(t.Context(), batch(3, "a")) {
		if r.Outcome != herald.Failed || r.Err != redis.ReasonNoSubscribers {
			t.Errorf("PUBLISH to no one with require_subscribers: %+v", r)
		}
	}
}

// TestRedisErrorIsFailed: an XADD Redis refuses (the key holds a string)
// is Failed with Redis's reason; the other commands of the pipeline
// stand.
func TestRedisErrorIsFailed(t *testing.T) {
	t.Parallel()
	addr := server(t)
	cl := reader(t, addr)
	name := freshName(t)
	t.Cleanup(func() { cl.Del(context.Background(), name, name+"-ok") })
	if err := cl.Set(t.Context(), name, "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	sink := open(t, redis.New(redis.ChannelConfig{AllowPrivate: true}), fmt.Sprintf(`{"address":%q,"stream":"{topic}"}`, addr))
	b := batch(4, name)
	b[2].Event.Topic = name + "-ok"
	res := sink.DeliverBatch(t.Context(), b)
	if r := res[0]; r.Outcome != herald.Failed || r.Err != "redis-wrongtype" {
		t.Errorf("XADD to a string: %+v; want Failed, redis-wrongtype", r)
	}
	if r := res[2]; r.Outcome != herald.Delivered {
		t.Errorf("XADD to a stream in the same batch: %+v", r)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ch := redis.New(redis.ChannelConfig{})
	cases := []struct{ config, field string }{
		{`{}`, "address"},
		{`{"address":"127.0.0.1:6379"}`, "address"},
		{`{"address":"redis.example.com"}`, "address"},
		{`{"address":"redis.example.com:6379","db":16}`, "db"},
		{`{"address":"redis.example.com:6379","mode":"list"}`, "mode"},
		{`{"address":"redis.example.com:6379","stream":"a {key}"}`, "stream"},
		{`{"address":"redis.example.com:6379","stream":"a b"}`, "stream"},
		{`{"address":"redis.example.com:6379","maxlen":-1}`, "maxlen"},
		{`{"address":"redis.example.com:6379","mode":"pubsub","maxlen":10}`, "maxlen"},
		{`{"address":"redis.example.com:6379","require_subscribers":true}`, "require_subscribers"},
		{`{"address":"redis.example.com:6379","max_batch_events":100000}`, "max_batch_events"},
		{`{"address":"redis.example.com:6379","username":"u"}`, "password"},
		{`{"address":"redis.example.com:6379","tls_server_name":"x"}`, "tls"},
	}
	for _, c := range cases {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(c.config), Admin: true})
		he, ok := err.(*herald.Error)
		if !ok || he.Code != herald.CodeInvalid || he.Field != c.field {
			t.Errorf("Validate(%s) = %v; want invalid naming %s", c.config, err, c.field)
		}
	}
	got, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"address":"redis.example.com:6379","password":"pw","tls":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"address":"redis.example.com:6379","db":0,"mode":"stream","stream":"herald:{topic}","max_batch_events":100,"linger_ms":0,"password":"pw","tls":true}`
	if string(got) != want {
		t.Errorf("canonical config\n got %s\nwant %s", got, want)
	}
	if p := string(ch.Public(got)); strings.Contains(p, "pw") {
		t.Errorf("Public shows the password: %s", p)
	}
	if d := ch.Destination(got); d != "redis://redis.example.com:6379" {
		t.Errorf("Destination = %q", d)
	}
}
