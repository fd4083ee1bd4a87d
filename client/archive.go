package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
)

// Archives are managed as JSON documents (see the archives section of the
// OpenAPI document): the client passes them through as they are, so every
// setting the server knows is reachable.

// PutArchive creates the archive from spec (an ArchiveSpec document) or
// replaces its settings. It returns the stored archive and whether it was
// created. It needs an admin key.
func (c *Client) PutArchive(ctx context.Context, name string, spec json.RawMessage) (json.RawMessage, bool, error) {
	seg, err := segment("name", name)
	if err != nil {
		return nil, false, err
	}
	var out json.RawMessage
	status, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/archives/" + seg, header: http.Header{"Content-Type": {"application/json"}}, body: bytes.NewReader(spec), out: &out})
	return out, status == http.StatusCreated, err
}

// GetArchive returns the archive with its statistics.
func (c *Client) GetArchive(ctx context.Context, name string) (json.RawMessage, error) {
	return c.archiveCall(ctx, http.MethodGet, name, "", nil)
}

// ListArchives returns one page of archives after cursor ("" for the first).
func (c *Client) ListArchives(ctx context.Context, cursor string) (json.RawMessage, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var out json.RawMessage
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/archives", query: q, out: &out})
	return out, err
}

// DeleteArchive deletes the archive (its files stay).
func (c *Client) DeleteArchive(ctx context.Context, name string) error {
	seg, err := segment("name", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/archives/" + seg})
	return err
}

// PauseArchive pauses the archive and returns it.
func (c *Client) PauseArchive(ctx context.Context, name string) (json.RawMessage, error) {
	return c.archiveCall(ctx, http.MethodPost, name, "/pause", nil)
}

// ResumeArchive resumes the archive and returns it.
func (c *Client) ResumeArchive(ctx context.Context, name string) (json.RawMessage, error) {
	return c.archiveCall(ctx, http.MethodPost, name, "/resume", nil)
}

// QueryArchive returns one page of archived events (an ArchivedEventPage
// document) for the query parameters (from, to, partition.KEY, topic,
// filter, cursor, limit).
func (c *Client) QueryArchive(ctx context.Context, name string, params url.Values) (json.RawMessage, error) {
	seg, err := segment("name", name)
	if err != nil {
		return nil, err
	}
	var out json.RawMessage
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/v1/archives/" + seg + "/events", query: params, out: &out})
	return out, err
}

// ReplayArchive publishes archived events (spec is an ArchiveReplay
// document) and returns how many.
func (c *Client) ReplayArchive(ctx context.Context, name string, spec json.RawMessage) (json.RawMessage, error) {
	return c.archiveCall(ctx, http.MethodPost, name, "/replay", spec)
}

func (c *Client) archiveCall(ctx context.Context, method, name, suffix string, body json.RawMessage) (json.RawMessage, error) {
	seg, err := segment("name", name)
	if err != nil {
		return nil, err
	}
	r := request{method: method, path: "/v1/archives/" + seg + suffix}
	if body != nil {
		r.body, r.header = bytes.NewReader(body), http.Header{"Content-Type": {"application/json"}}
	}
	var out json.RawMessage
	r.out = &out
	if _, err := c.do(ctx, r); err != nil {
		return nil, err
	}
	return out, nil
}
