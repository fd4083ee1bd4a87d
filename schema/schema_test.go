package schema

import (
	"encoding/json"
	"testing"

	"github.com/heraldhq/herald"
)

func mustCompile(t *testing.T, s herald.Schema) *Compiled {
	t.Helper()
	c, err := Compile(s)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return c
}

func TestJSONFirstViolation(t *testing.T) {
	c := mustCompile(t, herald.Schema{Topic: "t", Kind: herald.SchemaJSON, Definition: []byte(
		`{"type":"object","properties":{"items":{"type":"array","items":{"type":"object","required":["id"]}}}}`)})
	cases := []struct{ payload, field string }{
		{`{"items":[{"id":1}]}`, ""},
		{`{"items":[{"id":1},{"x":2}]}`, "data.items[1]"},
		{`{"items":"no"}`, "data.items"},
		{`[]`, "data"},
		{`{`, "data"},
	}
	for _, tc := range cases {
		err := c.Validate([]byte(tc.payload), "application/json")
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.payload, err)
			}
			continue
		}
		he, ok := err.(*herald.Error)
		if !ok || he.Code != herald.CodeInvalid || he.Field != tc.field {
			t.Errorf("%s: %v (field %q), want field %q", tc.payload, err, fieldOf(err), tc.field)
		}
	}
}

func fieldOf(err error) string {
	if he, ok := err.(*herald.Error); ok {
		return he.Field
	}
	return ""
}

func TestCompatible(t *testing.T) {
	js := func(def string) *Compiled {
		return mustCompile(t, herald.Schema{Kind: herald.SchemaJSON, Definition: []byte(def)})
	}
	pb := func(body string) *Compiled {
		return mustCompile(t, herald.Schema{Kind: herald.SchemaProtobuf, Format: FormatProto, Message: "p.M",
			Definition: []byte("syntax = \"proto2\"; package p; message M { " + body + " }")})
	}
	base := js(`{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}`)
	proto := pb(`required string a = 1; optional int64 b = 2;`)
	cases := []struct {
		name       string
		prev, next *Compiled
		ok         bool
	}{
		{"json same", base, base, true},
		{"json optional added", base, js(`{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}},"required":["a"]}`), true},
		{"json required added", base, js(`{"type":"object","properties":{"a":{"type":"string"}},"required":["a","b"]}`), false},
		{"json required removed", base, js(`{"type":"object","properties":{}}`), false},
		{"json type changed", base, js(`{"type":"object","properties":{"a":{"type":"number"}},"required":["a"]}`), false},
		{"proto field added", proto, pb(`required string a = 1; optional int64 b = 2; optional string c = 3;`), true},
		{"proto optional removed", proto, pb(`required string a = 1;`), true},
		{"proto required removed", proto, pb(`optional int64 b = 2;`), false},
		{"proto new required", proto, pb(`required string a = 1; optional int64 b = 2; required string c = 3;`), false},
		{"proto type changed", proto, pb(`required string a = 1; optional string b = 2;`), false},
		{"kind changed", base, proto, false},
	}
	for _, tc := range cases {
		err := Compatible(tc.prev, tc.next)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !herald.IsCode(err, herald.CodeConflict) {
			t.Errorf("%s: code of %v, want conflict", tc.name, err)
		}
	}
}

func TestProtoRequiredAndJSON(t *testing.T) {
	c := mustCompile(t, herald.Schema{Kind: herald.SchemaProtobuf, Message: "p.M",
		Definition: []byte(`syntax = "proto2"; package p; message M { required string wallet_id = 1; optional double amount = 2; }`)})
	if err := c.Validate([]byte{0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}, "application/protobuf"); err == nil {
		t.Fatal("a message without its required field was accepted")
	}
	payload := []byte{0x0a, 0x02, 'w', '1', 0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}
	if err := c.Validate(payload, "application/protobuf"); err != nil {
		t.Fatal(err)
	}
	js, err := c.JSON(payload, "application/protobuf")
	var got map[string]any
	if err != nil || json.Unmarshal(js, &got) != nil || got["wallet_id"] != "w1" || got["amount"] != 1.0 {
		t.Fatalf("JSON = %s, %v", js, err)
	}
}
