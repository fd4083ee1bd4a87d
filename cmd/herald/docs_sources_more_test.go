package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald"
	sourceoutbox "github.com/heraldhq/herald/source/outbox"
	"github.com/heraldhq/herald/store/postgres/pgtest"
)

// The inbound webhook, outbox, Kafka, NATS and AMQP examples of
// docs/sources.md, run from the page against a server and the machine's
// services (kfake for Kafka); as in docs_sources_test.go, the test changes
// only addresses and, where the services are shared, names.

func TestDocsSourcesWebhookExample(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	m, c := sourceDocServer(t, "github.pull_request")
	out := runDocScript(t, m, sourceDocExample(t, "source-webhook"))
	createdSource(t, out)
	var src struct {
		InboundPath string `json:"inbound_path"`
	}
	if err := json.Unmarshal([]byte(out), &src); err != nil || !strings.HasPrefix(src.InboundPath, "/v1/inbound/") {
		t.Fatalf("no inbound_path in %s", out)
	}
	send := sourceDocExample(t, "source-webhook-send", "/v1/inbound/src_...")
	send = strings.Replace(send, "/v1/inbound/src_...", src.InboundPath, 1)
	var accepted struct {
		ID string `json:"id"`
	}
	if got := runDocScript(t, m, send); json.Unmarshal([]byte(got), &accepted) != nil || accepted.ID == "" {
		t.Fatalf("the delivery was answered %s", got)
	}
	evs := allEvents(t, c, "github.pull_request")
	if len(evs) != 1 || evs[0].ID != accepted.ID || evs[0].Key != "acme/shop" ||
		!sameJSON(evs[0].Payload, `{"action": "opened", "repository": {"full_name": "acme/shop"}}`) {
		t.Fatalf("events: %+v", evs)
	}
	// The same delivery with another secret's signature: refused.
	forged := strings.Replace(send, "-hmac 'the-webhook-secret'", "-hmac 'another-secret'", 1)
	forged = strings.Replace(forged, "curl -sS", "curl -sS -o /dev/null -w '%{http_code}'", 1)
	if got := runDocScript(t, m, forged); got != "401" {
		t.Fatalf("a forged delivery was answered %s; want 401", got)
	}
}

func TestDocsSourcesOutboxExample(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t, "herald_docoutbox")
	ctx := t.Context()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	// The page's DDL is the shipped file's, and runs.
	ddl := sourceDocExample(t, "source-outbox-ddl")
	if sqlStatements(ddl) != sqlStatements(sourceoutbox.PostgresDDL) {
		t.Fatalf("the DDL in docs/sources.md is not source/outbox/postgres.sql:\n%s", ddl)
	}
	if _, err := db.Exec(ctx, ddl); err != nil {
		t.Fatalf("the page's DDL: %v", err)
	}
	m, c := sourceDocServer(t, "payments.debited")
	const docDSN = "postgres://app:secret@db:5432/payments"
	ex := sourceDocExample(t, "source-outbox", docDSN)
	created := runDocScript(t, m, strings.Replace(ex, docDSN, dsn, 1))
	createdSource(t, created)
	if strings.Contains(created, "secret") {
		t.Fatalf("the answer shows the DSN's password: %s", created)
	}
	if _, err := db.Exec(ctx, sourceDocExample(t, "source-outbox-insert")); err != nil {
		t.Fatalf("the page's INSERT: %v", err)
	}
	eventually(t, "the row as an event", func() bool { return len(allEvents(t, c, "payments.debited")) > 0 })
	evs := allEvents(t, c, "payments.debited")
	if len(evs) != 1 || evs[0].Key != "acct-7" || evs[0].Type != "payment.debited" || !sameJSON(evs[0].Payload, `{"amount": 1250}`) {
		t.Fatalf("events: %+v", evs)
	}
	eventually(t, "the row deleted", func() bool {
		var n int
		return db.QueryRow(ctx, `SELECT count(*) FROM herald_outbox`).Scan(&n) == nil && n == 0
	})
}

// sqlStatements is SQL without its comment lines and blank lines.
func sqlStatements(sql string) string {
	var b strings.Builder
	for line := range strings.Lines(sql) {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") {
			b.WriteString(strings.TrimRight(line, "\n") + "\n")
		}
	}
	return b.String()
}

func TestDocsSourcesKafkaExample(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	addr := kc.ListenAddrs()[0]
	m, c := sourceDocServer(t, "kafka.orders")
	const docBrokers = `"brokers": ["kafka-1:9092", "kafka-2:9092"]`
	ex := sourceDocExample(t, "source-kafka", docBrokers)
	createdSource(t, runDocScript(t, m, strings.Replace(ex, docBrokers, fmt.Sprintf(`"brokers": [%q]`, addr), 1)))
	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if err := prod.ProduceSync(t.Context(), &kgo.Record{Topic: "orders", Key: []byte("c-42"), Value: []byte(`{"order": 1001}`),
		Headers: []kgo.RecordHeader{{Key: "ce_type", Value: []byte("order.placed")}, {Key: "content-type", Value: []byte("application/json")}}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the record as an event", func() bool { return len(allEvents(t, c, "kafka.orders")) > 0 })
	evs := allEvents(t, c, "kafka.orders")
	if len(evs) != 1 || evs[0].Key != "c-42" || evs[0].Type != "order.placed" || evs[0].ContentType != "application/json" || !sameJSON(evs[0].Payload, `{"order": 1001}`) {
		t.Fatalf("events: %+v", evs)
	}
}

func TestDocsSourcesNATSExample(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_NATS")
	if addr == "" {
		t.Skip("HERALD_TEST_NATS is not set")
	}
	nc, err := nats.Connect(addr)
	if err != nil {
		t.Skipf("HERALD_TEST_NATS=%s: %v", addr, err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := t.Context()
	// The server is shared: a stream and subjects of this test's own.
	id := strings.ToLower(herald.NewKeyID())
	stream, subj := "HERALDDOC"+strings.ToUpper(id), "heralddoc"+id
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subj + ".>"}}); err != nil {
		t.Skipf("HERALD_TEST_NATS: JetStream: %v", err)
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), stream)
	m, c := sourceDocServer(t, subj+".placed")
	fix := strings.NewReplacer("nats://127.0.0.1:4222", addr, `"ORDERS"`, `"`+stream+`"`, `"orders.>"`, `"`+subj+`.>"`)
	createdSource(t, runDocScript(t, m, fix.Replace(sourceDocExample(t, "source-nats", "nats://127.0.0.1:4222", `"ORDERS"`, `"orders.>"`))))
	msg := nats.NewMsg(subj + ".placed")
	msg.Data = []byte(`{"order": 1001}`)
	msg.Header.Set("Order-Key", "c-42")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message as an event", func() bool { return len(allEvents(t, c, subj+".placed")) > 0 })
	evs := allEvents(t, c, subj+".placed")
	if len(evs) != 1 || evs[0].Key != "c-42" || !sameJSON(evs[0].Payload, `{"order": 1001}`) {
		t.Fatalf("events: %+v", evs)
	}
}

func TestDocsSourcesAMQPExample(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_AMQP")
	if addr == "" {
		t.Skip("HERALD_TEST_AMQP is not set")
	}
	conn, err := amqp091.Dial(addr)
	if err != nil {
		t.Skipf("HERALD_TEST_AMQP: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := "heralddoc-orders-" + strings.ToLower(herald.NewKeyID())
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)
	m, c := sourceDocServer(t, "rabbit.orders")
	u, _ := url.Parse(addr)
	fix := strings.NewReplacer("amqp://guest:guest@127.0.0.1:5672/", u.String(), `"queue": "orders"`, fmt.Sprintf(`"queue": %q`, queue))
	createdSource(t, runDocScript(t, m, fix.Replace(sourceDocExample(t, "source-amqp", "amqp://guest:guest@127.0.0.1:5672/", `"queue": "orders"`))))
	if err := ch.PublishWithContext(t.Context(), "", queue, false, false, amqp091.Publishing{
		MessageId: "m-1001", ContentType: "application/json", Headers: amqp091.Table{"customer": "c-42"}, Body: []byte(`{"order": 1001}`),
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message as an event", func() bool { return len(allEvents(t, c, "rabbit.orders")) > 0 })
	evs := allEvents(t, c, "rabbit.orders")
	if len(evs) != 1 || evs[0].Key != "c-42" || evs[0].ContentType != "application/json" || !sameJSON(evs[0].Payload, `{"order": 1001}`) {
		t.Fatalf("events: %+v", evs)
	}
}
