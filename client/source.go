package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
)

// SourceSpec is a new source, or (for UpdateSource) the members to change:
// empty members are left out of the request.
type SourceSpec struct {
	Kind string `json:"kind,omitempty"` // "outbox", "webhook", "kafka", ...
	// Config is the kind's settings as a JSON object (docs/sources.md).
	Config json.RawMessage `json:"config,omitempty"`
	// Topic is the target topic, or a template such as "orders.{topic}".
	Topic string `json:"topic,omitempty"`
	// Mapping is the event's key, type, id and headers as templates, as
	// a JSON object; nil keeps the message's own.
	Mapping     json.RawMessage `json:"mapping,omitempty"`
	Description string          `json:"description,omitempty"`
	Shards      int             `json:"shards,omitempty"`
	State       string          `json:"state,omitempty"` // "active" or "paused"
	// Tenant makes it a tenant's source (admin keys; a tenant's key
	// creates its own tenant's): its topic must stay in the tenant's
	// namespace. Set at creation only.
	Tenant string `json:"tenant,omitempty"`
}

// SourceShard is one shard's status as its runner last reported it.
type SourceShard struct {
	Shard          int    `json:"shard"`
	Node           string `json:"node"`
	LeaseExpiresAt string `json:"lease_expires_at,omitempty"`
	Lag            int64  `json:"lag"`
	EventsIn       int64  `json:"events_in"`
	Duplicates     int64  `json:"duplicates"` // of EventsIn, redeliveries Herald absorbed
	Errors         int64  `json:"errors"`
	LastError      string `json:"last_error,omitempty"`
	LastErrorAt    string `json:"last_error_at,omitempty"`
	ReportedAt     string `json:"reported_at,omitempty"`
}

// Source is a source as the server reports it: its config without secrets,
// and its status.
type Source struct {
	ID          string          `json:"id"`
	Kind        string          `json:"kind"`
	Config      json.RawMessage `json:"config"`
	Topic       string          `json:"topic"`
	Mapping     json.RawMessage `json:"mapping"`
	Description string          `json:"description"`
	Shards      int             `json:"shards"`
	State       string          `json:"state"`
	StateReason string          `json:"state_reason,omitempty"`
	Tenant      string          `json:"tenant,omitempty"` // "" for a platform source
	Managed     bool            `json:"managed"`
	InboundPath string          `json:"inbound_path,omitempty"`
	Lag         int64           `json:"lag"` // -1 when unknown
	EventsIn    int64           `json:"events_in"`
	Duplicates  int64           `json:"duplicates"` // of EventsIn, redeliveries Herald absorbed
	Errors      int64           `json:"errors"`
	LastError   string          `json:"last_error,omitempty"`
	LastErrorAt string          `json:"last_error_at,omitempty"`
	ShardStatus []SourceShard   `json:"shard_status"`
	CreatedAt   string          `json:"created_at"`
	UpdatedAt   string          `json:"updated_at"`
}

// SourcePage is a page of sources.
type SourcePage struct {
	Sources    []Source `json:"sources"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

// CreateSource creates a source (admin keys only).
func (c *Client) CreateSource(ctx context.Context, spec SourceSpec) (Source, error) {
	body, hdr, err := jsonBody(spec)
	if err != nil {
		return Source{}, err
	}
	var out Source
	_, err = c.do(ctx, request{method: http.MethodPost, path: "/v1/sources", header: hdr, body: body, out: &out})
	return out, err
}

// ListSources returns a page of sources after cursor ("" for the first).
func (c *Client) ListSources(ctx context.Context, cursor string, limit int) (SourcePage, error) {
	return c.ListTenantSources(ctx, "", cursor, limit)
}

// ListTenantSources is ListSources of one tenant's sources only (every
// source for ""). A tenant's key lists only its own tenant's anyway.
func (c *Client) ListTenantSources(ctx context.Context, tenant, cursor string, limit int) (SourcePage, error) {
	q := url.Values{}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out SourcePage
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/sources", query: q, out: &out})
	return out, err
}

// GetSource returns the source with its status.
func (c *Client) GetSource(ctx context.Context, id string) (Source, error) {
	return c.sourceCall(ctx, http.MethodGet, id, "", nil)
}

// UpdateSource changes the members spec sets (its Kind must be empty or
// the source's own).
func (c *Client) UpdateSource(ctx context.Context, id string, spec SourceSpec) (Source, error) {
	return c.sourceCall(ctx, http.MethodPatch, id, "", spec)
}

// PauseSource stops the source; its position stays in its service.
func (c *Client) PauseSource(ctx context.Context, id string) (Source, error) {
	return c.sourceCall(ctx, http.MethodPost, id, "/pause", nil)
}

// ResumeSource runs a paused source again.
func (c *Client) ResumeSource(ctx context.Context, id string) (Source, error) {
	return c.sourceCall(ctx, http.MethodPost, id, "/resume", nil)
}

// DeleteSource deletes the source.
func (c *Client) DeleteSource(ctx context.Context, id string) error {
	seg, err := segment("id", id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/sources/" + seg})
	return err
}

func (c *Client) sourceCall(ctx context.Context, method, id, suffix string, in any) (Source, error) {
	seg, err := segment("id", id)
	if err != nil {
		return Source{}, err
	}
	r := request{method: method, path: "/v1/sources/" + seg + suffix}
	if in != nil {
		if r.body, r.header, err = jsonBody(in); err != nil {
			return Source{}, err
		}
	}
	var out Source
	r.out = &out
	_, err = c.do(ctx, r)
	return out, err
}
