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
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html"`
	// Template names a template of the library to preview instead.
	Template string      `json:"template"`
	Event    renderEvent `json:"event"`
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
	if req.Template != "" {
		if tmpl != (template.Templates{}) {
			return herald.FieldErrorf("template", "give either template or subject, text and html, not both")
		}
		if err := s.templatesOrUnavailable(); err != nil {
			return err
		}
		// A tenant's key previews what its subscriptions would use: its
		// tenant's template of that name, else the platform's.
		tenant := principalFrom(r.Context()).tenant
		n, err := s.templates.Get(r.Context(), tenant, req.Template)
		if tenant != "" && herald.IsCode(err, herald.CodeNotFound) {
			n, err = s.templates.Get(r.Context(), "", req.Template)
		}
		if err != nil {
			if herald.IsCode(err, herald.CodeNotFound) {
				return herald.FieldErrorf("template", "no template is named %q", truncate(req.Template, 64))
			}
			return err
		}
		tmpl = n.Templates
	}
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

// templateJSON is a named template of the library, as the API shows and
// takes it (the name comes from the path).
type templateJSON struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Topic       string `json:"topic,omitempty"`
	EventType   string `json:"event_type,omitempty"`
	Subject     string `json:"subject,omitempty"`
	Text        string `json:"text,omitempty"`
	HTML        string `json:"html,omitempty"`
	UpdatedAt   string `json:"updated_at,omitempty"`
}

type templateListJSON struct {
	Templates []templateJSON `json:"templates"`
}

func toTemplateJSON(n template.Named) templateJSON {
	return templateJSON{Name: n.Name, Description: n.Description, Topic: n.Topic, EventType: n.EventType,
		Subject: n.Subject, Text: n.Text, HTML: n.HTML, UpdatedAt: n.UpdatedAt.Format(time.RFC3339Nano)}
}

// maxTemplateBody bounds PUT /v1/templates/{name}: three templates at
// their limit and the rest.
const maxTemplateBody = 3*template.MaxTemplateLen + 4<<10

func (s *Server) templatesOrUnavailable() error {
	if s.templates == nil {
		return herald.Errorf(herald.CodeUnavailable, "the template library is not available on this server")
	}
	return nil
}

// templateTenant returns whose templates a /v1/templates call reads or
// changes: a tenant key's own tenant's (naming another in ?tenant= is
// CodeNotFound, as for one that does not exist), or for an admin the
// tenant named in ?tenant= (which must exist), else the platform's.
// Other keys need the admin scope.
func (s *Server) templateTenant(r *http.Request) (string, error) {
	if err := s.templatesOrUnavailable(); err != nil {
		return "", err
	}
	p := principalFrom(r.Context())
	asked := r.URL.Query().Get("tenant")
	switch {
	case p.portal:
		return "", herald.Errorf(herald.CodeForbidden, "a portal link manages webhook endpoints only, not templates")
	case p.tenant != "":
		if asked != "" && asked != p.tenant {
			return "", &herald.Error{Code: herald.CodeNotFound, Field: "tenant", Message: "tenant " + truncate(asked, 80) + " does not exist"}
		}
		return p.tenant, nil
	case !p.scopes.IsAdmin():
		return "", herald.Errorf(herald.CodeForbidden, "this operation needs the admin scope, or a key bound to a tenant")
	case asked == "":
		return "", nil
	}
	t, err := s.tenantFor(r, asked)
	if err != nil {
		return "", err
	}
	return t.ID, nil
}

// putTemplate answers PUT /v1/templates/{name}: 201 created, 200
// replaced. Templates that do not parse, or fail on a sample event, are
// refused with the field at fault.
func (s *Server) putTemplate(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.templateTenant(r)
	if err != nil {
		return err
	}
	var in templateJSON
	if err := decodeJSON(w, r, maxTemplateBody, false, &in); err != nil {
		return err
	}
	name := r.PathValue("name")
	if in.Name != "" && in.Name != name {
		return herald.FieldErrorf("name", "name %q differs from the name in the path %q", truncate(in.Name, 64), truncate(name, 64))
	}
	if in.UpdatedAt != "" {
		return herald.FieldErrorf("updated_at", "updated_at is read-only")
	}
	stored, created, err := s.templates.Put(r.Context(), tenant, template.Named{Name: name, Description: in.Description, Topic: in.Topic, EventType: in.EventType,
		Templates: template.Templates{Subject: in.Subject, Text: in.Text, HTML: in.HTML}})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, toTemplateJSON(stored))
}

func (s *Server) getTemplate(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.templateTenant(r)
	if err != nil {
		return err
	}
	n, err := s.templates.Get(r.Context(), tenant, r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toTemplateJSON(n))
}

// listTemplates answers GET /v1/templates: every template of the
// caller's tenant or of the platform (each holds at most
// template.MaxNamed), in name order.
func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.templateTenant(r)
	if err != nil {
		return err
	}
	all, err := s.templates.List(r.Context(), tenant)
	if err != nil {
		return err
	}
	out := templateListJSON{Templates: make([]templateJSON, 0, len(all))}
	for _, n := range all {
		out.Templates = append(out.Templates, toTemplateJSON(n))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteTemplate(w http.ResponseWriter, r *http.Request) error {
	tenant, err := s.templateTenant(r)
	if err != nil {
		return err
	}
	if err := s.templates.Delete(r.Context(), tenant, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
