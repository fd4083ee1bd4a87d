package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/kafka"
	"github.com/heraldhq/herald/client"
)

// TestKafkaChannelSASLTLS delivers through the server to a kfake cluster
// that takes only TLS connections and SCRAM-SHA-512 logins: with the CA
// and the credentials in the subscription's config, the events reach the
// topic; with a wrong password, or without TLS, the attempts fail and
// nothing is written, and the password shows in no answer, attempt or log.
func TestKafkaChannelSASLTLS(t *testing.T) {
	t.Parallel()
	certSrv := httptest.NewTLSServer(http.NotFoundHandler()) // a certificate for 127.0.0.1
	certSrv.Close()
	const password = "s3cret-7d21-never-shown"
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "herald", password),
		kfake.TLS(&tls.Config{Certificates: certSrv.TLS.Certificates, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	broker := kc.ListenAddrs()[0]
	roots := x509.NewCertPool()
	roots.AddCert(certSrv.Certificate())
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certSrv.Certificate().Raw}))

	// A reader that logs in as the producers must.
	cons, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics("herald.secure", "herald.refused", "herald.plain"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.MetadataMinAge(50*time.Millisecond), kgo.MetadataMaxAge(200*time.Millisecond),
		kgo.FetchMaxWait(100*time.Millisecond), kgo.AllowAutoTopicCreation(),
		kgo.DialTLSConfig(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}),
		kgo.SASL(scram.Auth{User: "herald", Pass: password}.AsSha512Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got = map[string]map[string]bool{} // Kafka topic -> event ids
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				if got[r.Topic] == nil {
					got[r.Topic] = map[string]bool{}
				}
				got[r.Topic][headerValue(r, kafka.HeaderEventID)] = true
			})
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cons.Close() })
	count := func(topic string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(got[topic])
	}

	m, logs := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	config := func(topic, pw string, withTLS bool) string {
		cfg := map[string]any{"brokers": []string{broker}, "topic": "herald." + topic,
			"sasl_mechanism": "SCRAM-SHA-512", "username": "herald", "password": pw}
		if withTLS {
			cfg["tls"], cfg["tls_ca_pem"] = true, caPEM
		}
		b, _ := json.Marshal(cfg)
		return string(b)
	}
	good, sub := brokerSubscribe(t, m, "secure", "kafka", config("secure", password, true))
	raw, _ := json.Marshal(sub)
	if strings.Contains(string(raw), password) || !strings.Contains(string(raw), `"tls":true`) || !strings.Contains(string(raw), `"sasl_mechanism":"SCRAM-SHA-512"`) {
		t.Fatalf("create answered %s", raw)
	}
	refused, _ := brokerSubscribe(t, m, "refused", "kafka", config("refused", "wrong-"+password, true))
	plain, _ := brokerSubscribe(t, m, "plain", "kafka", config("plain", password, false))
	for _, topic := range []string{"secure", "refused", "plain"} {
		for i := range 20 {
			if _, err := c.Publish(t.Context(), topic, fmt.Appendf(nil, `{"n":%d}`, i), client.PublishOptions{ContentType: "application/json", Key: fmt.Sprintf("k%d", i%3)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, "20 events in herald.secure over TLS and SCRAM", func() bool { return count("herald.secure") == 20 })

	// A wrong password, and no TLS to a broker that speaks only TLS:
	// failed attempts that say the connection failed, retried, nothing
	// written.
	for name, id := range map[string]string{"wrong password": refused, "no TLS": plain} {
		eventually(t, "a failed attempt ("+name+")", func() bool {
			page, err := c.ListAttempts(t.Context(), id, client.AttemptListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range page.Attempts {
				if strings.Contains(a.ErrorDetail+a.Error, password) {
					t.Fatalf("an attempt shows the password: %+v", a)
				}
				// Why, not a bare timeout: the connection's failure.
				if a.Outcome != "delivered" && a.Error != "" && a.Error != channel.ReasonTimeout && strings.Contains(a.ErrorDetail, "connect to") {
					t.Logf("%s: attempt failed: %s (%s)", name, a.Error, a.ErrorDetail)
					return true
				}
			}
			return false
		})
	}
	if n, p := count("herald.refused"), count("herald.plain"); n != 0 || p != 0 {
		t.Fatalf("refused connections wrote %d and %d records", n, p)
	}
	for _, id := range []string{good, refused, plain} {
		if _, body := brokerCall(t, m, "GET", "/v1/subscriptions/"+id, ""); strings.Contains(string(body), password) {
			t.Fatalf("GET shows the password: %s", body)
		}
	}
	if strings.Contains(logs.String(), password) {
		t.Error("the server log holds the password")
	}
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
