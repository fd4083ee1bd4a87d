package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"net/http"
	"net/http/httptest"
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

// TestKafkaSourceSASLTLS reads a kfake cluster that takes only TLS
// connections and SCRAM-SHA-256 logins: the records become events, the
// password never shows, and a wrong password leaves the source retrying
// with the broker's refusal as its status_reason.
func TestKafkaSourceSASLTLS(t *testing.T) {
	t.Parallel()
	certSrv := httptest.NewTLSServer(http.NotFoundHandler()) // a certificate for 127.0.0.1
	certSrv.Close()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "herald", "s3cret-pw"),
		kfake.TLS(&tls.Config{Certificates: certSrv.TLS.Certificates, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	addr := kc.ListenAddrs()[0]
	roots := x509.NewCertPool()
	roots.AddCert(certSrv.Certificate())
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic("secure"),
		kgo.DialTLSConfig(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}),
		kgo.SASL(scram.Auth{User: "herald", Pass: "s3cret-pw"}.AsSha256Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var recs []*kgo.Record
	for n := range 50 {
		recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", n%3), Value: fmt.Appendf(nil, `{"n":%d}`, n)})
	}
	if err := prod.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certSrv.Certificate().Raw}))

	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "kafka", "topic": "kafka.{topic}",
		"config": map[string]any{"brokers": []string{addr}, "topics": []string{"secure"},
			"sasl_mechanism": "SCRAM-SHA-256", "username": "herald", "password": "s3cret-pw",
			"tls": true, "tls_ca_pem": caPEM}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	if cfg := src["config"].(map[string]any); cfg["password"] != nil || cfg["username"] != "herald" || cfg["tls"] != true {
		t.Fatalf("config shown: %v", cfg)
	}
	c := adminClient(m)
	waitUntil(t, "the records as events", 20*time.Second, func() bool { return len(allEvents(t, c, "kafka.secure")) >= 50 })
	if evs := allEvents(t, c, "kafka.secure"); len(evs) != 50 {
		t.Fatalf("%d events; want 50", len(evs))
	}
	id := src["id"].(string)
	// Another source (its own group) with a wrong password: refused.
	spec, _ = json.Marshal(map[string]any{"kind": "kafka", "topic": "kafka.{topic}",
		"config": map[string]any{"brokers": []string{addr}, "topics": []string{"secure"}, "group": "other",
			"sasl_mechanism": "SCRAM-SHA-256", "username": "herald", "password": "wrong",
			"tls": true, "tls_ca_pem": caPEM}})
	status, bad, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, bad)
	}
	waitUntil(t, "the refused login in the status", 30*time.Second, func() bool {
		_, got, _ := call(t, m, testAdminKey, "GET", "/v1/sources/"+bad["id"].(string), nil)
		reason, _ := got["status_reason"].(string)
		return got["status"] == "retrying" && reason != "" && !strings.Contains(reason, "wrong")
	})
	// A PATCH without the password keeps it.
	if status, _, _ := call(t, m, testAdminKey, "PATCH", "/v1/sources/"+id, []byte(`{"config": {"brokers": ["`+addr+`"], "topics": ["secure"],
		"sasl_mechanism": "SCRAM-SHA-256", "username": "herald", "tls": true, "tls_ca_pem": `+strconvQuote(caPEM)+`}}`)); status != 200 {
		t.Fatalf("patch: %d", status)
	}
	waitUntil(t, "the source running again", 20*time.Second, func() bool {
		_, got, _ := call(t, m, testAdminKey, "GET", "/v1/sources/"+id, nil)
		return got["status"] == "running"
	})
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
