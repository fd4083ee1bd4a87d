package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	sourceoutbox "github.com/heraldhq/herald/source/outbox"
	"github.com/heraldhq/herald/store/postgres/pgtest"
)

// benchSources skips unless HERALD_BENCH_SOURCES is set: these measure,
// they do not check, and they take tens of seconds.
func benchSources(t *testing.T) {
	if os.Getenv("HERALD_BENCH_SOURCES") == "" {
		t.Skip("set HERALD_BENCH_SOURCES=1 to measure the sources (docs/benchmarks.md)")
	}
}

// headSeq is the topic's newest seq.
func headSeq(t *testing.T, c *client.Client, topic string) int64 {
	tp, err := c.GetTopic(t.Context(), topic)
	if err != nil {
		return 0
	}
	return tp.HeadSeq
}

// TestBenchOutboxIngest measures an outbox source flat out: rows already
// in a PostgreSQL outbox, Herald on its default SQLite store (and on
// PostgreSQL), rows per second until every row is an event.
func TestBenchOutboxIngest(t *testing.T) {
	benchSources(t)
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			outDSN, _ := pgtest.Schema(t, "herald_bench_outbox")
			ctx := t.Context()
			db, err := pgx.Connect(ctx, outDSN)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close(context.Background())
			if _, err := db.Exec(ctx, sourceoutbox.PostgresDDL); err != nil {
				t.Fatal(err)
			}
			const rows = 100_000
			if _, err := db.Exec(ctx, `INSERT INTO herald_outbox (topic, key, payload)
				SELECT 'x', 'k' || (i % 1000), convert_to('{"n":' || i || ',"amount":1250,"currency":"EUR"}', 'UTF8') FROM generate_series(1, $1) i`, rows); err != nil {
				t.Fatal(err)
			}
			m, _ := testServer(t, t.TempDir(), func(c *Config) {
				c.AutoCreateTopics = true
				c.LogLevel = 0
				if store == "postgres" {
					c.DatabaseURL = Secret(pgDSN(t))
				}
			})
			c := adminClient(m)
			start := time.Now()
			if _, err := c.CreateSource(ctx, client.SourceSpec{Kind: "outbox", Topic: "bench.outbox", Shards: 4,
				Config: json.RawMessage(fmt.Sprintf(`{"dsn": %q, "batch_size": 2000}`, outDSN))}); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "every row", 5*time.Minute, func() bool { return headSeq(t, c, "bench.outbox") >= rows })
			d := time.Since(start)
			t.Logf("outbox ingest, Herald on %s: %d rows in %s: %.0f rows/s", store, rows, d.Round(time.Millisecond), rows/d.Seconds())
		})
	}
}

// TestBenchOutboxToWebhookLatency writes outbox rows at a fixed rate, one
// transaction each (each NOTIFYs), and measures from the row's insert to
// its webhook's arrival at a receiver.
func TestBenchOutboxToWebhookLatency(t *testing.T) {
	benchSources(t)
	outDSN, _ := pgtest.Schema(t, "herald_bench_outbox")
	ctx := t.Context()
	db, err := pgx.Connect(ctx, outDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(ctx, sourceoutbox.PostgresDDL); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lat []time.Duration
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var p struct{ T int64 }
		if json.Unmarshal(b, &p) == nil && p.T > 0 {
			mu.Lock()
			lat = append(lat, time.Since(time.Unix(0, p.T)))
			mu.Unlock()
		}
	}))
	defer recv.Close()
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true; c.LogLevel = 0 })
	c := adminClient(m)
	if _, _, err := c.PutTopic(ctx, "bench.lat", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "bench.lat", URL: recv.URL, Verification: herald.VerifyNone, MaxInFlight: 64}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSource(ctx, client.SourceSpec{Kind: "outbox", Topic: "bench.lat",
		Config: json.RawMessage(fmt.Sprintf(`{"dsn": %q, "poll_interval": "1s"}`, outDSN))}); err != nil {
		t.Fatal(err)
	}
	const rate, total = 1000, 5000
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	for i := range total {
		<-tick.C
		if _, err := db.Exec(ctx, `INSERT INTO herald_outbox (topic, key, payload) VALUES ('x', $1, $2)`,
			fmt.Sprint(i%100), fmt.Appendf(nil, `{"t":%d}`, time.Now().UnixNano())); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "every webhook", time.Minute, func() bool { mu.Lock(); defer mu.Unlock(); return len(lat) >= total })
	mu.Lock()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	mu.Unlock()
	t.Logf("outbox row -> webhook at %d rows/s (NOTIFY): p50 %s, p99 %s over %d rows", rate, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), total)
}

// TestBenchKafkaSourceIngest measures a Kafka source reading records
// already in a kfake topic of six partitions, three shards.
func TestBenchKafkaSourceIngest(t *testing.T) {
	benchSources(t)
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(6))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	addr := kc.ListenAddrs()[0]
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic("bench"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const records = 200_000
	ctx := t.Context()
	for b := range records / 5000 {
		recs := make([]*kgo.Record, 5000)
		for i := range recs {
			n := b*5000 + i
			recs[i] = &kgo.Record{Key: fmt.Appendf(nil, "k%d", n%1000), Value: fmt.Appendf(nil, `{"n":%d,"amount":1250}`, n)}
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true; c.LogLevel = 0 })
	c := adminClient(m)
	start := time.Now()
	if _, err := c.CreateSource(ctx, client.SourceSpec{Kind: "kafka", Topic: "bench.kafka", Shards: 3,
		Config: json.RawMessage(fmt.Sprintf(`{"brokers": [%q], "topics": ["bench"], "max_poll_records": 5000}`, addr))}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every record", 5*time.Minute, func() bool { return headSeq(t, c, "bench.kafka") >= records })
	d := time.Since(start)
	t.Logf("kafka source ingest (kfake, 6 partitions, 3 shards): %d records in %s: %.0f records/s", records, d.Round(time.Millisecond), records/d.Seconds())
}
