package api

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"unicode/utf8"

	"github.com/heraldhq/herald"
)

// eventJSON is a stored event on the wire. Exactly one of Data and
// DataBase64 is set.
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

func toEventJSON(e *herald.Event) eventJSON {
	out := eventJSON{
		ID:             e.ID,
		Topic:          e.Topic,
		Seq:            e.Seq,
		Type:           e.Type,
		Key:            e.Key,
		IdempotencyKey: e.IdempotencyKey,
		ContentType:    e.ContentType,
		Headers:        e.Headers,
		Time:           formatTime(e.Time),
	}
	out.Data, out.DataBase64 = renderPayload(e.ContentType, e.Payload)
	return out
}

// renderPayload puts the payload inline when it is JSON by both its content
// type and its bytes (and valid UTF-8, so no byte is lost on the way), and
// as standard base64 otherwise. Inline JSON keeps its meaning but not its
// whitespace; data_base64 is byte for byte.
func renderPayload(contentType string, payload []byte) (json.RawMessage, *string) {
	if isJSONMediaType(contentType) && len(payload) > 0 && utf8.Valid(payload) && json.Valid(payload) {
		return json.RawMessage(payload), nil
	}
	b64 := base64.StdEncoding.EncodeToString(payload)
	return nil, &b64
}

type eventListJSON struct {
	Events       []eventJSON `json:"events"`
	NextAfterSeq int64       `json:"next_after_seq"`
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if err := authorize(r, herald.ActionRead, name); err != nil {
		return err
	}
	q := r.URL.Query()
	afterSeq, err := queryInt(q.Get("after_seq"), "after_seq", 0, 0, math.MaxInt64)
	if err != nil {
		return err
	}
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	// An unknown topic reads as empty in the store; callers get a 404.
	if _, err := s.topics.Get(r.Context(), name); err != nil {
		return err
	}
	events, err := s.store.ReadEvents(r.Context(), name, afterSeq, int(limit))
	if err != nil {
		return err
	}
	asJSON, err := s.formatJSON(r)
	if err != nil {
		return err
	}
	out := eventListJSON{Events: make([]eventJSON, len(events)), NextAfterSeq: afterSeq}
	for i := range events {
		out.Events[i] = s.eventJSON(r, &events[i], asJSON)
	}
	if len(events) > 0 {
		out.NextAfterSeq = events[len(events)-1].Seq
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if err := authorize(r, herald.ActionRead, name); err != nil {
		return err
	}
	asJSON, err := s.formatJSON(r)
	if err != nil {
		return err
	}
	e, err := s.store.GetEvent(r.Context(), name, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.eventJSON(r, &e, asJSON))
}

// formatJSON reads the format parameter: "json" renders protobuf payloads
// of topics with a protobuf schema as JSON (protojson) in data.
func (s *Server) formatJSON(r *http.Request) (bool, error) {
	switch f := r.URL.Query().Get("format"); f {
	case "":
		return false, nil
	case "json":
		return true, nil
	default:
		return false, herald.FieldErrorf("format", "format must be \"json\" or absent, got %q", f)
	}
}

// eventJSON renders an event; with asJSON, a protobuf payload its topic's
// schema can read comes as JSON in data (the bytes stay as stored).
func (s *Server) eventJSON(r *http.Request, e *herald.Event, asJSON bool) eventJSON {
	out := toEventJSON(e)
	if asJSON && out.DataBase64 != nil && s.schemas != nil {
		if js, err := s.schemas.JSON(r.Context(), e.Topic, e.Payload, e.ContentType); err == nil && json.Valid(js) && string(js) != string(e.Payload) {
			out.Data, out.DataBase64 = json.RawMessage(js), nil
		}
	}
	return out
}
