package archive

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// decodedValues is what scanPayload must agree with: the payload decoded
// with encoding/json into a map (the writer's first way, a quarter of its
// CPU), each path's scalar read out of it.
func decodedValues(payload []byte, paths fieldPaths) []string {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if dec.Decode(&doc) != nil {
		doc = nil
	}
	vals := make([]string, len(paths))
	for i, p := range paths {
		var v any = doc
		for _, part := range p {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		switch x := v.(type) {
		case string:
			vals[i] = x
		case json.Number:
			vals[i] = x.String()
		case bool:
			vals[i] = strconv.FormatBool(x)
		}
	}
	return vals
}

var scanPaths = newFieldPaths([]PartitionKey{{Field: "org.id"}, {Field: "n"}, {Field: "a.b.c"}, {Field: "s"}, {Field: "org"}, {Field: "a.b"}})

var scanSeeds = []string{
	`{"org":{"id":"acme"},"n":12.50,"a":{"b":{"c":true}},"s":"x\/y"}`,
	`{"org":{"id":7},"n":-1e3,"a":{"b":{"c":false}},"s":null}`,
	`{"org":"acme","n":[1],"a":{"b":1},"s":{}}`,
	`{"org":{"id":"a"},"org":{"name":"x"}}`,
	`{"org":{"id":"a"},"org":"b"}`,
	`{"s":"a","s":null}`,
	`{"s":"\u00e9\ud83d\ude00\n","n":0}`,
	`{"s":"\ud800"}`,
	"{\"s\":\"\xff\xfe\"}",
	"{\"s\xff\":1}",
	`{"o\u0072g":{"id":"esc"}}`,
	`  {"n" : 1 , "s" : "x" }  `,
	`{"n":1} trailing`,
	`{"n":1}{"n":2}`,
	`{"n":01}`, `{"n":1.}`, `{"n":-}`, `{"n":1e}`, `{"n":.5}`, `{"n":1E+2}`,
	`{"n":tru}`, `{"n":true`, `{"n":"x}`, "{\"n\":\"a\tb\"}", `{"n":"\x"}`, `{"n":"\u12"}`,
	`{"n":1,}`, `{,"n":1}`, `{"n" 1}`, `{n:1}`, `[1,2]`, `[1,]`, `"str"`, `12`, `null`, ``, ` `,
	`{"a":{"b":{"c":[{"d":"deep"}],"x":{}}}}`, `{"a":{"b":{"c":"1","c":{"d":1}}}}`,
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	`{"x":` + strings.Repeat(`{"x":`, 9998) + `1` + strings.Repeat("}", 9999),
	`{"x":` + strings.Repeat(`{"x":`, 9999) + `1` + strings.Repeat("}", 10000),
}

// TestScanPayload checks scanPayload against encoding/json on the seeds
// (FuzzScanPayload goes further): the same partition values, and the
// same verdict as json.Valid.
func TestScanPayload(t *testing.T) {
	t.Parallel()
	for _, seed := range scanSeeds {
		checkScan(t, []byte(seed))
	}
}

func FuzzScanPayload(f *testing.F) {
	for _, seed := range scanSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, payload []byte) { checkScan(t, payload) })
}

func checkScan(t *testing.T, payload []byte) {
	t.Helper()
	vals, valid := scanPayload(payload, scanPaths)
	short := payload
	if len(short) > 80 {
		short = short[:80]
	}
	if want := decodedValues(payload, scanPaths); strings.Join(vals, "|") != strings.Join(want, "|") {
		t.Errorf("%q: values %q, encoding/json gives %q", short, vals, want)
	}
	if want := json.Valid(payload); valid != want {
		t.Errorf("%q: valid %v, json.Valid %v", short, valid, want)
	}
}
