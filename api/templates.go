package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel/template"
)

// renderRequest is the body of POST /v1/templates:render: templates as a
// subscription's config holds them, and a sample event.
type renderRequest struct {
	Subject string      `json:"subject"`
	Text    string      `json:"text"`
	HTML    string      `json:"html"`
	Event   renderEvent `json:"event"`
}

type renderEvent struct {
	Topic       string            `json:"topic"`
	Type        string            `json:"type"`
	Key         string            `json:"key"`
	ID          string            `json:"id"`
	Time        string            `json:"time"`
	ContentType string            `json:"content_type"`
	Headers     map[string]string `json:"headers"`
	Payload     json.RawMessage   `json:"payload"`
}

type renderJSON struct {
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html"`
}

// renderTemplates previews what a subscription's templates make of an
// event: the same checks as at save time, then the rendering, whose
// errors (a payload member the event lacks) name the template.
func (s *Server) renderTemplates(w http.ResponseWriter, r *http.Request) error {
	var req renderRequest
	if err := decodeJSON(w, r, maxJSONBody, false, &req); err != nil {
		return err
	}
	tmpl := template.Templates{Subject: req.Subject, Text: req.Text, HTML: req.HTML}
	if err := tmpl.Validate(true); err != nil {
		return err
	}
	set, err := tmpl.Parse(true)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	ev := &herald.Event{ID: req.Event.ID, Topic: req.Event.Topic, Type: req.Event.Type, Key: req.Event.Key, Time: now,
		ContentType: req.Event.ContentType, Headers: req.Event.Headers, Payload: req.Event.Payload}
	if ev.Topic == "" {
		ev.Topic = "example.topic"
	}
	if ev.ID == "" {
		ev.ID = herald.NewID(now)
	}
	if req.Event.Time != "" {
		if ev.Time, err = time.Parse(time.RFC3339Nano, req.Event.Time); err != nil {
			return herald.FieldErrorf("event.time", "event.time must be an RFC 3339 time, got %q", truncate(req.Event.Time, 64))
		}
	}
	// A JSON string payload is the payload's text, as a producer would
	// publish it; anything else is the JSON itself.
	var text string
	if json.Unmarshal(req.Event.Payload, &text) == nil {
		ev.Payload = []byte(text)
	} else if ev.ContentType == "" && len(ev.Payload) > 0 {
		ev.ContentType = "application/json"
	}
	out, err := set.Render(template.DataFor(ev, "sub_example", "https://herald.example/v1/unsubscribe/example"))
	if err != nil {
		field, _, _ := strings.Cut(err.Error(), " template:")
		return &herald.Error{Code: herald.CodeInvalid, Field: field, Message: "the " + err.Error(), Err: err}
	}
	return writeJSON(w, http.StatusOK, renderJSON{out.Subject, out.Text, out.HTML})
}
