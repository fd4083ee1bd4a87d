package stream

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"mime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/filter"
)

// wireTimeLayout is how the API writes times: RFC 3339, milliseconds, UTC.
const wireTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// SSEBase64Prefix starts the data of an SSE event (raw format) whose
// payload is sent in base64: payloads that are not UTF-8 text, that hold
// a carriage return or a NUL, or that themselves start with this prefix.
// Any other payload is sent as it is, one "data:" line per line.
const SSEBase64Prefix = "base64,"

// outEvent is a committed event on its way to clients. Its encodings are
// made once, by the first writer that needs them, and shared by every
// connection it goes to.
type outEvent struct {
	ev *herald.Event

	jsonOnce sync.Once
	json     []byte // the event as a JSON object (see wireEvent)

	rawOnce sync.Once
	raw     []byte // SSE "event:" and "data:" lines, raw format, with the blank line

	sseJSONOnce sync.Once
	sseJSON     []byte // the same with the JSON object as data

	renderOnce sync.Once
	rendered   []byte // jsonObject with a protobuf payload as JSON in data; nil: as jsonObject
}

func newOutEvent(e *herald.Event) *outEvent { return &outEvent{ev: e} }

// wireEvent is an event in WebSocket frames and SSE's JSON format. Exactly
// one of Data (JSON payloads) and DataBase64 (any other) is set.
type wireEvent struct {
	Topic       string            `json:"topic"`
	Seq         int64             `json:"seq"`
	ID          string            `json:"id"`
	Type        string            `json:"type,omitempty"`
	Key         string            `json:"key,omitempty"`
	Time        string            `json:"time"`
	ContentType string            `json:"content_type,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Data        json.RawMessage   `json:"data,omitempty"`
	DataBase64  *string           `json:"data_base64,omitempty"`
}

// jsonObject returns the event as a JSON object.
func (o *outEvent) jsonObject() []byte {
	o.jsonOnce.Do(func() {
		e := o.ev
		w := wireEvent{
			Topic: e.Topic, Seq: e.Seq, ID: e.ID, Type: e.Type, Key: e.Key,
			Time: e.Time.UTC().Format(wireTimeLayout), ContentType: e.ContentType, Headers: e.Headers,
		}
		if isJSONMediaType(e.ContentType) && len(e.Payload) > 0 && utf8.Valid(e.Payload) && json.Valid(e.Payload) {
			w.Data = e.Payload
		} else {
			w.DataBase64 = new(base64.StdEncoding.EncodeToString(e.Payload))
		}
		o.json = marshalFrame(w)
	})
	return o.json
}

// renderedObject returns the event as a JSON object whose data is the
// payload rendered as JSON by dec (protobuf, through its topic's schema):
// what subscriptions in the json format get. A payload dec does not render
// (JSON already, or no schema reads it) comes as in jsonObject.
func (o *outEvent) renderedObject(ctx context.Context, dec filter.Decoder) []byte {
	if dec == nil {
		return o.jsonObject()
	}
	o.renderOnce.Do(func() {
		e := o.ev
		if isJSONMediaType(e.ContentType) {
			return
		}
		js, err := dec.JSON(ctx, e.Topic, e.Payload, e.ContentType)
		if err != nil || !json.Valid(js) || bytes.Equal(js, e.Payload) {
			return
		}
		o.rendered = marshalFrame(wireEvent{
			Topic: e.Topic, Seq: e.Seq, ID: e.ID, Type: e.Type, Key: e.Key,
			Time: e.Time.UTC().Format(wireTimeLayout), ContentType: e.ContentType, Headers: e.Headers,
			Data: js,
		})
	})
	if o.rendered == nil {
		return o.jsonObject()
	}
	return o.rendered
}

// sseRaw returns the "event:" and "data:" lines of the raw SSE format.
func (o *outEvent) sseRaw() []byte {
	o.rawOnce.Do(func() {
		e := o.ev
		b := appendEventLine(make([]byte, 0, len(e.Payload)+64), e.Type)
		if sseText(e.Payload) {
			for line := range strings.SplitSeq(string(e.Payload), "\n") {
				b = append(b, "data: "...)
				b = append(b, line...)
				b = append(b, '\n')
			}
		} else {
			b = append(b, "data: "+SSEBase64Prefix...)
			b = base64.StdEncoding.AppendEncode(b, e.Payload)
			b = append(b, '\n')
		}
		o.raw = append(b, '\n')
	})
	return o.raw
}

// sseJSONFormat returns the "event:" and "data:" lines of SSE's JSON
// format: the data is the event as a JSON object, a protobuf payload
// rendered as JSON (see renderedObject).
func (o *outEvent) sseJSONFormat(ctx context.Context, dec filter.Decoder) []byte {
	o.sseJSONOnce.Do(func() {
		obj := o.renderedObject(ctx, dec)
		b := appendEventLine(make([]byte, 0, len(obj)+64), o.ev.Type)
		b = append(b, "data: "...)
		b = append(b, obj...)
		o.sseJSON = append(b, '\n', '\n')
	})
	return o.sseJSON
}

// appendEventLine writes the SSE event name: the event type, or "message"
// (what EventSource's onmessage receives) when it has none. Types are
// printable ASCII without spaces, so they are safe in a field line.
func appendEventLine(b []byte, typ string) []byte {
	if typ == "" {
		typ = "message"
	}
	b = append(b, "event: "...)
	b = append(b, typ...)
	return append(b, '\n')
}

// sseText reports whether a payload can travel as SSE data lines and come
// out of an EventSource byte for byte: UTF-8 without CR (which
// EventSource turns into a line break) or NUL, and not starting with the
// base64 marker.
func sseText(p []byte) bool {
	return utf8.Valid(p) && bytes.IndexByte(p, '\r') < 0 && bytes.IndexByte(p, 0) < 0 &&
		!bytes.HasPrefix(p, []byte(SSEBase64Prefix))
}

// isJSONMediaType reports whether a content type is JSON: application/json
// or a +json type, parameters ignored.
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// jsonString returns s as a JSON string.
func jsonString(s string) string { return string(marshalFrame(s)) }

// Server frames of the WebSocket protocol, other than events.

type ackFrame struct {
	Op        string `json:"op"` // "subscribed"
	ID        string `json:"id"`
	Topic     string `json:"topic"`
	Recovered bool   `json:"recovered"`
	FirstSeq  int64  `json:"first_seq,omitempty"`
	// AfterSeq (single topics) is the seq the subscription starts after:
	// where to resume if no event comes before the connection drops.
	AfterSeq *int64 `json:"after_seq,omitempty"`
	// Time is when the subscription began receiving live events: a client
	// that resumes a pattern can start the topics it has seen nothing of
	// from here.
	Time string `json:"time"`
}

type gapFrame struct {
	Op  string `json:"op"` // "gap"
	Sub string `json:"sub"`
	gapInfo
}

type errorFrame struct {
	Op    string  `json:"op"` // "error"
	ID    string  `json:"id,omitempty"`
	Error problem `json:"error"`
}

type unsubscribedFrame struct {
	Op string `json:"op"` // "unsubscribed"
	ID string `json:"id"`
}

// marshalFrame encodes a frame without HTML escaping, as the API writes
// JSON: "<" reads as "<", also inside inline payloads.
func marshalFrame(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // cannot happen: payloads are checked with json.Valid
		return []byte(`{"op":"error"}`)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func formatTime(t time.Time) string { return t.UTC().Format(wireTimeLayout) }
