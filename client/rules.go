package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
)

// Rules and views are managed as JSON documents (see docs/rules.md for
// their members): the methods below send and return them as they are.

func (c *Client) rawJSON(ctx context.Context, method, path string, query url.Values, body []byte) (json.RawMessage, error) {
	r := request{method: method, path: path, query: query}
	if body != nil {
		r.body = bytes.NewReader(body)
		r.header = http.Header{"Content-Type": {"application/json"}}
	}
	var out json.RawMessage
	r.out = &out
	_, err := c.do(ctx, r)
	return out, err
}

func processorPath(kind, name string) string { return "/v1/" + kind + "s/" + url.PathEscape(name) }

// PutRule creates or replaces the rule NAME with the definition def
// ({"input", "key", "window", "aggregate", "when", "emit"}) and returns it
// as stored. Needs an admin key.
func (c *Client) PutRule(ctx context.Context, name string, def json.RawMessage) (json.RawMessage, error) {
	return c.rawJSON(ctx, http.MethodPut, processorPath("rule", name), nil, def)
}

// PutView creates or replaces the view NAME ({"input", "key",
// "aggregate"}). Needs an admin key.
func (c *Client) PutView(ctx context.Context, name string, def json.RawMessage) (json.RawMessage, error) {
	return c.rawJSON(ctx, http.MethodPut, processorPath("view", name), nil, def)
}

// GetProcessor returns the rule or view (kind "rule" or "view").
func (c *Client) GetProcessor(ctx context.Context, kind, name string) (json.RawMessage, error) {
	return c.rawJSON(ctx, http.MethodGet, processorPath(kind, name), nil, nil)
}

// ListProcessors returns a page of rules or views: {"items", "next_cursor"}.
func (c *Client) ListProcessors(ctx context.Context, kind, cursor string) (json.RawMessage, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return c.rawJSON(ctx, http.MethodGet, "/v1/"+kind+"s", q, nil)
}

// DeleteProcessor deletes the rule or view with its state.
func (c *Client) DeleteProcessor(ctx context.Context, kind, name string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: processorPath(kind, name)})
	return err
}

// ProcessorAction pauses, resumes or rebuilds a rule or view (action
// "pause", "resume" or "rebuild").
func (c *Client) ProcessorAction(ctx context.Context, kind, name, action string) (json.RawMessage, error) {
	return c.rawJSON(ctx, http.MethodPost, processorPath(kind, name)+"/"+action, nil, nil)
}

// GetViewRow reads a view's row: {"view", "key", "value", "updated_at",
// "seq"}. minSeq > 0 waits until the view reflects its input up to it.
func (c *Client) GetViewRow(ctx context.Context, view, key string, minSeq int64) (json.RawMessage, error) {
	q := url.Values{}
	if minSeq > 0 {
		q.Set("min_seq", strconv.FormatInt(minSeq, 10))
	}
	return c.rawJSON(ctx, http.MethodGet, processorPath("view", view)+"/"+url.PathEscape(key), q, nil)
}

// ListViewRows returns a page of a view's rows: {"items", "next_cursor"}.
func (c *Client) ListViewRows(ctx context.Context, view, cursor string) (json.RawMessage, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return c.rawJSON(ctx, http.MethodGet, processorPath("view", view)+"/keys", q, nil)
}

// SetViewRow sets a view's row by hand to value (JSON); the answer's seq
// is what a read passes as minSeq to see it.
func (c *Client) SetViewRow(ctx context.Context, view, key string, value json.RawMessage) (json.RawMessage, error) {
	return c.rawJSON(ctx, http.MethodPut, processorPath("view", view)+"/"+url.PathEscape(key), nil, value)
}

// DeleteViewRow clears a view's row by hand.
func (c *Client) DeleteViewRow(ctx context.Context, view, key string) (json.RawMessage, error) {
	return c.rawJSON(ctx, http.MethodDelete, processorPath("view", view)+"/"+url.PathEscape(key), nil, nil)
}

// PutSchema registers a schema for a topic ({"type": "json_schema",
// "schema"} or {"type": "protobuf", "message", "proto"}; see
// docs/rules.md) and returns the stored version. A schema equal to the
// current one changes nothing. Needs an admin key.
func (c *Client) PutSchema(ctx context.Context, topic string, def json.RawMessage) (json.RawMessage, error) {
	return c.rawJSON(ctx, http.MethodPut, "/v1/topics/"+url.PathEscape(topic)+"/schema", nil, def)
}

// ListSchemaVersions returns the versions of a topic's schema:
// {"versions": [...]}, oldest first.
func (c *Client) ListSchemaVersions(ctx context.Context, topic string) (json.RawMessage, error) {
	return c.rawJSON(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(topic)+"/schema/versions", nil, nil)
}
