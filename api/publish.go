package api

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
)

// Publish limits.
const (
	// maxBatchBody bounds the whole body of a batch publish.
	maxBatchBody = 16 << 20
	// maxBatchEvents bounds the events of one batch publish.
	maxBatchEvents = 1000
	// defaultContentType is stored when a publish names none.
	defaultContentType = "application/octet-stream"
	// producerHeaderPrefix starts the request headers carried as event
	// headers, in Go's canonical form.
	producerHeaderPrefix = "Herald-Header-"
)

// publishResultJSON answers a single publish.
type publishResultJSON struct {
	ID        string `json:"id"`
	Topic     string `json:"topic"`
	Seq       int64  `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	// DeliverAt is set for an event accepted for later (202): it joins
	// its topic's log, with Seq, at this time.
	DeliverAt string `json:"deliver_at,omitempty"`
}

// appendJSON appends out as marshalJSON encodes it, written by hand: it is
// the answer to every single publish, and encoding/json's reflection and
// buffers were ~2% of the server's CPU per event under delivery (issue 20).
func (out *publishResultJSON) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, out.ID)
	b = append(b, `,"topic":`...)
	b = appendJSONString(b, out.Topic)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, out.Seq, 10)
	b = append(b, `,"duplicate":`...)
	b = strconv.AppendBool(b, out.Duplicate)
	if out.DeliverAt != "" {
		b = append(b, `,"deliver_at":`...)
		b = appendJSONString(b, out.DeliverAt)
	}
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string the way marshalJSON writes
// it: printable ASCII other than '"' and '\\' as it is, anything else
// through encoding/json (control characters, invalid UTF-8, U+2028).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			q, _ := marshalJSON(s) // a string always encodes
			return append(b, bytes.TrimSuffix(q, []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// writePublishResult writes a single publish's answer.
func writePublishResult(w http.ResponseWriter, status int, out *publishResultJSON) error {
	w.Header()["Content-Type"] = []string{"application/json"}
	w.WriteHeader(status)
	_, _ = w.Write(out.appendJSON(make([]byte, 0, 128))) // the client may be gone
	return nil
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) error {
	name, t, err := s.publishTarget(r)
	if err != nil {
		return err
	}
	now := s.now().UTC()

	mt, err := requestMediaType(r)
	if err != nil {
		return err
	}
	var e *herald.Event
	switch ct := r.Header.Get("Content-Type"); mt {
	case ceStructuredType:
		body, err := readBody(w, r, ceStructuredLimit(t.MaxEventBytes))
		if err != nil {
			return err
		}
		if e, err = parseStructuredCloudEvent(body); err != nil {
			return err
		}
		if len(e.Payload) > t.MaxEventBytes {
			return &herald.Error{Code: herald.CodeTooLarge, Field: "data",
				Message: fmt.Sprintf("the event data is %d bytes; topic %q takes at most %d", len(e.Payload), name, t.MaxEventBytes)}
		}
	case ceBatchType:
		return herald.Errorf(herald.CodeUnsupported, "CloudEvents batch mode is not accepted here; use POST /v1/topics/{topic}/events:batch")
	default:
		body, err := readBody(w, r, int64(t.MaxEventBytes))
		if herald.IsCode(err, herald.CodeTooLarge) {
			return herald.Errorf(herald.CodeTooLarge, "the payload is over the limit of topic %q: %d bytes", name, t.MaxEventBytes)
		}
		if err != nil {
			return err
		}
		e = &herald.Event{Payload: body, ContentType: cmp.Or(strings.TrimSpace(ct), defaultContentType)}
		if _, err := applyBinaryCloudEvent(r.Header, e); err != nil {
			return err
		}
	}
	if err := applyHeraldHeaders(r.Header, e); err != nil {
		return err
	}
	due, err := requestDue(r.Header, e, now)
	if err != nil {
		return err
	}
	// Without a producer's id, the store assigns one at commit.
	e.Topic, e.Time = name, now
	params := engine.PublishParams{Events: []*herald.Event{e}, Source: "api", Tenant: principalFrom(r.Context()).tenant}
	if due.After(now) {
		params.DeliverAt = []time.Time{due}
	}
	results, err := s.publisher.Publish(r.Context(), params)
	if err != nil {
		return err
	}
	res := results[0]
	out := publishResultJSON{ID: res.ID, Topic: name, Seq: res.Seq, Duplicate: res.Duplicate}
	if params.DeliverAt != nil && res.Seq == 0 {
		// Committed, and waiting for its due time: it joins the log then.
		out.DeliverAt = formatTime(due)
		if res.Duplicate {
			return writePublishResult(w, http.StatusOK, &out)
		}
		return writePublishResult(w, http.StatusAccepted, &out)
	}
	if res.Duplicate {
		return writePublishResult(w, http.StatusOK, &out)
	}
	w.Header()["Location"] = []string{"/v1/topics/" + url.PathEscape(name) + "/events/" + url.PathEscape(res.ID)}
	return writePublishResult(w, http.StatusCreated, &out)
}

// publishTarget checks the topic name and the caller's publish scope, and
// returns the topic (created when the server auto-creates topics): its
// payload limit bounds what is read of the body.
func (s *Server) publishTarget(r *http.Request) (string, herald.Topic, error) {
	name, err := topicName(r)
	if err != nil {
		return name, herald.Topic{}, err
	}
	if err := authorize(r, herald.ActionPublish, name); err != nil {
		return name, herald.Topic{}, err
	}
	t, err := s.publisher.Topic(r.Context(), name)
	return name, t, err
}

// applyHeraldHeaders sets the metadata given in Herald's own request
// headers. They win over CloudEvents attributes of the same meaning.
func applyHeraldHeaders(h http.Header, e *herald.Event) error {
	if v := h.Get("Herald-Event-Id"); v != "" {
		e.ID = v
	}
	if v := h.Get("Herald-Event-Type"); v != "" {
		e.Type = v
	}
	if v := h.Get("Herald-Event-Key"); v != "" {
		e.Key = v
	}
	if v := h.Get("Idempotency-Key"); v != "" {
		e.IdempotencyKey = v
	}
	for name, values := range h {
		hn, ok := strings.CutPrefix(name, producerHeaderPrefix)
		if !ok {
			continue
		}
		if hn == "" {
			return herald.FieldErrorf("headers", "header %s needs a name after the prefix", producerHeaderPrefix)
		}
		setHeader(e, hn, strings.Join(values, ", "))
	}
	return nil
}

// batchRequest is the body of a batch publish. Events are decoded one by
// one so errors can name their index.
type batchRequest struct {
	Events []json.RawMessage `json:"events"`
}

// batchEvent is one event of a batch publish.
type batchEvent struct {
	ID             string            `json:"id"`
	Type           string            `json:"type"`
	Key            string            `json:"key"`
	IdempotencyKey string            `json:"idempotency_key"`
	ContentType    string            `json:"content_type"`
	Headers        map[string]string `json:"headers"`
	Data           json.RawMessage   `json:"data"`
	DataBase64     *string           `json:"data_base64"`
	// DeliverAt (RFC 3339) or Delay (a duration) delays this event; the
	// request's Herald-Deliver-At or Herald-Delay apply to the others.
	DeliverAt string `json:"deliver_at"`
	Delay     string `json:"delay"`
}

type batchResultJSON struct {
	Events []batchItemJSON `json:"events"`
}

type batchItemJSON struct {
	ID        string `json:"id"`
	Seq       int64  `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	DeliverAt string `json:"deliver_at,omitempty"` // set for an event accepted for later
}

func (s *Server) publishBatch(w http.ResponseWriter, r *http.Request) error {
	name, t, err := s.publishTarget(r)
	if err != nil {
		return err
	}
	if mt, err := requestMediaType(r); err != nil {
		return err
	} else if mt != "" && !isJSONMediaType(mt) {
		return herald.Errorf(herald.CodeUnsupported, "a batch body must be application/json, not %q", r.Header.Get("Content-Type"))
	}
	body, err := readBody(w, r, maxBatchBody)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	reqDue, err := dueTime(r.Header.Get(headerDeliverAt), r.Header.Get(headerDelay), now, true, "")
	if err != nil {
		return err
	}
	events, dues, err := decodeBatchDue(body, t.MaxEventBytes, now)
	if err != nil {
		return err
	}
	params := engine.PublishParams{Events: events, Source: "api", Batch: true, Tenant: principalFrom(r.Context()).tenant}
	for i, e := range events {
		e.Topic = name
		if dues[i].IsZero() {
			dues[i] = reqDue
		}
		if dues[i].After(now) {
			params.DeliverAt = dues
		}
	}
	results, err := s.publisher.Publish(r.Context(), params)
	if err != nil {
		return err
	}
	out := batchResultJSON{Events: make([]batchItemJSON, len(results))}
	status := http.StatusOK
	later := 0
	for i, res := range results {
		out.Events[i] = batchItemJSON{ID: res.ID, Seq: res.Seq, Duplicate: res.Duplicate}
		if params.DeliverAt != nil && res.Seq == 0 {
			out.Events[i].DeliverAt = formatTime(dues[i])
			if !res.Duplicate {
				later++
			}
			continue
		}
		if !res.Duplicate {
			status = http.StatusCreated
		}
	}
	if later == len(results) {
		status = http.StatusAccepted // every event waits for its due time
	}
	return writeJSON(w, status, out)
}

// decodeBatch parses a batch body into events stamped with now, each
// checked against the metadata limits and the topic's payload limit. Errors
// name the field as "events[3].data".
func decodeBatch(body []byte, maxEventBytes int, now time.Time) ([]*herald.Event, error) {
	events, _, err := decodeBatchDue(body, maxEventBytes, now)
	return events, err
}

// decodeBatchDue is decodeBatch that also returns each event's due time
// (zero: none given).
func decodeBatchDue(body []byte, maxEventBytes int, now time.Time) ([]*herald.Event, []time.Time, error) {
	var req batchRequest
	if err := unmarshalStrict(body, &req, ""); err != nil {
		return nil, nil, err
	}
	switch {
	case req.Events == nil:
		return nil, nil, herald.FieldErrorf("events", "events is required: a list of 1 to %d events", maxBatchEvents)
	case len(req.Events) == 0:
		return nil, nil, herald.FieldErrorf("events", "events is empty; send 1 to %d events", maxBatchEvents)
	case len(req.Events) > maxBatchEvents:
		return nil, nil, herald.FieldErrorf("events", "%d events; the limit is %d per request", len(req.Events), maxBatchEvents)
	}
	events := make([]*herald.Event, len(req.Events))
	dues := make([]time.Time, len(req.Events))
	for i, raw := range req.Events {
		prefix := fmt.Sprintf("events[%d]", i)
		e, due, err := decodeBatchEvent(raw, prefix, maxEventBytes, now)
		if err != nil {
			return nil, nil, err
		}
		e.Time = now // without a producer's id, the store assigns one at commit
		events[i], dues[i] = e, due
	}
	return events, dues, nil
}

func decodeBatchEvent(raw json.RawMessage, prefix string, maxEventBytes int, now time.Time) (*herald.Event, time.Time, error) {
	if isJSONNull(raw) {
		return nil, time.Time{}, herald.FieldErrorf(prefix, "%s must be an event object, not null", prefix)
	}
	var be batchEvent
	if err := unmarshalStrict(raw, &be, prefix+"."); err != nil {
		return nil, time.Time{}, err
	}
	e := &herald.Event{
		ID:             be.ID,
		Type:           be.Type,
		Key:            be.Key,
		IdempotencyKey: be.IdempotencyKey,
		ContentType:    be.ContentType,
		Headers:        be.Headers,
	}
	field := prefix + ".data"
	switch {
	case be.Data != nil && be.DataBase64 != nil:
		return nil, time.Time{}, herald.FieldErrorf(field, "data and data_base64 are mutually exclusive")
	case be.Data != nil:
		e.Payload = []byte(be.Data)
		e.ContentType = cmp.Or(e.ContentType, "application/json")
	case be.DataBase64 != nil:
		field = prefix + ".data_base64"
		b, err := decodeBase64(*be.DataBase64)
		if err != nil {
			return nil, time.Time{}, &herald.Error{Code: herald.CodeInvalid, Field: field, Message: "data_base64 is not valid base64", Err: err}
		}
		e.Payload = b
		e.ContentType = cmp.Or(e.ContentType, defaultContentType)
	default:
		e.Payload = []byte{}
		e.ContentType = cmp.Or(e.ContentType, defaultContentType)
	}
	if len(e.Payload) > maxEventBytes {
		return nil, time.Time{}, &herald.Error{Code: herald.CodeTooLarge, Field: field,
			Message: fmt.Sprintf("%s is %d bytes; the topic takes at most %d", field, len(e.Payload), maxEventBytes)}
	}
	due, err := dueTime(be.DeliverAt, be.Delay, now, false, prefix+".")
	if err != nil {
		return nil, time.Time{}, err
	}
	// The metadata limits are the publisher's to check.
	return e, due, nil
}
