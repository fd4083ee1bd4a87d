package kafka_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/channeltest"
	"github.com/heraldhq/herald/channel/kafka"
)

// cluster is an in-process Kafka (franz-go's kfake, speaking the real
// protocol) and consumers that read back what reached its topics.
type cluster struct {
	c   *kfake.Cluster
	mu  sync.Mutex
	got map[string]*consumer // by Kafka topic
}

func newCluster(t *testing.T, opts ...kfake.Opt) *cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &cluster{c: c, got: map[string]*consumer{}}
}

func (k *cluster) addr() string { return k.c.ListenAddrs()[0] }

// consumer reads one topic from its start, in the background, until the
// test ends.
type consumer struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

// messages returns what the Kafka topic holds so far, as the suite reads
// it: in partition order, which is per-key order.
func (k *cluster) messages(t *testing.T, addr, topic string) []channeltest.Message {
	recs := k.records(t, addr, topic)
	out := make([]channeltest.Message, 0, len(recs))
	for _, r := range recs {
		out = append(out, channeltest.Message{EventID: headerOf(r, kafka.HeaderEventID), Key: string(r.Key), Payload: r.Value})
	}
	return out
}

func (k *cluster) records(t *testing.T, addr, topic string) []*kgo.Record {
	k.mu.Lock()
	cons, ok := k.got[topic]
	if !ok {
		cons = &consumer{}
		k.got[topic] = cons
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(50*time.Millisecond), kgo.MetadataMaxAge(200*time.Millisecond),
			kgo.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			k.mu.Unlock()
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				fs := cl.PollFetches(ctx)
				cons.mu.Lock()
				fs.EachRecord(func(r *kgo.Record) { cons.recs = append(cons.recs, r) })
				cons.mu.Unlock()
			}
		}()
		t.Cleanup(func() { cancel(); <-done; cl.Close() })
	}
	k.mu.Unlock()
	cons.mu.Lock()
	defer cons.mu.Unlock()
	return append([]*kgo.Record(nil), cons.recs...)
}

func headerOf(r *kgo.Record, name string) string {
	for _, h := range r.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// freshTopic is a Kafka topic name no other test uses.
func freshTopic(t *testing.T) string {
	return "t-" + strings.NewReplacer("/", "-", "#", "-").Replace(t.Name()) + "-" + strings.ToLower(herald.NewKeyID())
}

func TestConformance(t *testing.T) {
	t.Parallel()
	k := newCluster(t)
	ch := kafka.New(kafka.ChannelConfig{AllowPrivate: true})
	channeltest.Run(t, channeltest.Harness{
		Channel: ch,
		Config: func(t *testing.T) json.RawMessage {
			topic := freshTopic(t)
			if err := k.c.CreateTopic(topic, 3, nil); err != nil {
				t.Fatal(err)
			}
			return fmt.Appendf(nil, `{"brokers":[%q],"topic":%q}`, k.addr(), topic)
		},
		ConfigAt: func(t *testing.T, addr string) json.RawMessage {
			return fmt.Appendf(nil, `{"brokers":[%q],"topic":"nowhere"}`, addr)
		},
		Received: func(t *testing.T, config json.RawMessage) []channeltest.Message {
			cfg, err := kafka.ParseConfig(config)
			if err != nil {
				t.Fatal(err)
			}
			return k.messages(t, cfg.Brokers[0], cfg.Topic)
		},
		Secrets: []string{"password", "tls_key_pem"},
		SecretConfig: func(t *testing.T) json.RawMessage {
			cert, key := selfSigned(t)
			b, _ := json.Marshal(map[string]any{"brokers": []string{k.addr()}, "sasl_mechanism": "SCRAM-SHA-256", "username": "herald",
				"password": "s3cret-pw", "tls": true, "tls_cert_pem": cert, "tls_key_pem": key})
			return b
		},
		Timeout: 2 * time.Second,
	})
}

// TestHeadersAndTopicTemplate checks what a record carries: the event key
// as record key, the Herald metadata and CloudEvents attributes as
// headers, producer headers under their names, the topic from the
// template.
func TestHeadersAndTopicTemplate(t *testing.T) {
	t.Parallel()
	k := newCluster(t)
	ch := kafka.New(kafka.ChannelConfig{AllowPrivate: true})
	cfg, err := ch.Validate(t.Context(), channel.ValidateParams{Config: fmt.Appendf(nil, `{"brokers":[%q],"topic":"herald.{topic}"}`, k.addr())})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := ch.Open(t.Context(), &herald.Subscription{ID: "sub_1", Config: cfg, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close(context.Background())
	now := time.Now().UTC()
	ev := &herald.Event{ID: herald.NewID(now), Topic: "payments.card", Seq: 7, Type: "card.declined", Key: "card-9", Time: now,
		ContentType: "application/json", Payload: []byte(`{"amount":5}`),
		Headers: map[string]string{"X-Tenant": "acme", "ce-source": "/cards", "ce-traceparent": "00-ab", "herald-topic": "forged"}}
	if r := sink.Deliver(t.Context(), ev, 3); r.Outcome != herald.Delivered {
		t.Fatalf("Deliver: %+v", r)
	}
	var recs []*kgo.Record
	waitFor(t, "the record", func() bool { recs = k.records(t, k.addr(), "herald.payments.card"); return len(recs) == 1 })
	r := recs[0]
	want := map[string]string{
		"content-type": "application/json", kafka.HeaderEventID: ev.ID, kafka.HeaderTopic: "payments.card", kafka.HeaderSeq: "7",
		kafka.HeaderEventType: "card.declined", kafka.HeaderEventKey: "card-9", kafka.HeaderAttempt: "3", kafka.HeaderSubscriptionID: "sub_1",
		"ce_specversion": "1.0", "ce_id": ev.ID, "ce_source": "/cards", "ce_type": "card.declined", "ce_subject": "card-9",
		"ce_traceparent": "00-ab", "X-Tenant": "acme",
	}
	for name, v := range want {
		if got := headerOf(r, name); got != v {
			t.Errorf("header %s = %q, want %q", name, got, v)
		}
	}
	if n := strings.Count(fmt.Sprint(r.Headers), "herald-topic"); n != 1 {
		t.Errorf("herald-topic appears %d times: a producer header overrode Herald's", n)
	}
	if string(r.Key) != "card-9" || string(r.Value) != `{"amount":5}` {
		t.Errorf("record key %q value %q", r.Key, r.Value)
	}
}

// TestSameKeySamePartition checks that the record key routes: every
// event of one key lands in one partition, in order.
func TestSameKeySamePartition(t *testing.T) {
	t.Parallel()
	k := newCluster(t)
	ch := kafka.New(kafka.ChannelConfig{AllowPrivate: true})
	topic := freshTopic(t)
	if err := k.c.CreateTopic(topic, 8, nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := ch.Validate(t.Context(), channel.ValidateParams{Config: fmt.Appendf(nil, `{"brokers":[%q],"topic":%q}`, k.addr(), topic)})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := ch.Open(t.Context(), &herald.Subscription{ID: "sub_1", Config: cfg, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close(context.Background())
	const n = 200
	batch := make([]channel.Delivery, n)
	now := time.Now().UTC()
	for i := range batch {
		batch[i] = channel.Delivery{Attempt: 1, Event: &herald.Event{ID: herald.NewID(now), Topic: "x", Seq: int64(i + 1), Time: now,
			Key: fmt.Sprintf("k%d", i%10), Payload: fmt.Appendf(nil, "%d", i)}}
	}
	for i, r := range sink.(channel.Batcher).DeliverBatch(t.Context(), batch) {
		if r.Outcome != herald.Delivered {
			t.Fatalf("event %d: %+v", i, r)
		}
	}
	var recs []*kgo.Record
	waitFor(t, "every record", func() bool { recs = k.records(t, k.addr(), topic); return len(recs) == n })
	partOf, lastSeq, parts := map[string]int32{}, map[string]int{}, map[int32]bool{}
	for _, r := range recs {
		key := string(r.Key)
		if p, ok := partOf[key]; ok && p != r.Partition {
			t.Fatalf("key %s in partitions %d and %d", key, p, r.Partition)
		}
		partOf[key], parts[r.Partition] = r.Partition, true
		seq := 0
		fmt.Sscan(headerOf(r, kafka.HeaderSeq), &seq)
		if seq < lastSeq[key] {
			t.Fatalf("key %s: seq %d after %d", key, seq, lastSeq[key])
		}
		lastSeq[key] = seq
	}
	if len(parts) < 2 {
		t.Errorf("10 keys all went to %d partition(s) of 8: keys do not spread", len(parts))
	}
}

// TestBrokerDownThenBack: while the cluster is down deliveries fail with
// the reason (to be retried), and the same events delivered again once it
// is back all reach it, in key order; nothing acknowledged before is
// lost across the broker's restart.
func TestBrokerDownThenBack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	start := func() *cluster { return newCluster(t, kfake.Ports(port), kfake.DataDir(dir)) }
	k := start()
	topic := freshTopic(t)
	if err := k.c.CreateTopic(topic, 3, nil); err != nil {
		t.Fatal(err)
	}
	ch := kafka.New(kafka.ChannelConfig{AllowPrivate: true})
	cfg, err := ch.Validate(t.Context(), channel.ValidateParams{Config: fmt.Appendf(nil, `{"brokers":[%q],"topic":%q}`, k.addr(), topic)})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := ch.Open(t.Context(), &herald.Subscription{ID: "sub_1", Config: cfg, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close(context.Background())
	b := sink.(channel.Batcher)
	now := time.Now().UTC()
	mk := func(from, n int) []channel.Delivery {
		out := make([]channel.Delivery, n)
		for i := range out {
			out[i] = channel.Delivery{Attempt: 1, Event: &herald.Event{ID: herald.NewID(now), Topic: "x", Seq: int64(from + i), Time: now,
				Key: fmt.Sprintf("k%d", i%3), Payload: fmt.Appendf(nil, "%d", from+i)}}
		}
		return out
	}
	first := mk(1, 6)
	for i, r := range b.DeliverBatch(t.Context(), first) {
		if r.Outcome != herald.Delivered {
			t.Fatalf("event %d before the outage: %+v", i, r)
		}
	}
	k.c.Close()

	second := mk(7, 6)
	for i, r := range b.DeliverBatch(t.Context(), second) {
		if r.Outcome != herald.Failed || r.Err != channel.ReasonConnectionRefused {
			t.Fatalf("event %d while the broker is down: %+v; want Failed, %s", i, r, channel.ReasonConnectionRefused)
		}
	}

	k = start() // the same port and data: the broker came back
	var res []herald.DeliveryResult
	waitFor(t, "the retry to succeed", func() bool {
		for i := range second {
			second[i].Attempt++
		}
		res = b.DeliverBatch(t.Context(), second)
		for _, r := range res {
			if r.Outcome != herald.Delivered {
				return false
			}
		}
		return true
	})
	var recs []*kgo.Record
	waitFor(t, "all 12 events", func() bool {
		recs = k.records(t, k.addr(), topic)
		seen := map[string]bool{}
		for _, r := range recs {
			seen[headerOf(r, kafka.HeaderEventID)] = true
		}
		for _, d := range append(first, second...) {
			if !seen[d.Event.ID] {
				return false
			}
		}
		return true
	})
	// A record abandoned at the timeout may still reach the broker, so a
	// retry can repeat it: at least once. A consumer that drops repeated
	// event ids sees every key in order.
	last, seen := map[string]int{}, map[string]bool{}
	for _, r := range recs {
		id := headerOf(r, kafka.HeaderEventID)
		if seen[id] {
			continue
		}
		seen[id] = true
		seq := 0
		fmt.Sscan(headerOf(r, kafka.HeaderSeq), &seq)
		if seq < last[string(r.Key)] {
			t.Errorf("key %s: seq %d after %d", r.Key, seq, last[string(r.Key)])
		}
		last[string(r.Key)] = seq
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ch := kafka.New(kafka.ChannelConfig{})
	cases := []struct {
		config, field string
		admin         bool
	}{
		{`{}`, "brokers", true},
		{`{"brokers":["kafka.example.com"]}`, "brokers", true},
		{`{"brokers":["127.0.0.1:9092"]}`, "brokers", true},
		{`{"brokers":["kafka.example.com:9092"],"topic":"a b"}`, "topic", true},
		{`{"brokers":["kafka.example.com:9092"],"topic":"{key}"}`, "topic", true},
		{`{"brokers":["kafka.example.com:9092"],"topic":"` + strings.Repeat("x", 50) + `{topic}"}`, "topic", true},
		{`{"brokers":["kafka.example.com:9092"],"compression":"brotli"}`, "compression", true},
		{`{"brokers":["kafka.example.com:9092"],"max_batch_events":-1}`, "max_batch_events", true},
		{`{"brokers":["kafka.example.com:9092"],"linger_ms":5000}`, "linger_ms", true},
		{`{"brokers":["kafka.example.com:9092"],"sasl_mechanism":"GSSAPI","username":"u","password":"p"}`, "sasl_mechanism", true},
		{`{"brokers":["kafka.example.com:9092"],"username":"u","password":"p"}`, "sasl_mechanism", true},
		{`{"brokers":["kafka.example.com:9092"],"sasl_mechanism":"PLAIN","username":"u"}`, "password", true},
		{`{"brokers":["kafka.example.com:9092"],"sasl_mechanism":"PLAIN","password":"p"}`, "username", true},
		{`{"brokers":["kafka.example.com:9092"],"tls_ca_pem":"x"}`, "tls", true},
		{`{"brokers":["kafka.example.com:9092"],"tls":true,"tls_ca_pem":"nope"}`, "tls_ca_pem", true},
		{`{"brokers":["kafka.example.com:9092"],"tls":true,"tls_insecure_skip_verify":true}`, "tls_insecure_skip_verify", false},
		{`{"brokers":["kafka.example.com:9092"],"tls":true,"tls_cert_pem":"x"}`, "tls_key_pem", true},
		{`{"brokers":["kafka.example.com:9092"],"client_id":"a/b"}`, "client_id", true},
	}
	for _, c := range cases {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(c.config), Admin: c.admin})
		he, ok := err.(*herald.Error)
		if !ok || he.Code != herald.CodeInvalid || he.Field != c.field {
			t.Errorf("Validate(%s) = %v; want invalid naming %s", c.config, err, c.field)
		}
	}
	got, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"brokers":["b.example.com:9092","a.example.com:9092","b.example.com:9092"],"tls":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"brokers":["a.example.com:9092","b.example.com:9092"],"topic":"{topic}","client_id":"herald","compression":"none","max_batch_events":500,"linger_ms":0,"tls":true}`
	if string(got) != want {
		t.Errorf("canonical config\n got %s\nwant %s", got, want)
	}
	if d := ch.Destination(got); d != "kafka://a.example.com:9092,b.example.com:9092" {
		t.Errorf("Destination = %q", d)
	}
	// A changed user name needs its password again.
	stored, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"brokers":["a.example.com:9092"],"sasl_mechanism":"PLAIN","username":"u","password":"p"}`)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.Validate(t.Context(), channel.ValidateParams{Previous: stored, Config: json.RawMessage(`{"brokers":["a.example.com:9092"],"sasl_mechanism":"PLAIN","username":"other"}`)})
	if he, ok := err.(*herald.Error); !ok || he.Field != "password" {
		t.Errorf("new user without a password: %v; want invalid naming password", err)
	}
}

// selfSigned returns a PEM certificate and its key.
func selfSigned(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
}

// waitFor polls cond until it holds, failing the test after 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling a broker: no event to wait on
	}
}
