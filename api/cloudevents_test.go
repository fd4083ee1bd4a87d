package api

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"reflect"
	"testing"

	"github.com/heraldhq/herald"
)

func TestParseStructuredCloudEvent(t *testing.T) {
	// ce completes a body and its event with the required attributes.
	const required = `"specversion":"1.0","id":"1","source":"/s","type":"t"`
	ce := func(e herald.Event) herald.Event {
		e.ID, e.Type = cmp.Or(e.ID, "1"), cmp.Or(e.Type, "t")
		h := map[string]string{"ce-specversion": "1.0", "ce-source": "/s"}
		maps.Copy(h, e.Headers)
		e.Headers = h
		return e
	}
	cases := []struct {
		name    string
		body    string
		want    herald.Event
		errCode herald.Code
		field   string
	}{
		{name: "full", body: `{"specversion":"1.0","id":"1","source":"/s","type":"t.x","subject":"k","data":{"a":[1, 2]}}`,
			want: herald.Event{ID: "1", Type: "t.x", Key: "k", ContentType: "application/json", Payload: []byte(`{"a":[1, 2]}`),
				Headers: map[string]string{"ce-specversion": "1.0", "ce-source": "/s"}}},
		{name: "datacontenttype names the data", body: `{` + required + `,"datacontenttype":"application/vnd.x+json","data":"s"}`,
			want: ce(herald.Event{ContentType: "application/vnd.x+json", Payload: []byte(`"s"`)})},
		{name: "base64", body: `{` + required + `,"data_base64":"AAEC"}`,
			want: ce(herald.Event{ContentType: "application/octet-stream", Payload: []byte{0, 1, 2}})},
		{name: "base64 unpadded", body: `{` + required + `,"data_base64":"AAE","datacontenttype":"x/y"}`,
			want: ce(herald.Event{ContentType: "x/y", Payload: []byte{0, 1}})},
		{name: "no data", body: `{` + required + `}`, want: ce(herald.Event{ContentType: "application/octet-stream", Payload: []byte{}})},
		{name: "null data is no data", body: `{` + required + `,"data":null}`, want: ce(herald.Event{ContentType: "application/octet-stream", Payload: []byte{}})},
		{name: "extensions keep JSON text", body: `{` + required + `,"n":1.50,"b":true,"o":{"k": "v"},"s":"x","z":null}`,
			want: ce(herald.Event{ContentType: "application/octet-stream", Payload: []byte{},
				Headers: map[string]string{"ce-n": "1.50", "ce-b": "true", "ce-o": `{"k":"v"}`, "ce-s": "x"}})},
		{name: "both data forms", body: `{` + required + `,"data":1,"data_base64":"AA=="}`, errCode: herald.CodeInvalid, field: "data"},
		{name: "id not a string", body: `{"id":1}`, errCode: herald.CodeInvalid, field: "id"},
		{name: "subject not a string", body: `{"subject":{}}`, errCode: herald.CodeInvalid, field: "subject"},
		{name: "datacontenttype not a string", body: `{"datacontenttype":5}`, errCode: herald.CodeInvalid, field: "datacontenttype"},
		{name: "data_base64 not a string", body: `{"data_base64":5}`, errCode: herald.CodeInvalid, field: "data_base64"},
		{name: "bad base64", body: `{` + required + `,"data_base64":"!!!!"}`, errCode: herald.CodeInvalid, field: "data_base64"},
		{name: "upper-case attribute", body: `{"Source":"x"}`, errCode: herald.CodeInvalid, field: "Source"},
		{name: "no required attributes", body: `{"data":1}`, errCode: herald.CodeInvalid, field: "specversion"},
		{name: "array", body: `[]`, errCode: herald.CodeInvalid},
		{name: "null", body: `null`, errCode: herald.CodeInvalid},
		{name: "empty", body: ``, errCode: herald.CodeInvalid},
		{name: "two values", body: `{} {}`, errCode: herald.CodeInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStructuredCloudEvent([]byte(c.body))
			if c.errCode != "" {
				e, ok := errors.AsType[*herald.Error](err)
				if !ok || e.Code != c.errCode || e.Field != c.field {
					t.Fatalf("err %v (%#v), want code %s field %q", err, e, c.errCode, c.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, c.want) {
				t.Errorf("got %+v\nwant %+v", *got, c.want)
			}
		})
	}
}

func TestApplyBinaryCloudEvent(t *testing.T) {
	h := http.Header{}
	h.Set("ce-id", "id%2F1")
	h.Set("ce-type", "t")
	h.Set("ce-subject", "s%C3%A9")
	h.Set("CE-SOURCE", "/src")
	h.Set("ce-specversion", "1.0")
	h.Set("ce-myext", "%22q%22")
	h.Set("Content-Type", "text/plain")
	e := &herald.Event{}
	found, err := applyBinaryCloudEvent(h, e)
	if err != nil || !found {
		t.Fatalf("found %v err %v", found, err)
	}
	want := herald.Event{ID: "id/1", Type: "t", Key: "sé", Headers: map[string]string{"ce-specversion": "1.0", "ce-source": "/src", "ce-myext": `"q"`}}
	if !reflect.DeepEqual(*e, want) {
		t.Errorf("got %+v, want %+v", *e, want)
	}
	if found, _ := applyBinaryCloudEvent(http.Header{"X-Other": {"1"}}, &herald.Event{}); found {
		t.Error("found a CloudEvent in plain headers")
	}
}

func TestRenderPayload(t *testing.T) {
	cases := []struct {
		ctype   string
		payload string
		inline  bool
	}{
		{"application/json", `{"a":1}`, true},
		{"APPLICATION/JSON; charset=utf-8", `1`, true},
		{"application/cloudevents+json", `[]`, true},
		{"application/json", ``, false},
		{"application/json", `{`, false},
		{"application/json", "\"\xc3\x28\"", false},
		{"text/plain", `{"a":1}`, false},
		{"application/jsonx", `{}`, false},
		{"", `{}`, false},
		{"not a media type;;", `{}`, false},
	}
	for _, c := range cases {
		data, b64 := renderPayload(c.ctype, []byte(c.payload))
		if c.inline {
			if b64 != nil || !bytes.Equal(data, []byte(c.payload)) {
				t.Errorf("%q %q: want inline, got data %q b64 %v", c.ctype, c.payload, data, b64)
			}
			continue
		}
		if data != nil || b64 == nil {
			t.Errorf("%q %q: want base64, got data %q", c.ctype, c.payload, data)
		}
	}
	// Inline JSON keeps its meaning in the event document.
	ev := toEventJSON(&herald.Event{ID: "i", Topic: "t", Seq: 1, ContentType: "application/json", Payload: []byte(` {"k": "<v>"} `)})
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ Data map[string]string }
	if err := json.Unmarshal(out, &back); err != nil || back.Data["k"] != "<v>" {
		t.Errorf("inline data round trip: %s (%v)", out, err)
	}
}
