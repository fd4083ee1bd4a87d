package client

import (
	"context"
	"net/http"
	"time"
)

// Template is a named message template of the email, SMS and push
// channels (see docs/notifications.md): Subject, Text and HTML are Go
// templates; Topic (a topic or pattern) and EventType apply it to events
// of subscriptions that name no template.
type Template struct {
	Name        string    `json:"name,omitempty"`
	Description string    `json:"description,omitempty"`
	Topic       string    `json:"topic,omitempty"`
	EventType   string    `json:"event_type,omitempty"`
	Subject     string    `json:"subject,omitempty"`
	Text        string    `json:"text,omitempty"`
	HTML        string    `json:"html,omitempty"`
	UpdatedAt   time.Time `json:"updated_at,omitzero"`
}

// PutTemplate creates the named template or replaces it, and reports
// whether it was created. It needs an admin key; a template that does not
// parse or names a field events lack is a *Problem with status 400 naming
// the field ("subject", "text", "html").
func (c *Client) PutTemplate(ctx context.Context, name string, t Template) (Template, bool, error) {
	seg, err := segment("name", name)
	if err != nil {
		return Template{}, false, err
	}
	t.Name, t.UpdatedAt = "", time.Time{}
	body, hdr, err := jsonBody(t)
	if err != nil {
		return Template{}, false, err
	}
	var out Template
	status, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/templates/" + seg, header: hdr, body: body, out: &out})
	return out, status == http.StatusCreated, err
}

// GetTemplate returns the named template.
func (c *Client) GetTemplate(ctx context.Context, name string) (Template, error) {
	seg, err := segment("name", name)
	if err != nil {
		return Template{}, err
	}
	var out Template
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/v1/templates/" + seg, out: &out})
	return out, err
}

// ListTemplates returns every template, in name order.
func (c *Client) ListTemplates(ctx context.Context) ([]Template, error) {
	var out struct {
		Templates []Template `json:"templates"`
	}
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/templates", out: &out})
	return out.Templates, err
}

// DeleteTemplate deletes the named template.
func (c *Client) DeleteTemplate(ctx context.Context, name string) error {
	seg, err := segment("name", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/templates/" + seg})
	return err
}
