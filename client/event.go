package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
)

// Event is an event read back from a topic's log. It marshals to and from
// the API's JSON form, in which a JSON payload travels inline as "data" and
// any other payload as "data_base64".
type Event struct {
	ID             string
	Topic          string
	Seq            int64
	Type           string
	Key            string
	IdempotencyKey string
	ContentType    string
	Headers        map[string]string
	Time           time.Time
	// Payload is the event's bytes. A payload that arrives base64-encoded
	// is exactly what was published; one that arrives inline as JSON is the
	// JSON text the server wrote, which may differ from the published bytes
	// in insignificant whitespace.
	Payload []byte
}

type eventJSON struct {
	ID             string            `json:"id"`
	Topic          string            `json:"topic"`
	Seq            int64             `json:"seq"`
	Type           string            `json:"type,omitempty"`
	Key            string            `json:"key,omitempty"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	ContentType    string            `json:"content_type"`
	Headers        map[string]string `json:"headers,omitempty"`
	Time           string            `json:"time"`
	Data           json.RawMessage   `json:"data,omitempty"`
	DataBase64     *string           `json:"data_base64,omitempty"`
}

// MarshalJSON writes the API's form of an event: the payload inline as
// "data" when the content type is JSON and the bytes are valid JSON, else
// as "data_base64".
func (e Event) MarshalJSON() ([]byte, error) {
	w := eventJSON{
		ID: e.ID, Topic: e.Topic, Seq: e.Seq, Type: e.Type, Key: e.Key, IdempotencyKey: e.IdempotencyKey,
		ContentType: e.ContentType, Headers: e.Headers, Time: formatTime(e.Time),
	}
	if IsJSONContentType(e.ContentType) && json.Valid(e.Payload) {
		w.Data = e.Payload
	} else {
		w.DataBase64 = new(base64.StdEncoding.EncodeToString(e.Payload))
	}
	return marshal(w)
}

// UnmarshalJSON reads the API's form of an event.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w eventJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	out := Event{
		ID: w.ID, Topic: w.Topic, Seq: w.Seq, Type: w.Type, Key: w.Key, IdempotencyKey: w.IdempotencyKey,
		ContentType: w.ContentType, Headers: w.Headers,
	}
	var err error
	if out.Time, err = parseTime("time", w.Time); err != nil {
		return err
	}
	switch {
	case w.Data != nil && w.DataBase64 != nil:
		return fmt.Errorf("event %s has both data and data_base64", w.ID)
	case w.Data != nil:
		out.Payload = bytes.Clone(w.Data)
	case w.DataBase64 != nil:
		if out.Payload, err = base64.StdEncoding.DecodeString(*w.DataBase64); err != nil {
			return fmt.Errorf("event %s: data_base64: %w", w.ID, err)
		}
	}
	*e = out
	return nil
}

// EventPage is one page of ListEvents.
type EventPage struct {
	Events []Event `json:"events"`
	// NextAfterSeq is the seq of the last event returned, or the afterSeq
	// given when the page is empty: pass it to ListEvents for the next page.
	NextAfterSeq int64 `json:"next_after_seq"`
}

// PublishOptions are the metadata of a published event. Every field is
// optional.
type PublishOptions struct {
	// ContentType is stored with the payload and sent with each delivery;
	// "" lets the server store application/octet-stream.
	ContentType string
	// Type is the producer-defined event type, such as "order.created".
	Type string
	// Key is the ordering and aggregation key.
	Key string
	// IdempotencyKey makes a repeated publish within the topic's dedup
	// window return the first event instead of storing another.
	IdempotencyKey string
	// ID is the event id; "" lets the server assign a UUIDv7. An id is
	// unique within its topic for the dedup window: publishing it again
	// with the same payload returns the first event (Duplicate), with
	// another payload a *Problem with status 409.
	ID string
	// Headers are carried to deliveries. The server stores each name as Go
	// canonicalises an HTTP header name ("x-tenant" becomes "X-Tenant").
	Headers map[string]string
	// DeliverAt or Delay (not both) delays the event: it is committed now
	// and joins the topic's log at that time (PublishResult.DeliverAt).
	DeliverAt time.Time
	Delay     time.Duration
}

// PublishResult is the outcome of publishing one event.
type PublishResult struct {
	ID    string `json:"id"`
	Topic string `json:"topic"`
	Seq   int64  `json:"seq"`
	// Duplicate reports that the idempotency key, or the event id with the
	// same payload, was seen within the dedup window: nothing was stored
	// and ID and Seq are the first event's.
	Duplicate bool `json:"duplicate"`
	// DeliverAt is set for a delayed event: it joins the log, and gets
	// its Seq, at this time. Cancel it with CancelScheduled until then.
	DeliverAt time.Time `json:"deliver_at,omitzero"`
}

// Publish publishes one event and returns after the server has committed it
// durably. The payload is stored and delivered byte for byte. It needs a key
// with publish on the topic. An unknown topic is a *Problem with status 404
// (unless the server auto-creates topics); a payload over the topic's
// max_event_bytes is 413.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, o PublishOptions) (PublishResult, error) {
	seg, err := segment("topic", topic)
	if err != nil {
		return PublishResult{}, err
	}
	hdr := http.Header{}
	for _, h := range []struct{ name, field, value string }{
		{"Content-Type", "content_type", o.ContentType},
		{"Idempotency-Key", "idempotency_key", o.IdempotencyKey},
		{"Herald-Event-Type", "type", o.Type},
		{"Herald-Event-Key", "key", o.Key},
		{"Herald-Event-Id", "id", o.ID},
		{"Herald-Deliver-At", "deliver_at", formatTime(o.DeliverAt)},
		{"Herald-Delay", "delay", formatDuration(o.Delay)},
	} {
		if h.value == "" {
			continue
		}
		if !herald.ValidHeaderValue(h.value) {
			return PublishResult{}, herald.FieldErrorf(h.field, "%s must be valid UTF-8 without control characters", h.field)
		}
		hdr.Set(h.name, h.value)
	}
	for k, v := range o.Headers {
		if !herald.ValidHeaderName(k) {
			return PublishResult{}, herald.FieldErrorf("headers", "header name %q must be letters, digits and !#$%%&'*+-.^_`|~", k)
		}
		if !herald.ValidHeaderValue(v) {
			return PublishResult{}, herald.FieldErrorf("headers", "header %q value must be valid UTF-8 without control characters", k)
		}
		hdr.Set("Herald-Header-"+k, v)
	}
	var res PublishResult
	_, err = c.do(ctx, request{
		method: http.MethodPost, path: "/v1/topics/" + seg + "/events",
		header: hdr, body: bytes.NewReader(payload), out: &res,
	})
	return res, err
}

// BatchEvent is one event of PublishBatch; its fields mean what the fields
// of PublishOptions mean.
type BatchEvent struct {
	ID             string
	Type           string
	Key            string
	IdempotencyKey string
	ContentType    string // "" lets the server store application/octet-stream
	Headers        map[string]string
	Payload        []byte
	DeliverAt      time.Time     // delays this event, as PublishOptions.DeliverAt
	Delay          time.Duration // or by this much
}

// PublishBatch publishes 1 to 1000 events to the topic in one commit: all
// are stored, or none is. It returns one result per event, in order, with
// Duplicate set for events whose idempotency key, or id with the same
// payload, was already seen. Errors about one event name it in the
// Problem's Field ("events[3].type"; an id that names a different event is
// a 409 with "events[3].id").
//
// Payloads are sent base64-encoded so they are stored byte for byte.
func (c *Client) PublishBatch(ctx context.Context, topic string, events []BatchEvent) ([]PublishResult, error) {
	seg, err := segment("topic", topic)
	if err != nil {
		return nil, err
	}
	type batchEventJSON struct {
		ID             string            `json:"id,omitempty"`
		Type           string            `json:"type,omitempty"`
		Key            string            `json:"key,omitempty"`
		IdempotencyKey string            `json:"idempotency_key,omitempty"`
		ContentType    string            `json:"content_type,omitempty"`
		Headers        map[string]string `json:"headers,omitempty"`
		DataBase64     string            `json:"data_base64"`
		DeliverAt      string            `json:"deliver_at,omitempty"`
		Delay          string            `json:"delay,omitempty"`
	}
	in := make([]batchEventJSON, len(events))
	for i, e := range events {
		in[i] = batchEventJSON{
			ID: e.ID, Type: e.Type, Key: e.Key, IdempotencyKey: e.IdempotencyKey, ContentType: e.ContentType,
			Headers: maps.Clone(e.Headers), DataBase64: base64.StdEncoding.EncodeToString(e.Payload),
			DeliverAt: formatTime(e.DeliverAt), Delay: formatDuration(e.Delay),
		}
	}
	body, hdr, err := jsonBody(struct {
		Events []batchEventJSON `json:"events"`
	}{in})
	if err != nil {
		return nil, err
	}
	var out struct {
		Events []PublishResult `json:"events"`
	}
	if _, err := c.do(ctx, request{
		method: http.MethodPost, path: "/v1/topics/" + seg + "/events:batch",
		header: hdr, body: body, out: &out,
	}); err != nil {
		return nil, err
	}
	if len(out.Events) != len(events) {
		return nil, fmt.Errorf("publish batch of %d to %s: the server answered %d results", len(events), topic, len(out.Events))
	}
	for i := range out.Events {
		out.Events[i].Topic = topic
	}
	return out.Events, nil
}

// ListEvents returns up to limit events of the topic with seq above
// afterSeq, in seq order. limit is 1 to 1000; 0 lets the server choose
// (100). An unknown topic is a *Problem with status 404.
func (c *Client) ListEvents(ctx context.Context, topic string, afterSeq int64, limit int) (EventPage, error) {
	seg, err := segment("topic", topic)
	if err != nil {
		return EventPage{}, err
	}
	q := url.Values{}
	if afterSeq != 0 {
		q.Set("after_seq", strconv.FormatInt(afterSeq, 10))
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p EventPage
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/v1/topics/" + seg + "/events", query: q, out: &p})
	return p, err
}

// GetEvent returns the event of the topic with the id; a missing one is a
// *Problem with status 404.
func (c *Client) GetEvent(ctx context.Context, topic, id string) (Event, error) {
	tseg, err := segment("topic", topic)
	if err != nil {
		return Event{}, err
	}
	iseg, err := segment("id", id)
	if err != nil {
		return Event{}, err
	}
	var e Event
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/v1/topics/" + tseg + "/events/" + iseg, out: &e})
	return e, err
}
