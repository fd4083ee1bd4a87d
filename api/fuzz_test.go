package api

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
)

// FuzzStructuredCloudEvent feeds arbitrary bodies to the structured-mode
// parser: it must never panic, must fail only with CodeInvalid, and what it
// accepts must be a usable event.
func FuzzStructuredCloudEvent(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":"k","data":{"a":1}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"2","source":"/s","type":"t","data_base64":"AAEC","datacontenttype":"x/y","ext":[1,{"b":null}]}`))
	f.Add([]byte(`{"data_base64":"AAEC","datacontenttype":"x/y","ext":[1,{"b":null}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := parseStructuredCloudEvent(body)
		if err != nil {
			he, ok := errors.AsType[*herald.Error](err)
			if !ok || he.Code != herald.CodeInvalid {
				t.Fatalf("error %v is not a CodeInvalid *herald.Error", err)
			}
			return
		}
		if e.Payload == nil || e.ContentType == "" {
			t.Fatalf("accepted event without payload or content type: %+v", e)
		}
		if e.ID == "" || e.Type == "" || e.Headers["ce-source"] == "" || e.Headers["ce-specversion"] != ceSpecVersion {
			t.Fatalf("accepted event without the required CloudEvents attributes: %+v", e)
		}
		if !herald.ValidHeaderValue(e.Key) || !herald.ValidHeaderValue(e.ContentType) {
			t.Fatalf("accepted key %q or content type %q that a delivery cannot carry", e.Key, e.ContentType)
		}
		// data is taken as its raw JSON bytes, which must then be JSON.
		var attrs map[string]json.RawMessage
		if json.Unmarshal(body, &attrs) == nil && attrs["data"] != nil && !isJSONNull(attrs["data"]) && !json.Valid(e.Payload) {
			t.Fatalf("data payload %q is not JSON", e.Payload)
		}
		for k, v := range e.Headers {
			if len(k) < 4 || k[:3] != "ce-" {
				t.Fatalf("header %q is not a ce- attribute", k)
			}
			if !herald.ValidHeaderValue(v) {
				t.Fatalf("header %q value %q cannot be sent in a request header", k, v)
			}
		}
	})
}

// FuzzDecodeBatch feeds arbitrary bodies to the batch decoder: it must
// never panic, must fail only with CodeInvalid or CodeTooLarge naming a
// field, and every event it accepts must be complete and within the
// topic's payload limit. (The metadata limits are the publisher's: see
// engine.Publisher, which refuses what ValidateEvent refuses.)
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"events":[{"type":"a","data":{"x":1}},{"data_base64":"AAE="}]}`), 64)
	f.Add([]byte(`{"events":[{"id":"x","headers":{"A":"b"},"idempotency_key":"i","content_type":"t/p"}]}`), 1)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte, maxBytes int) {
		if maxBytes < 1 || maxBytes > herald.MaxEventBytesLimit {
			maxBytes = herald.DefaultMaxEventBytes
		}
		events, err := decodeBatch(body, maxBytes, now)
		if err != nil {
			he, ok := errors.AsType[*herald.Error](err)
			if !ok || (he.Code != herald.CodeInvalid && he.Code != herald.CodeTooLarge) {
				t.Fatalf("error %v is not an invalid or too-large *herald.Error", err)
			}
			return
		}
		if len(events) < 1 || len(events) > maxBatchEvents {
			t.Fatalf("accepted %d events", len(events))
		}
		for i, e := range events {
			if !e.Time.Equal(now) || e.ContentType == "" || e.Payload == nil {
				t.Fatalf("event %d incomplete: %+v", i, e)
			}
			if len(e.Payload) > maxBytes {
				t.Fatalf("event %d payload %d bytes over %d", i, len(e.Payload), maxBytes)
			}
		}
	})
}

// FuzzJSONFieldAt feeds arbitrary text and offsets to the locator behind
// invalid-UTF-8 errors: it must never panic, and the path it names, which
// goes into a problem, must itself be UTF-8.
func FuzzJSONFieldAt(f *testing.F) {
	f.Add([]byte(`{"events":[{"key":"a`+"\xff"+`"}]}`), int64(19))
	f.Add([]byte(`[[{"a":[1,{"b":"`+"\xc3"+`"}]}]]`), int64(16))
	f.Add([]byte(`{"`+"\xfe"+`":}`), int64(2))
	f.Fuzz(func(t *testing.T, data []byte, at int64) {
		path := jsonFieldAt(data, at)
		if !utf8.ValidString(path) {
			t.Fatalf("path %q is not UTF-8", path)
		}
		if !utf8.Valid(data) {
			if err := invalidUTF8(data, "p."); !herald.IsCode(err, herald.CodeInvalid) {
				t.Fatalf("invalidUTF8 = %v", err)
			}
		}
	})
}
