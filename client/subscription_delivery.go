package client

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
)

// DeadLetter is an event that used up its retries for a subscription.
type DeadLetter struct {
	Topic     string
	Seq       int64
	EventID   string
	Key       string // the event key; "" when none
	Attempts  int
	LastError string // the reason from the documented set (docs/webhooks.md)
	// LastErrorDetail is the raw cause behind LastError; only admin keys
	// are shown it.
	LastErrorDetail string
	DeadAt          time.Time
}

type deadLetterJSON struct {
	Topic           string `json:"topic"`
	Seq             int64  `json:"seq"`
	EventID         string `json:"event_id"`
	Key             string `json:"key,omitempty"`
	Attempts        int    `json:"attempts"`
	LastError       string `json:"last_error"`
	LastErrorDetail string `json:"last_error_detail,omitempty"`
	DeadAt          string `json:"dead_at"`
}

// MarshalJSON writes the API's form of a dead letter.
func (d DeadLetter) MarshalJSON() ([]byte, error) {
	return marshal(deadLetterJSON{d.Topic, d.Seq, d.EventID, d.Key, d.Attempts, d.LastError, d.LastErrorDetail, formatTime(d.DeadAt)})
}

// UnmarshalJSON reads the API's form of a dead letter.
func (d *DeadLetter) UnmarshalJSON(b []byte) error {
	var w deadLetterJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	t, err := parseTime("dead_at", w.DeadAt)
	if err != nil {
		return err
	}
	*d = DeadLetter{w.Topic, w.Seq, w.EventID, w.Key, w.Attempts, w.LastError, w.LastErrorDetail, t}
	return nil
}

// DeadLetterPage is one page of ListDeadLetters.
type DeadLetterPage struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	NextCursor  string       `json:"next_cursor,omitempty"` // "" on the last page
}

// ListDeadLetters returns one page of the subscription's dead letters in
// (topic, seq) order, after cursor ("" for the first page). limit is 1 to
// 1000; 0 lets the server choose (100).
func (c *Client) ListDeadLetters(ctx context.Context, id, cursor string, limit int) (DeadLetterPage, error) {
	path, err := subPath(id, "/dead-letters")
	if err != nil {
		return DeadLetterPage{}, err
	}
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p DeadLetterPage
	_, err = c.do(ctx, request{method: http.MethodGet, path: path, query: q, out: &p})
	return p, err
}

// RedriveDeadLetters moves the dead letters of the given events (nil: all)
// back into the subscription's retry set, due now with a fresh count of
// attempts, and returns how many moved. An empty non-nil list is refused.
func (c *Client) RedriveDeadLetters(ctx context.Context, id string, eventIDs []string) (int64, error) {
	var out struct {
		Redriven int64 `json:"redriven"`
	}
	err := c.subCall(ctx, http.MethodPost, id, "/dead-letters/redrive", struct {
		EventIDs []string `json:"event_ids,omitempty"`
	}{eventIDs}, &out)
	return out.Redriven, err
}

// DeleteDeadLetters deletes the subscription's dead letters of the event
// with the id, or all of them when eventID is "", and returns how many.
// Naming an event that has no dead letter is a *Problem with status 404.
func (c *Client) DeleteDeadLetters(ctx context.Context, id, eventID string) (int64, error) {
	suffix := "/dead-letters"
	if eventID != "" {
		suffix += "/" + url.PathEscape(eventID)
	}
	var out struct {
		Deleted int64 `json:"deleted"`
	}
	err := c.subCall(ctx, http.MethodDelete, id, suffix, nil, &out)
	return out.Deleted, err
}

// ReplayOptions say which retained events Replay schedules again.
type ReplayOptions struct {
	// FromSeq is the first seq, used when FromTime is zero.
	FromSeq int64
	// FromTime, when not zero, starts at the first event at or after it.
	FromTime time.Time
	// ToSeq is the last seq; 0 means the topic's head.
	ToSeq int64
	// Topic limits a pattern subscription's replay to one matching topic;
	// "" replays every matching topic.
	Topic string
}

// ReplayResult is what Replay scheduled and what it left out.
type ReplayResult struct {
	Scheduled      int64 `json:"scheduled"`       // events put in the retry set, due now
	AlreadyPending int64 `json:"already_pending"` // events already waiting in the retry set, left as they are
	NotRetained    int64 `json:"not_retained"`    // events that passed retention
	// Reason says why nothing was scheduled (or that the request stopped
	// at its limit); "" otherwise.
	Reason string `json:"reason,omitempty"`
}

// Replay puts retained events back in the subscription's retry set, due
// now, and returns how many it scheduled (at most 100000 per call; events
// already waiting are left as they are) with what it left out, and why
// when it scheduled nothing. They are delivered once the subscription is
// active.
func (c *Client) Replay(ctx context.Context, id string, o ReplayOptions) (ReplayResult, error) {
	in := struct {
		FromSeq  *int64 `json:"from_seq,omitempty"`
		FromTime string `json:"from_time,omitempty"`
		ToSeq    int64  `json:"to_seq,omitempty"`
		Topic    string `json:"topic,omitempty"`
	}{ToSeq: o.ToSeq, Topic: o.Topic}
	if o.FromTime.IsZero() {
		in.FromSeq = new(o.FromSeq)
	} else {
		in.FromTime = o.FromTime.UTC().Format(time.RFC3339Nano)
	}
	var out ReplayResult
	err := c.subCall(ctx, http.MethodPost, id, "/replay", in, &out)
	return out, err
}

// Attempt is one try to deliver one event to a subscription.
type Attempt struct {
	// ID is the attempt's place in the attempt log; 0 for a sampled
	// success (Sampled): successes are counted and sampled, not logged.
	ID         int64
	Sampled    bool
	Topic      string
	Seq        int64
	EventID    string
	Attempt    int // 1 for the first try
	Time       time.Time
	Outcome    herald.Outcome
	StatusCode int // 0 when there was no response
	Latency    time.Duration
	Error      string // the reason from the documented set (docs/webhooks.md)
	// ErrorDetail is the raw cause behind Error; only admin keys are
	// shown it.
	ErrorDetail string
	Response    string // at most 1 KiB of the response body
}

type attemptJSON struct {
	ID          int64   `json:"id,omitempty"`
	Sampled     bool    `json:"sampled,omitempty"`
	Topic       string  `json:"topic"`
	Seq         int64   `json:"seq"`
	EventID     string  `json:"event_id"`
	Attempt     int     `json:"attempt"`
	Time        string  `json:"time"`
	Outcome     string  `json:"outcome"`
	StatusCode  int     `json:"status_code,omitempty"`
	LatencyMS   float64 `json:"latency_ms"`
	Error       string  `json:"error,omitempty"`
	ErrorDetail string  `json:"error_detail,omitempty"`
	Response    string  `json:"response,omitempty"`
}

// MarshalJSON writes the API's form of an attempt.
func (a Attempt) MarshalJSON() ([]byte, error) {
	return marshal(attemptJSON{
		ID: a.ID, Sampled: a.Sampled, Topic: a.Topic, Seq: a.Seq, EventID: a.EventID, Attempt: a.Attempt, Time: formatTime(a.Time),
		Outcome: string(a.Outcome), StatusCode: a.StatusCode, LatencyMS: float64(a.Latency) / float64(time.Millisecond),
		Error: a.Error, ErrorDetail: a.ErrorDetail, Response: a.Response,
	})
}

// UnmarshalJSON reads the API's form of an attempt.
func (a *Attempt) UnmarshalJSON(b []byte) error {
	var w attemptJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	t, err := parseTime("time", w.Time)
	if err != nil {
		return err
	}
	*a = Attempt{
		ID: w.ID, Sampled: w.Sampled, Topic: w.Topic, Seq: w.Seq, EventID: w.EventID, Attempt: w.Attempt, Time: t,
		Outcome: herald.Outcome(w.Outcome), StatusCode: w.StatusCode,
		Latency: time.Duration(math.Round(w.LatencyMS * float64(time.Millisecond))),
		Error:   w.Error, ErrorDetail: w.ErrorDetail, Response: w.Response,
	}
	return nil
}

// AttemptPage is one page of ListAttempts.
type AttemptPage struct {
	Attempts   []Attempt `json:"attempts"`
	NextCursor string    `json:"next_cursor,omitempty"` // older attempts; "" on the last page
}

// AttemptListOptions select the attempts ListAttempts returns; zero fields
// select all, newest first, 100 at a time.
type AttemptListOptions struct {
	EventID string         // only attempts to deliver this event
	Outcome herald.Outcome // only this outcome
	Cursor  string         // from AttemptPage.NextCursor
	Limit   int            // 1 to 1000; 0: the server's default (100)
}

// ListAttempts returns one page of the subscription's delivery attempts,
// newest first.
func (c *Client) ListAttempts(ctx context.Context, id string, o AttemptListOptions) (AttemptPage, error) {
	path, err := subPath(id, "/attempts")
	if err != nil {
		return AttemptPage{}, err
	}
	q := url.Values{}
	if o.EventID != "" {
		q.Set("event_id", o.EventID)
	}
	if o.Outcome != "" {
		q.Set("outcome", string(o.Outcome))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var p AttemptPage
	_, err = c.do(ctx, request{method: http.MethodGet, path: path, query: q, out: &p})
	return p, err
}

// TestResult is how a subscription's endpoint took a test event.
type TestResult struct {
	EventID    string         // the test event's id, sent as webhook-id
	Outcome    herald.Outcome // success when the endpoint answered 2xx
	StatusCode int            // 0 when there was no response
	Latency    time.Duration
	Error      string // why it failed: a reason from the documented set (docs/webhooks.md)
	// ErrorDetail is the raw cause behind Error; only admin keys are
	// shown it.
	ErrorDetail string
	Response    string // at most 1 KiB of the response body
}

type testResultJSON struct {
	EventID     string  `json:"event_id"`
	Outcome     string  `json:"outcome"`
	StatusCode  int     `json:"status_code,omitempty"`
	LatencyMS   float64 `json:"latency_ms"`
	Error       string  `json:"error,omitempty"`
	ErrorDetail string  `json:"error_detail,omitempty"`
	Response    string  `json:"response,omitempty"`
}

// MarshalJSON writes the API's form of a test result.
func (r TestResult) MarshalJSON() ([]byte, error) {
	return marshal(testResultJSON{
		EventID: r.EventID, Outcome: string(r.Outcome), StatusCode: r.StatusCode,
		LatencyMS: float64(r.Latency) / float64(time.Millisecond), Error: r.Error, ErrorDetail: r.ErrorDetail,
		Response: r.Response,
	})
}

// UnmarshalJSON reads the API's form of a test result.
func (r *TestResult) UnmarshalJSON(b []byte) error {
	var w testResultJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = TestResult{
		EventID: w.EventID, Outcome: herald.Outcome(w.Outcome), StatusCode: w.StatusCode,
		Latency: time.Duration(math.Round(w.LatencyMS * float64(time.Millisecond))), Error: w.Error,
		ErrorDetail: w.ErrorDetail, Response: w.Response,
	}
	return nil
}

// TestSubscription sends a synthetic event of type "herald.test" to the
// subscription's endpoint now, signed like every event, and returns how the
// endpoint took it. A failing endpoint is a TestResult with Outcome
// failure, not an error. The event is in no topic's log and changes no
// delivery state (no retry, no attempt log entry). A subscription whose
// endpoint has not answered the verification challenge is a *Problem with
// status 409.
func (c *Client) TestSubscription(ctx context.Context, id string) (TestResult, error) {
	var r TestResult
	err := c.subCall(ctx, http.MethodPost, id, "/test", struct{}{}, &r)
	return r, err
}
