package client_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// The types marshal back to the API's JSON, which `herald --output json`
// prints: decoding a document of the wire contract and encoding it again
// must give the same JSON. (Durations are in herald.FormatDuration form,
// as the server writes them.)
func TestWireRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		into func() any
		doc  string
	}{
		{"topic", func() any { return new(client.Topic) },
			`{"name":"orders.created","retention":"7d","max_event_bytes":262144,"dedup_window":"1h30m",
			  "created_at":"2025-01-02T03:04:05.678Z","updated_at":"2025-01-03T00:00:00.000Z",
			  "head_seq":12,"first_seq":3,"event_count":10}`},
		{"topic page", func() any { return new(client.TopicPage) },
			`{"topics":[{"name":"a","retention":"1h30m","max_event_bytes":1,"dedup_window":"1d",
			  "created_at":"2025-01-02T03:04:05.000Z","updated_at":"2025-01-02T03:04:05.000Z",
			  "head_seq":0,"first_seq":0,"event_count":0}],"next_cursor":"YQ"}`},
		{"JSON event", func() any { return new(client.Event) },
			`{"id":"0190a","topic":"orders","seq":4,"type":"order.created","key":"c-1","idempotency_key":"k",
			  "content_type":"application/json","headers":{"X-Tenant":"t1"},"time":"2025-01-02T03:04:05.006Z",
			  "data":{"total":12.5,"items":[1,2]}}`},
		{"binary event", func() any { return new(client.Event) },
			`{"id":"0190b","topic":"orders","seq":5,"content_type":"application/octet-stream",
			  "time":"2025-01-02T03:04:05.006Z","data_base64":"AAEC/w=="}`},
		{"empty payload", func() any { return new(client.Event) },
			`{"id":"0190c","topic":"orders","seq":6,"content_type":"application/json",
			  "time":"2025-01-02T03:04:05.006Z","data_base64":""}`},
		{"JSON null payload", func() any { return new(client.Event) },
			`{"id":"0190d","topic":"orders","seq":7,"content_type":"application/cloudevents+json",
			  "time":"2025-01-02T03:04:05.006Z","data":null}`},
		{"event page", func() any { return new(client.EventPage) },
			`{"events":[],"next_after_seq":9}`},
		{"key", func() any { return new(client.Key) },
			`{"id":"key_1","name":"ci","scopes":["publish:orders.>"],"prefix":"hrld_abc",
			  "created_at":"2025-01-02T03:04:05.000Z","expires_at":"2025-02-01T03:04:05.000Z"}`},
		{"created key keeps its secret", func() any { return new(client.CreatedKey) },
			`{"id":"key_2","name":"admin","scopes":["admin"],"prefix":"hrld_xyz",
			  "created_at":"2025-01-02T03:04:05.000Z","secret":"hrld_xyzsecret"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.into()
			if err := json.Unmarshal([]byte(tt.doc), v); err != nil {
				t.Fatalf("decode: %v", err)
			}
			out, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			var want, got any
			_ = json.Unmarshal([]byte(tt.doc), &want)
			_ = json.Unmarshal(out, &got)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip changed the document\n got %s\nwant %s", out, tt.doc)
			}
		})
	}
}

func TestEventPayloadDecoding(t *testing.T) {
	tests := []struct {
		doc  string
		want []byte
	}{
		{`{"content_type":"application/json","data":{"a": [1, 2]}}`, []byte(`{"a": [1, 2]}`)},
		{`{"content_type":"application/json","data":null}`, []byte("null")},
		{`{"content_type":"text/plain","data_base64":"aGVsbG8="}`, []byte("hello")},
		{`{"content_type":"text/plain","data_base64":""}`, []byte{}},
	}
	for _, tt := range tests {
		var e client.Event
		if err := json.Unmarshal([]byte(tt.doc), &e); err != nil {
			t.Fatalf("%s: %v", tt.doc, err)
		}
		if !bytes.Equal(e.Payload, tt.want) {
			t.Errorf("%s: payload %q, want %q", tt.doc, e.Payload, tt.want)
		}
	}

	for _, bad := range []string{
		`{"data":1,"data_base64":"AA=="}`,
		`{"data_base64":"not base64!"}`,
		`{"time":"yesterday"}`,
	} {
		var e client.Event
		if err := json.Unmarshal([]byte(bad), &e); err == nil {
			t.Errorf("%s: decoded without error", bad)
		}
	}
}

// A JSON content type with bytes that are not JSON must not be written
// inline, which would make the document invalid.
func TestEventInvalidJSONPayloadGoesBase64(t *testing.T) {
	e := client.Event{ID: "x", ContentType: "application/json", Payload: []byte("{not json"), Time: time.Unix(0, 0)}
	out, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back client.Event
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if !bytes.Equal(back.Payload, e.Payload) || !bytes.Contains(out, []byte(`"data_base64"`)) {
		t.Errorf("encoded %s; payload back %q", out, back.Payload)
	}
}

// With an encoder that does not escape HTML, as the CLI uses, scopes and
// payloads keep their '>' and '<' instead of \u003e and \u003c.
func TestMarshalKeepsCharactersReadable(t *testing.T) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	err := enc.Encode([]any{
		client.Key{Scopes: []string{"publish:orders.>"}},
		client.Event{ContentType: "application/json", Payload: []byte(`{"html":"<b>"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"publish:orders.>"`, `"data":{"html":"<b>"}`} {
		if !bytes.Contains(b.Bytes(), []byte(want)) {
			t.Errorf("output lacks %s: %s", want, b.Bytes())
		}
	}
}
