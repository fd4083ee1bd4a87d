package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/schema"
)

// adminDo sends one request with the admin key and returns the status and body.
func adminDo(t *testing.T, m *Main, method, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, m.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func mustAdmin(t *testing.T, m *Main, method, path, contentType, body string, want int) string {
	t.Helper()
	status, got := adminDo(t, m, method, path, contentType, body)
	if status != want {
		t.Fatalf("%s %s = %d %s; want %d", method, path, status, got, want)
	}
	return got
}

const depositJSONSchema = `{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object",
	"properties":{"wallet_id":{"type":"string"},"amount":{"type":"number","minimum":0}},
	"required":["wallet_id","amount"]}`

func TestSchemaJSONValidatesPublishes(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	body := mustAdmin(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"json_schema","schema":`+depositJSONSchema+`}`, 201)
	var got struct {
		Version int    `json:"version"`
		Type    string `json:"type"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.Version != 1 || got.Type != "json_schema" {
		t.Fatalf("PUT schema answered %s", body)
	}
	mustAdmin(t, m, "POST", "/v1/topics/deposits/events", "application/json", `{"wallet_id":"w1","amount":20}`, 201)
	// The first violation is named: the field and what is wrong.
	status, p := adminDo(t, m, "POST", "/v1/topics/deposits/events", "application/json", `{"wallet_id":"w1","amount":"lots"}`)
	if status != 400 || !strings.Contains(p, `"field":"data.amount"`) || !strings.Contains(p, "/problems/invalid") {
		t.Fatalf("a bad amount = %d %s", status, p)
	}
	status, p = adminDo(t, m, "POST", "/v1/topics/deposits/events", "application/json", `{"amount":1}`)
	if status != 400 || !strings.Contains(p, "wallet_id") {
		t.Fatalf("a missing wallet_id = %d %s", status, p)
	}
	if status, p = adminDo(t, m, "POST", "/v1/topics/deposits/events", "text/plain", `not json`); status != 400 {
		t.Fatalf("a payload that is not JSON = %d %s", status, p)
	}
	// Batches are checked too, naming the event.
	status, p = adminDo(t, m, "POST", "/v1/topics/deposits/events:batch", "application/json",
		`{"events":[{"data":{"wallet_id":"a","amount":1}},{"data":{"wallet_id":"b","amount":-1}}]}`)
	if status != 400 || !strings.Contains(p, "events[1]") {
		t.Fatalf("a batch with a bad event = %d %s", status, p)
	}

	// Adding an optional property is compatible; requiring a new one is
	// not, unless forced.
	mustAdmin(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"json_schema","schema":{"type":"object","properties":{"wallet_id":{"type":"string"},"amount":{"type":"number"},"note":{"type":"string"}},"required":["wallet_id","amount"]}}`, 200)
	status, p = adminDo(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"json_schema","schema":{"type":"object","required":["wallet_id","amount","currency"]}}`)
	if status != 409 || !strings.Contains(p, "currency") {
		t.Fatalf("an incompatible schema = %d %s", status, p)
	}
	status, p = adminDo(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"json_schema","schema":{"type":"object","properties":{"amount":{"type":"number"}},"required":["amount"]}}`)
	if status != 409 || !strings.Contains(p, "wallet_id") {
		t.Fatalf("removing a required property = %d %s", status, p)
	}
	mustAdmin(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"json_schema","force":true,"schema":{"type":"object","required":["wallet_id","amount","currency"]}}`, 200)
	if status, p = adminDo(t, m, "POST", "/v1/topics/deposits/events", "application/json", `{"wallet_id":"w1","amount":20}`); status != 400 || !strings.Contains(p, "currency") {
		t.Fatalf("after the forced change = %d %s", status, p)
	}
	list := mustAdmin(t, m, "GET", "/v1/topics/deposits/schema/versions", "", "", 200)
	if strings.Count(list, `"version":`) != 3 {
		t.Fatalf("versions: %s", list)
	}
	if v1 := mustAdmin(t, m, "GET", "/v1/topics/deposits/schema?version=1", "", "", 200); !strings.Contains(v1, `"minimum":0`) {
		t.Fatalf("version 1: %s", v1)
	}
	// A bad schema, a remote reference and a reserved topic are refused.
	for _, bad := range []string{`{"type":"json_schema","schema":{"type":"nope"}}`,
		`{"type":"json_schema","schema":{"$ref":"file:///etc/passwd"}}`, `{"type":"xml"}`} {
		if status, p := adminDo(t, m, "PUT", "/v1/topics/other/schema", "application/json", bad); status != 400 {
			t.Fatalf("PUT %s = %d %s", bad, status, p)
		}
	}
	mustAdmin(t, m, "DELETE", "/v1/topics/deposits/schema", "", "", 204)
	mustAdmin(t, m, "POST", "/v1/topics/deposits/events", "text/plain", `anything`, 201)
}

const depositProto = `syntax = "proto3";
package deposits.v1;
message Deposit {
  string wallet_id = 1;
  double amount = 2;
}`

func TestSchemaProtobufValidatesPublishes(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	def, _ := json.Marshal(depositProto)
	mustAdmin(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"protobuf","message":"deposits.v1.Deposit","proto":`+string(def)+`}`, 201)

	c, err := schema.Compile(herald.Schema{Kind: herald.SchemaProtobuf, Format: "proto", Message: "deposits.v1.Deposit", Definition: []byte(depositProto)})
	if err != nil {
		t.Fatal(err)
	}
	msg := dynamicpb.NewMessage(c.Descriptor())
	msg.Set(c.Descriptor().Fields().ByName("wallet_id"), protoString("w1"))
	msg.Set(c.Descriptor().Fields().ByName("amount"), protoDouble(12.5))
	payload, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	mustAdmin(t, m, "POST", "/v1/topics/deposits/events", "application/protobuf", string(payload), 201)
	// format=json reads it back as JSON; without it, as base64.
	if list := mustAdmin(t, m, "GET", "/v1/topics/deposits/events?format=json", "", "", 200); !strings.Contains(list, `"wallet_id":"w1"`) {
		t.Fatalf("format=json: %s", list)
	}
	if list := mustAdmin(t, m, "GET", "/v1/topics/deposits/events", "", "", 200); !strings.Contains(list, `"data_base64"`) {
		t.Fatalf("without format: %s", list)
	}
	// The JSON form is accepted too.
	mustAdmin(t, m, "POST", "/v1/topics/deposits/events", "application/json", `{"wallet_id":"w2","amount":3}`, 201)
	// Bytes that are not a Deposit, and a field the message lacks.
	if status, p := adminDo(t, m, "POST", "/v1/topics/deposits/events", "application/protobuf", "\xff\xff\xff"); status != 400 {
		t.Fatalf("garbage = %d %s", status, p)
	}
	if status, p := adminDo(t, m, "POST", "/v1/topics/deposits/events", "application/protobuf", "\x18\x01"); status != 400 || !strings.Contains(p, "field number 3") {
		t.Fatalf("an unknown field = %d %s", status, p)
	}
	if status, p := adminDo(t, m, "POST", "/v1/topics/deposits/events", "application/json", `{"wallet":"w2"}`); status != 400 {
		t.Fatalf("bad JSON form = %d %s", status, p)
	}
	// A changed field type is incompatible; a new field is fine.
	changed, _ := json.Marshal(strings.Replace(depositProto, "double amount", "string amount", 1))
	if status, p := adminDo(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"protobuf","message":"deposits.v1.Deposit","proto":`+string(changed)+`}`); status != 409 {
		t.Fatalf("a changed field type = %d %s", status, p)
	}
	added, _ := json.Marshal(strings.Replace(depositProto, "double amount = 2;", "double amount = 2;\n  string note = 3;", 1))
	mustAdmin(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"protobuf","message":"deposits.v1.Deposit","proto":`+string(added)+`}`, 200)
	mustAdmin(t, m, "POST", "/v1/topics/deposits/events", "application/protobuf", "\x1a\x01x", 201)
	if status, p := adminDo(t, m, "PUT", "/v1/topics/x/schema", "application/json", `{"type":"protobuf","message":"a.B","proto":"syntax = \"proto3\"; message {"}`); status != 400 || !strings.Contains(p, `"field":"proto"`) {
		t.Fatalf("a .proto that does not compile = %d %s", status, p)
	}
}

func protoString(s string) protoreflect.Value  { return protoreflect.ValueOfString(s) }
func protoDouble(f float64) protoreflect.Value { return protoreflect.ValueOfFloat64(f) }

func protoInt64(n int64) protoreflect.Value { return protoreflect.ValueOfInt64(n) }
