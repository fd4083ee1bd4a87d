package archive

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/schema"
)

// topicSchemas are compiled schemas by topic, as the server's schema
// registry gives them.
type topicSchemas map[string]*schema.Compiled

func (s topicSchemas) Get(ctx context.Context, topic string) (*schema.Compiled, error) {
	return s[topic], nil
}

const ordersSchema = `{
  "type": "object",
  "properties": {
    "org": {"type": "object", "properties": {"id": {"type": "string"}}},
    "status": {"type": "integer"},
    "amount": {"type": ["number", "null"]},
    "paid": {"type": "boolean"},
    "at": {"type": "string", "format": "date-time"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}},
    "extra": {}
  },
  "$defs": {"line": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}}
}`

const paymentsProto = `syntax = "proto3";
package pay.v1;
import "google/protobuf/timestamp.proto";
message Payment {
  enum State { STATE_UNSPECIFIED = 0; SETTLED = 1; }
  message Line { string sku = 1; uint32 qty = 2; }
  string id = 1;
  int64 cents = 2;
  State state = 3;
  google.protobuf.Timestamp at = 4;
  bytes ref = 5;
  map<string, string> labels = 6;
  repeated Line lines = 7;
}
`

// typedSchemas compiles the test's schemas: "orders" a JSON Schema,
// "payments" a protobuf message.
func typedSchemas(t testing.TB) topicSchemas {
	t.Helper()
	js, err := schema.Compile(herald.Schema{Topic: "orders", Version: 1, Kind: herald.SchemaJSON, Definition: []byte(ordersSchema)})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := schema.Compile(herald.Schema{Topic: "payments", Version: 3, Kind: herald.SchemaProtobuf, Format: schema.FormatProto,
		Message: "pay.v1.Payment", Definition: []byte(paymentsProto)})
	if err != nil {
		t.Fatal(err)
	}
	return topicSchemas{"orders": js, "payments": pb}
}

// protoPayload encodes a Payment given in its JSON form as binary protobuf.
func protoPayload(t testing.TB, c *schema.Compiled, js string) []byte {
	t.Helper()
	m := dynamicpb.NewMessage(c.Descriptor())
	if err := protojson.Unmarshal([]byte(js), m); err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// typedEvents are events of the typed topics (and one without a schema),
// one of them not matching its schema (published before it).
func typedEvents(t testing.TB, schemas topicSchemas) []*herald.Event {
	orders := []string{
		`{"org":{"id":"acme"},"status":200,"amount":12.5,"paid":true,"at":"2026-12-07T15:01:02.5Z","tags":["a","b"],"lines":[{"sku":"x1","qty":2},{"sku":"y2"}],"extra":{"k":[1,2]},"more":"kept in data"}`,
		`{"org":{"id":"acme"},"status":404,"amount":null}`,
		`{"status":"not a number","paid":"yes"}`,
	}
	var evs []*herald.Event
	for i, p := range orders {
		evs = append(evs, ev("orders", int64(i+1), t0.Add(time.Duration(i)*time.Minute), p))
	}
	pay := ev("payments", 1, t0.Add(5*time.Minute), "")
	pay.ContentType = "application/x-protobuf"
	pay.Payload = protoPayload(t, schemas["payments"], `{"id":"p1","cents":"9007199254740993","state":"SETTLED","at":"2026-12-07T15:05:00Z","ref":"AAEC","labels":{"a":"b"},"lines":[{"sku":"z","qty":3}]}`)
	evs = append(evs, pay, ev("plain", 1, t0.Add(6*time.Minute), `{"org":{"id":"acme"},"n":1}`))
	return evs
}

// TestParquetSchemaColumns writes topics with a JSON Schema and a protobuf
// schema to Parquet and checks the payload column's types and values,
// that a payload not matching its schema leaves nulls (its data whole),
// and that Herald's query reads the files as any other.
func TestParquetSchemaColumns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	schemas := typedSchemas(t)
	ch := New(ChannelConfig{Dir: dir, Schemas: schemas}, nil, nil)
	config := validConfig(t, ch, `{"format":"parquet","destination":{"type":"local"}}`)
	s := open(t, ch, config)
	evs := typedEvents(t, schemas)
	allDelivered(t, deliver(t, s, evs...))

	read := func(topic string) (*parquet.Schema, []map[string]any) {
		t.Helper()
		files, _ := filepath.Glob(filepath.Join(dir, "year=2026", "*", "*", "*", topic+"-*.parquet"))
		if len(files) != 1 {
			t.Fatalf("%s files: %v", topic, files)
		}
		data, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		f, err := parquet.OpenFile(strings.NewReader(string(data)), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		r := parquet.NewGenericReader[map[string]any](f, f.Schema())
		rows := make([]map[string]any, f.NumRows())
		for i := range rows {
			rows[i] = map[string]any{}
		}
		if n, err := r.Read(rows); n != len(rows) {
			t.Fatalf("read %d of %d rows: %v", n, len(rows), err)
		}
		return f.Schema(), rows
	}
	// (parquet-go reads timestamps back as nanoseconds and bytes as text.)
	payloadOf := func(row map[string]any) string {
		b, _ := json.Marshal(row[PayloadColumn])
		return string(b)
	}

	sch, rows := read("orders")
	wantCols := []string{"id", "topic", "seq", "time", "type", "key", "idempotency_key", "content_type", "headers", "data", "data_base64", "payload"}
	var cols []string
	for _, f := range sch.Fields() {
		cols = append(cols, f.Name())
	}
	if strings.Join(cols, " ") != strings.Join(wantCols, " ") {
		t.Fatalf("columns %v, want %v", cols, wantCols)
	}
	for _, want := range []string{"optional int64 status (INT(64,true))", "optional double amount", "optional boolean paid",
		"optional int64 at (TIMESTAMP(isAdjustedToUTC=true,unit=NANOS))", "optional binary extra (STRING)"} {
		if !strings.Contains(sch.String(), want) {
			t.Errorf("orders schema has no %q:\n%s", want, sch)
		}
	}
	for i, want := range []string{
		`{"amount":12.5,"at":1796655662500000000,"extra":"{\"k\":[1,2]}","lines":[{"qty":2,"sku":"x1"},{"qty":null,"sku":"y2"}],"org":{"id":"acme"},"paid":true,"status":200,"tags":["a","b"]}`,
		`{"amount":null,"at":null,"extra":null,"lines":null,"org":{"id":"acme"},"paid":null,"status":404,"tags":null}`,
		`{"amount":null,"at":null,"extra":null,"lines":null,"org":null,"paid":null,"status":null,"tags":null}`,
	} {
		if got := payloadOf(rows[i]); got != want {
			t.Errorf("orders row %d payload\n got %s\nwant %s", i, got, want)
		}
	}

	sch, rows = read("payments")
	for _, want := range []string{"optional binary id (STRING)", "optional int64 cents (INT(64,true))", "optional binary state (STRING)",
		"optional binary ref;", "optional binary labels (STRING)"} {
		if !strings.Contains(sch.String(), want) {
			t.Errorf("payments schema has no %q:\n%s", want, sch)
		}
	}
	if got, want := payloadOf(rows[0]), `{"at":1796655900000000000,"cents":9007199254740993,"id":"p1","labels":"{\"a\":\"b\"}","lines":[{"qty":3,"sku":"z"}],"ref":"\u0000\u0001\u0002","state":"SETTLED"}`; got != want {
		t.Errorf("payments payload\n got %s\nwant %s", got, want)
	}

	sch, _ = read("plain")
	if sch.Lookup(PayloadColumn); len(sch.Fields()) != len(wantCols)-1 {
		t.Errorf("a topic without a schema has %d columns, want %d", len(sch.Fields()), len(wantCols)-1)
	}

	// Herald reads the files as any other: every event, payloads whole.
	hits, _ := query(t, ch, config, Query{From: t0.Add(-time.Hour), To: t0.Add(time.Hour)})
	if len(hits) != len(evs) {
		t.Fatalf("query found %d events, want %d", len(hits), len(evs))
	}
	for i, h := range hits {
		if string(h.Event.Payload) != string(evs[i].Payload) {
			t.Errorf("event %s/%d payload %q, want %q", h.Event.Topic, h.Event.Seq, h.Event.Payload, evs[i].Payload)
		}
	}
	m, err := readManifest(t.Context(), s.objs, "year=2026/month=12/day=07/hour=15/")
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for _, f := range m.Files {
		versions = append(versions, fmt.Sprintf("%s:%d", f.Topic, f.SchemaVersion))
	}
	if got := strings.Join(versions, " "); got != "orders:1 payments:3 plain:0" {
		t.Errorf("manifest schema versions: %s", got)
	}
}
