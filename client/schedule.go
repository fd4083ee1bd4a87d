package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ScheduleEvent is the event each tick of a schedule publishes. Data is a
// JSON payload; DataBase64 any bytes (standard base64). Give one or none.
type ScheduleEvent struct {
	Topic       string            `json:"topic"`
	Type        string            `json:"type,omitempty"`
	Key         string            `json:"key,omitempty"`
	ContentType string            `json:"content_type,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Data        json.RawMessage   `json:"data,omitempty"`
	DataBase64  string            `json:"data_base64,omitempty"`
}

// Schedule is a schedule: its definition (what PutSchedule sends) and,
// in answers, its state. Exactly one of Cron and Every is set. See
// docs/schedules.md.
type Schedule struct {
	Name      string        `json:"name,omitempty"`
	Cron      string        `json:"cron,omitempty"`  // robfig/cron syntax, seconds optional
	Every     string        `json:"every,omitempty"` // an interval such as "30s" or "1h"
	TimeZone  string        `json:"time_zone,omitempty"`
	Event     ScheduleEvent `json:"event"`
	StartAt   time.Time     `json:"start_at,omitzero"`
	EndAt     time.Time     `json:"end_at,omitzero"`
	Missed    string        `json:"missed,omitempty"` // skip (default), once or all
	MaxMissed int           `json:"max_missed,omitempty"`
	Paused    bool          `json:"paused"`

	LastTick      time.Time   `json:"last_tick,omitzero"`
	NextFireTimes []time.Time `json:"next_fire_times,omitempty"`
	CreatedAt     time.Time   `json:"created_at,omitzero"`
	UpdatedAt     time.Time   `json:"updated_at,omitzero"`
}

// SchedulePage is one page of ListSchedules.
type SchedulePage struct {
	Schedules  []Schedule `json:"schedules"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// PutSchedule creates the schedule or replaces its definition, and
// reports whether it was created. It needs an admin key; a bad
// definition is a *Problem with status 400 naming the field.
func (c *Client) PutSchedule(ctx context.Context, name string, s Schedule) (Schedule, bool, error) {
	seg, err := segment("name", name)
	if err != nil {
		return Schedule{}, false, err
	}
	s.Name, s.LastTick, s.NextFireTimes, s.CreatedAt, s.UpdatedAt = "", time.Time{}, nil, time.Time{}, time.Time{}
	body, hdr, err := jsonBody(s)
	if err != nil {
		return Schedule{}, false, err
	}
	var out Schedule
	status, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/schedules/" + seg, header: hdr, body: body, out: &out})
	return out, status == http.StatusCreated, err
}

// GetSchedule returns the schedule with its last tick and next fire times.
func (c *Client) GetSchedule(ctx context.Context, name string) (Schedule, error) {
	return c.scheduleCall(ctx, http.MethodGet, name, "")
}

// PauseSchedule pauses the schedule: no tick fires until ResumeSchedule.
func (c *Client) PauseSchedule(ctx context.Context, name string) (Schedule, error) {
	return c.scheduleCall(ctx, http.MethodPost, name, "/pause")
}

// ResumeSchedule resumes the schedule; the ticks that passed while it was
// paused do not fire.
func (c *Client) ResumeSchedule(ctx context.Context, name string) (Schedule, error) {
	return c.scheduleCall(ctx, http.MethodPost, name, "/resume")
}

func (c *Client) scheduleCall(ctx context.Context, method, name, suffix string) (Schedule, error) {
	seg, err := segment("name", name)
	if err != nil {
		return Schedule{}, err
	}
	var out Schedule
	_, err = c.do(ctx, request{method: method, path: "/v1/schedules/" + seg + suffix, out: &out})
	return out, err
}

// DeleteSchedule deletes the schedule; a missing one is a 404 *Problem.
func (c *Client) DeleteSchedule(ctx context.Context, name string) error {
	seg, err := segment("name", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/schedules/" + seg})
	return err
}

// ListSchedules returns one page of schedules in name order after cursor
// ("" for the first). limit is 1 to 1000; 0 lets the server choose.
func (c *Client) ListSchedules(ctx context.Context, cursor string, limit int) (SchedulePage, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out SchedulePage
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/schedules", query: q, out: &out})
	return out, err
}

// ScheduledEvent is a delayed event waiting for its due time.
type ScheduledEvent struct {
	Event
	DeliverAt time.Time
}

// ScheduledPage is one page of ListScheduled.
type ScheduledPage struct {
	Events     []ScheduledEvent
	NextCursor string // "" on the last page
}

// ListScheduled returns one page of the topic's delayed events still
// waiting, in due order.
func (c *Client) ListScheduled(ctx context.Context, topic, cursor string, limit int) (ScheduledPage, error) {
	seg, err := segment("topic", topic)
	if err != nil {
		return ScheduledPage{}, err
	}
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var page struct {
		Events     []json.RawMessage `json:"events"`
		NextCursor string            `json:"next_cursor"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/topics/" + seg + "/scheduled", query: q, out: &page}); err != nil {
		return ScheduledPage{}, err
	}
	out := ScheduledPage{NextCursor: page.NextCursor}
	for _, b := range page.Events {
		var se ScheduledEvent
		if err := json.Unmarshal(b, &se.Event); err != nil {
			return ScheduledPage{}, err
		}
		var due struct {
			DeliverAt time.Time `json:"deliver_at"`
		}
		if err := json.Unmarshal(b, &due); err != nil {
			return ScheduledPage{}, err
		}
		se.DeliverAt = due.DeliverAt
		out.Events = append(out.Events, se)
	}
	return out, nil
}

// CancelScheduled cancels a delayed event before its due time; once it
// was published (or if it never was delayed) the answer is a 404 *Problem.
func (c *Client) CancelScheduled(ctx context.Context, topic, id string) error {
	seg, err := segment("topic", topic)
	if err != nil {
		return err
	}
	idSeg, err := segment("id", id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/topics/" + seg + "/scheduled/" + idSeg})
	return err
}
