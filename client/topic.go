package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
)

// TopicSettings are the settings of a topic. A nil field is left out of
// the request, and the server applies its default (retention 7d,
// max_event_bytes 256 KiB, dedup_window 24h), also when it updates an
// existing topic: PutTopic replaces the settings, it does not merge them.
// A set field is sent as it is, zero included: DedupWindow
// new(time.Duration(0)) turns deduplication off, while a zero Retention or
// MaxEventBytes is out of range and refused.
type TopicSettings struct {
	Retention     *time.Duration // how long events are kept: 1m to 365d
	MaxEventBytes *int           // largest payload accepted: 1 to 4 MiB
	DedupWindow   *time.Duration // how long an idempotency key is remembered: 0 (off) to 30d
}

// Topic is a topic as the server reports it, with its statistics. It
// marshals to and from the API's JSON form.
type Topic struct {
	Name          string
	Retention     time.Duration
	MaxEventBytes int
	DedupWindow   time.Duration
	CreatedAt     time.Time
	UpdatedAt     time.Time
	HeadSeq       int64 // seq of the newest event ever published; 0 if none
	FirstSeq      int64 // seq of the oldest retained event; 0 if none retained
	EventCount    int64 // retained events
}

type topicJSON struct {
	Name          string `json:"name"`
	Retention     string `json:"retention"`
	MaxEventBytes int    `json:"max_event_bytes"`
	DedupWindow   string `json:"dedup_window"`
	CreatedAt     string `json:"created_at"`
	UpdatedAt     string `json:"updated_at"`
	HeadSeq       int64  `json:"head_seq"`
	FirstSeq      int64  `json:"first_seq"`
	EventCount    int64  `json:"event_count"`
}

// MarshalJSON writes the API's form of a topic.
func (t Topic) MarshalJSON() ([]byte, error) {
	return marshal(topicJSON{
		Name: t.Name, Retention: formatDuration(t.Retention), MaxEventBytes: t.MaxEventBytes,
		DedupWindow: formatDuration(t.DedupWindow), CreatedAt: formatTime(t.CreatedAt),
		UpdatedAt: formatTime(t.UpdatedAt), HeadSeq: t.HeadSeq, FirstSeq: t.FirstSeq, EventCount: t.EventCount,
	})
}

// UnmarshalJSON reads the API's form of a topic.
func (t *Topic) UnmarshalJSON(b []byte) error {
	var w topicJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	out := Topic{Name: w.Name, MaxEventBytes: w.MaxEventBytes, HeadSeq: w.HeadSeq, FirstSeq: w.FirstSeq, EventCount: w.EventCount}
	var err error
	if out.Retention, err = parseDuration("retention", w.Retention); err != nil {
		return err
	}
	if out.DedupWindow, err = parseDuration("dedup_window", w.DedupWindow); err != nil {
		return err
	}
	if out.CreatedAt, err = parseTime("created_at", w.CreatedAt); err != nil {
		return err
	}
	if out.UpdatedAt, err = parseTime("updated_at", w.UpdatedAt); err != nil {
		return err
	}
	*t = out
	return nil
}

// TopicPage is one page of ListTopics.
type TopicPage struct {
	Topics     []Topic `json:"topics"`
	NextCursor string  `json:"next_cursor,omitempty"` // pass to ListTopics for the next page; "" on the last page
}

// PutTopic creates the topic with the settings, or replaces the settings of
// an existing one (its events and seqs stay). It returns the stored topic and whether it was created.
// It needs an admin key. Invalid names or settings are a *Problem with
// status 400 naming the field.
func (c *Client) PutTopic(ctx context.Context, name string, s TopicSettings) (Topic, bool, error) {
	seg, err := segment("topic", name)
	if err != nil {
		return Topic{}, false, err
	}
	settings := struct {
		Retention     *string `json:"retention,omitempty"`
		MaxEventBytes *int    `json:"max_event_bytes,omitempty"`
		DedupWindow   *string `json:"dedup_window,omitempty"`
	}{MaxEventBytes: s.MaxEventBytes}
	if s.Retention != nil {
		settings.Retention = new(herald.FormatDuration(*s.Retention)) // "0s", not "": zero is a value here
	}
	if s.DedupWindow != nil {
		settings.DedupWindow = new(herald.FormatDuration(*s.DedupWindow))
	}
	body, hdr, err := jsonBody(settings)
	if err != nil {
		return Topic{}, false, err
	}
	var t Topic
	status, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/topics/" + seg, header: hdr, body: body, out: &t})
	if err != nil {
		return Topic{}, false, err
	}
	return t, status == http.StatusCreated, nil
}

// GetTopic returns the topic with its statistics; a missing topic is a
// *Problem with status 404.
func (c *Client) GetTopic(ctx context.Context, name string) (Topic, error) {
	seg, err := segment("topic", name)
	if err != nil {
		return Topic{}, err
	}
	var t Topic
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/v1/topics/" + seg, out: &t})
	return t, err
}

// ListTopics returns one page of the topics the key may read, in name
// order, starting after cursor ("" for the first page). limit is 1 to 1000;
// 0 lets the server choose (100).
func (c *Client) ListTopics(ctx context.Context, cursor string, limit int) (TopicPage, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p TopicPage
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/topics", query: q, out: &p})
	return p, err
}

// DeleteTopic deletes the topic with its events. It needs an admin key; a
// missing topic is a *Problem with status 404.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	seg, err := segment("topic", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/topics/" + seg})
	return err
}
