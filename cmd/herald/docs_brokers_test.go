package main

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqpgo "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel/amqp"
	"github.com/heraldhq/herald/channel/mqtt"
	"github.com/heraldhq/herald/channel/nats"
	"github.com/heraldhq/herald/client"
)

// The NATS, AMQP and MQTT curl examples of docs/channels.md run from the
// page itself against the test brokers; the test changes only the broker
// address and, as the brokers are shared, the names it publishes to.

// docServer starts a server with the topic the examples use.
func docServer(t *testing.T) *Main {
	t.Helper()
	m, _ := testServer(t, t.TempDir(), nil)
	if _, _, err := adminClient(m).PutTopic(t.Context(), "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	return m
}

// docExample returns the named example, failing if it no longer holds
// every one of the texts the test replaces.
func docExample(t *testing.T, name string, holds ...string) string {
	t.Helper()
	ex := docExamples(t, channelsDoc)[name]
	for _, h := range holds {
		if !strings.Contains(ex, h) {
			t.Fatalf("the %s example no longer holds %s", name, h)
		}
	}
	return ex
}

func TestDocsChannelsNATSExample(t *testing.T) {
	t.Parallel()
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
	stream, prefix := "HERALDDOC_"+id, "heralddoc"+strings.ToLower(id)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(context.Background(), stream) }()
	m := docServer(t)
	sub := docExample(t, "nats-subscribe", "nats://localhost:4222", `"herald.{topic}.{key}"`, `"HERALD"`)
	out := runDocScript(t, m, strings.NewReplacer("nats://localhost:4222", u, `"herald.{topic}.{key}"`, `"`+prefix+`.{topic}.{key}"`, `"HERALD"`, `"`+stream+`"`).Replace(sub))
	if !strings.Contains(out, `"state":"active"`) || !strings.Contains(out, `"channel":"nats"`) {
		t.Fatalf("the subscribe example answered %s", out)
	}
	runDocScript(t, m, docExample(t, "kafka-publish")) // the page publishes once for every channel
	eventually(t, "the message of the example in the stream", func() bool {
		msg, err := st.GetLastMsgForSubject(t.Context(), prefix+".deposits.wallet-7")
		return err == nil && string(msg.Data) == `{"wallet":"wallet-7","amount":250}` && msg.Header.Get("Herald-Event-Type") == "deposit.created"
	})
	// The CLI example: a second subscription, and an event both deliver.
	cli := docExample(t, "nats-cli", "nats://localhost:4222", `"herald.{topic}.{key}"`, `"HERALD"`)
	if out := runDocCLI(t, m, cli, strings.NewReplacer("nats://localhost:4222", u, `"herald.{topic}.{key}"`, `"`+prefix+`.{topic}.{key}"`, `"HERALD"`, `"`+stream+`"`)); !strings.Contains(out, "nats") {
		t.Fatalf("the CLI example printed %s", out)
	}
	eventually(t, "the message of the CLI example in the stream", func() bool {
		msg, err := st.GetLastMsgForSubject(t.Context(), prefix+".deposits.wallet-7")
		return err == nil && string(msg.Data) == `{"wallet":"wallet-7","amount":300}`
	})
}

func TestDocsChannelsAMQPExample(t *testing.T) {
	t.Parallel()
	u := os.Getenv("HERALD_TEST_AMQP")
	if u == "" {
		t.Skip("HERALD_TEST_AMQP is not set")
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
	exchange, queue := "heralddoc.events."+id, "heralddoc.deposits."+id
	if err := ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ch.ExchangeDelete(exchange, false, false) }()
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = ch.QueueDelete(queue, false, false, false) }()
	if err := ch.QueueBind(queue, "deposits.#", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u)
	m := docServer(t)
	sub := docExample(t, "amqp-subscribe", "localhost:5672", `"events"`)
	out := runDocScript(t, m, strings.NewReplacer("localhost:5672", pu.Host, `"events"`, `"`+exchange+`"`).Replace(sub))
	if !strings.Contains(out, `"state":"active"`) || !strings.Contains(out, `"user":"guest"`) || strings.Contains(out, `"password"`) {
		t.Fatalf("the subscribe example answered %s", out)
	}
	runDocScript(t, m, docExample(t, "kafka-publish"))
	eventually(t, "the message of the example in the queue", func() bool {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return false
		}
		if d.RoutingKey != "deposits.wallet-7" || string(d.Body) != `{"wallet":"wallet-7","amount":250}` || d.Type != "deposit.created" {
			t.Errorf("message: routing key %q, body %q, type %q", d.RoutingKey, d.Body, d.Type)
		}
		return true
	})
	// The CLI example: a second subscription, and an event both deliver.
	cli := docExample(t, "amqp-cli", "localhost:5672", `"events"`)
	if out := runDocCLI(t, m, cli, strings.NewReplacer("localhost:5672", pu.Host, `"events"`, `"`+exchange+`"`)); !strings.Contains(out, "amqp") {
		t.Fatalf("the CLI example printed %s", out)
	}
	copies := 0
	eventually(t, "the CLI example's event from both subscriptions", func() bool {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok && string(d.Body) == `{"wallet":"wallet-7","amount":300}` {
			copies++
		}
		return copies == 2
	})
}

func TestDocsChannelsMQTTExample(t *testing.T) {
	t.Parallel()
	u := os.Getenv("HERALD_TEST_MQTT")
	if u == "" {
		t.Skip("HERALD_TEST_MQTT is not set")
	}
	prefix := "heralddoc-" + strings.ToLower(herald.NewKeyID())
	got := make(chan paho.Message, 4)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(u).SetClientID(prefix).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Skipf("HERALD_TEST_MQTT=%s: %v", u, tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Subscribe(prefix+"/#", 1, func(_ paho.Client, msg paho.Message) { got <- msg }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pu, _ := url.Parse(u)
	m := docServer(t)
	sub := docExample(t, "mqtt-subscribe", "localhost:1883", `"herald/{topic}/{key}"`)
	out := runDocScript(t, m, strings.NewReplacer("localhost:1883", pu.Host, `"herald/{topic}/{key}"`, `"`+prefix+`/{topic}/{key}"`).Replace(sub))
	if !strings.Contains(out, `"state":"active"`) || !strings.Contains(out, `"qos":1`) {
		t.Fatalf("the subscribe example answered %s", out)
	}
	runDocScript(t, m, docExample(t, "kafka-publish"))
	select {
	case msg := <-got:
		var e struct {
			ID, Subject, Type string
			Data              json.RawMessage
		}
		if err := json.Unmarshal(msg.Payload(), &e); err != nil {
			t.Fatalf("not a CloudEvent: %q", msg.Payload())
		}
		if msg.Topic() != prefix+"/deposits/wallet-7" || e.Subject != "wallet-7" || e.Type != "deposit.created" || string(e.Data) != `{"wallet":"wallet-7","amount":250}` || e.ID == "" {
			t.Errorf("message on %q: %s", msg.Topic(), msg.Payload())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no message within 30s")
	}
	// The CLI example: a second subscription, and an event both deliver.
	cli := docExample(t, "mqtt-cli", "localhost:1883", `"herald/{topic}/{key}"`)
	if out := runDocCLI(t, m, cli, strings.NewReplacer("localhost:1883", pu.Host, `"herald/{topic}/{key}"`, `"`+prefix+`/{topic}/{key}"`)); !strings.Contains(out, "mqtt") {
		t.Fatalf("the CLI example printed %s", out)
	}
	for copies := 0; copies < 2; {
		select {
		case msg := <-got:
			if strings.Contains(string(msg.Payload()), `"amount":300`) {
				copies++
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of 2 copies of the CLI example's event within 30s", copies)
		}
	}
}

// TestOpenAPIBrokerChannelConfigs checks that the OpenAPI schemas of the
// nats, amqp and mqtt configs list exactly the members the channels read,
// and mark their secrets write-only.
func TestOpenAPIBrokerChannelConfigs(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					WriteOnly bool `json:"writeOnly"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		schema  string
		typ     reflect.Type
		secrets []string
	}{
		{"NatsConfig", reflect.TypeFor[nats.Config](), []string{"creds", "password", "token"}},
		{"AmqpConfig", reflect.TypeFor[amqp.Config](), []string{"password"}},
		{"MqttConfig", reflect.TypeFor[mqtt.Config](), []string{"password"}},
	} {
		var got, writeOnly []string
		for p, s := range doc.Components.Schemas[c.schema].Properties {
			got = append(got, p)
			if s.WriteOnly {
				writeOnly = append(writeOnly, p)
			}
		}
		slices.Sort(got)
		slices.Sort(writeOnly)
		if want := jsonMembers(c.typ); !slices.Equal(got, want) {
			t.Errorf("%s documents %v; the channel reads %v", c.schema, got, want)
		}
		if !slices.Equal(writeOnly, c.secrets) {
			t.Errorf("%s marks %v write-only; the secrets are %v", c.schema, writeOnly, c.secrets)
		}
	}
}
