package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
)

// FromNow, as the since of Stream, starts with the events committed once
// the stream is open.
const FromNow int64 = -1

// streamResumeMargin widens a time-based resume for topics of a pattern
// the stream has received nothing from: an event's time is taken a little
// before its commit. It can only add events the stream never delivered.
const streamResumeMargin = 10 * time.Second

// maxStreamFrame bounds one frame from the server: the largest payload a
// topic may accept (4 MiB), in base64, with its metadata.
const maxStreamFrame = 8 << 20

// StreamOptions tune Stream. Every field is optional.
type StreamOptions struct {
	// SinceTime, when not zero, starts from the first event at or after
	// this time, in every topic the stream covers; since is then ignored.
	SinceTime time.Time
	// Positions resumes a pattern stream per topic: the seq last received
	// in each topic (Stream.Positions of an earlier stream). Topics not
	// listed start from since or SinceTime.
	Positions map[string]int64
	// Filter selects events by type and payload, in the filter language
	// of webhook subscriptions (JSON, see package filter), or by a CEL
	// expression (a JSON string: `"event.data.amount > 100"`).
	Filter json.RawMessage
	// Format "json" asks for protobuf payloads rendered as JSON (through
	// their topic's schema): Event.Payload is then the JSON. "" sends
	// payloads as they were published.
	Format string
	// OnGap is called from Next when events passed the topic's retention
	// before the stream could deliver them.
	OnGap func(Gap)
	// MaxBackoff caps the wait between reconnection attempts (default 5s).
	MaxBackoff time.Duration
}

// Gap reports events lost to retention: seqs MissedFrom to MissedTo of
// Topic are gone; FirstSeq is the oldest one retained.
type Gap struct {
	Topic      string `json:"topic"`
	MissedFrom int64  `json:"missed_from"`
	MissedTo   int64  `json:"missed_to"`
	FirstSeq   int64  `json:"first_seq"`
}

// Stream follows a topic or pattern over a WebSocket (GET /v1/stream).
// When the connection drops (network, server restart, or the server
// cutting off a reader that fell behind) Next reconnects and resumes
// after the last event it returned, so events come once each and in seq
// order per topic. A Stream is for one goroutine at a time; call Close
// when done. Call Next steadily: the connection answers the server's
// keep-alive pings only while Next reads.
type Stream struct {
	c       *Client
	topic   string
	pattern bool
	since   int64
	opts    StreamOptions

	conn *websocket.Conn
	// positions is the last seq delivered per topic.
	positions map[string]int64
	// liveFrom is when a live pattern stream first began; on a resume,
	// topics it has seen nothing of start there.
	liveFrom time.Time
	backoff  time.Duration
	progress bool  // an event came since the last (re)connect
	err      error // the stream has ended for good
}

// Stream opens a stream of topic (a name or a pattern such as "orders.*"):
// the events after seq since (0: every retained event), or FromNow. It
// connects before returning, so a refusal (a *Problem: 401, 403, 404 for
// an unknown topic, 400 for a bad filter) or an unreachable server (a
// *ConnError) is reported here; later failures are retried by Next. The
// Client's key needs the read or subscribe scope on the topic.
func (c *Client) Stream(ctx context.Context, topic string, since int64, opts StreamOptions) (*Stream, error) {
	if c.baseErr != nil {
		return nil, c.baseErr
	}
	if err := herald.ValidatePattern(topic); err != nil {
		return nil, err
	}
	if since < FromNow {
		return nil, herald.FieldErrorf("since", "since must be a seq (0 or more) or FromNow")
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	s := &Stream{c: c, topic: topic, pattern: herald.IsPattern(topic), since: since, opts: opts,
		positions: maps.Clone(opts.Positions)}
	if s.positions == nil {
		s.positions = map[string]int64{}
	}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Positions returns the seq of the last event delivered per topic (for a
// single topic, also where it started), to resume a later stream from.
func (s *Stream) Positions() map[string]int64 { return maps.Clone(s.positions) }

// Close ends the stream; Next then fails. It tells the server politely
// and returns once the connection is closed; its result is always nil.
func (s *Stream) Close() error {
	if s.err == nil {
		s.err = errors.New("the stream is closed")
	}
	if s.conn != nil {
		_ = s.conn.Close(websocket.StatusNormalClosure, "") // the connection ends either way
		s.conn = nil
	}
	return nil
}

// Next returns the next event, waiting for it as long as ctx allows, and
// reconnecting as needed. It returns an error when ctx ends (the stream
// stays usable: the next call resumes), when the server refuses the
// stream for good (a *Problem: 401 once the key is deleted, 403, 404 once
// the topic is deleted; or the close of an expired token), and after
// Close; such errors stay: every later call returns them.
func (s *Stream) Next(ctx context.Context) (Event, error) {
	for {
		if s.err != nil {
			return Event{}, s.err
		}
		if s.conn == nil {
			if err := s.reconnect(ctx); err != nil {
				return Event{}, err
			}
		}
		_, data, err := s.conn.Read(ctx)
		if err != nil {
			_ = s.conn.CloseNow()
			s.conn = nil
			if ctx.Err() != nil {
				return Event{}, fmt.Errorf("stream %s: %w", s.topic, context.Cause(ctx))
			}
			if websocket.CloseStatus(err) == websocket.StatusPolicyViolation {
				s.err = fmt.Errorf("stream %s: the server ended it: %w", s.topic, err)
			}
			continue // dropped, restarting or too slow: resume
		}
		var f streamFrame
		if err := json.Unmarshal(data, &f); err != nil {
			return Event{}, fmt.Errorf("stream %s: a frame is not Herald's JSON: %w", s.topic, err)
		}
		switch f.Op {
		case "event":
			var e Event
			if err := json.Unmarshal(data, &e); err != nil {
				return Event{}, fmt.Errorf("stream %s: event frame: %w", s.topic, err)
			}
			s.positions[e.Topic] = e.Seq
			s.progress = true
			return e, nil
		case "gap":
			if s.opts.OnGap != nil {
				s.opts.OnGap(Gap{Topic: f.Topic, MissedFrom: f.MissedFrom, MissedTo: f.MissedTo, FirstSeq: f.FirstSeq})
			}
		case "error":
			_ = s.conn.CloseNow()
			s.conn = nil
			if p := f.problem(); p.Status < 500 {
				s.err = p
			} // else the server could not read its log: try again
		}
	}
}

// reconnect connects again. Attempts that fail for reasons that may pass
// (no server, restarting, too many connections), and connections that
// ended before delivering anything, wait a growing, jittered while first.
func (s *Stream) reconnect(ctx context.Context) error {
	for {
		if s.progress {
			s.backoff, s.progress = 0, false
		} else {
			s.backoff = min(max(2*s.backoff, 100*time.Millisecond), s.opts.MaxBackoff)
			t := time.NewTimer(s.backoff/2 + rand.N(s.backoff/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("stream %s: %w", s.topic, context.Cause(ctx))
			case <-t.C:
			}
		}
		err := s.connect(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("stream %s: %w", s.topic, context.Cause(ctx))
		}
		if p, ok := errors.AsType[*Problem](err); ok && p.Status < 500 && p.Status != http.StatusTooManyRequests {
			s.err = err
			return err
		}
	}
}

// connect dials, subscribes from the current positions and waits for the
// acknowledgement.
func (s *Stream) connect(ctx context.Context) error {
	u := s.c.base + "/v1/stream"
	h := http.Header{}
	if s.c.key != "" {
		h.Set("Authorization", "Bearer "+s.c.key)
	}
	if s.c.ua != "" {
		h.Set("User-Agent", s.c.ua)
	}
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: s.c.hc, HTTPHeader: h})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("stream %s: %w", s.topic, context.Cause(ctx))
		}
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode >= 300 {
			return decodeProblem(resp, s.c.base)
		}
		return &ConnError{URL: s.c.base, Err: err}
	}
	conn.SetReadLimit(maxStreamFrame)
	op, err := json.Marshal(s.subscribeOp())
	if err == nil {
		err = conn.Write(ctx, websocket.MessageText, op)
	}
	for err == nil {
		var data []byte
		if _, data, err = conn.Read(ctx); err != nil {
			break
		}
		var f streamFrame
		if err = json.Unmarshal(data, &f); err != nil {
			break
		}
		switch f.Op {
		case "subscribed":
			s.acknowledged(f)
			s.conn = conn
			return nil
		case "error":
			_ = conn.CloseNow()
			return f.problem()
		}
	}
	_ = conn.CloseNow()
	if ctx.Err() != nil {
		return fmt.Errorf("stream %s: %w", s.topic, context.Cause(ctx))
	}
	return &ConnError{URL: s.c.base, Err: err}
}

// subscribeOp is the subscribe message for where the stream stands.
func (s *Stream) subscribeOp() map[string]any {
	op := map[string]any{"op": "subscribe", "id": "s", "topic": s.topic}
	if len(s.opts.Filter) > 0 {
		op["filter"] = s.opts.Filter
	}
	if s.opts.Format != "" {
		op["format"] = s.opts.Format
	}
	if !s.pattern {
		if last, ok := s.positions[s.topic]; ok {
			op["since"] = last
			return op
		}
	}
	if len(s.positions) > 0 {
		op["positions"] = s.positions
	}
	switch {
	case !s.opts.SinceTime.IsZero():
		op["since"] = s.opts.SinceTime.UTC().Format(time.RFC3339Nano)
	case s.since >= 0:
		op["since"] = s.since
	case !s.liveFrom.IsZero():
		op["since"] = s.liveFrom.Add(-streamResumeMargin).UTC().Format(time.RFC3339Nano)
	}
	return op
}

// acknowledged records where a new subscription starts.
func (s *Stream) acknowledged(f streamFrame) {
	if !s.pattern && f.AfterSeq != nil {
		if _, ok := s.positions[s.topic]; !ok {
			s.positions[s.topic] = *f.AfterSeq
		}
	}
	if s.pattern && s.liveFrom.IsZero() && s.since < 0 && s.opts.SinceTime.IsZero() {
		if t, err := time.Parse(time.RFC3339Nano, f.Time); err == nil {
			s.liveFrom = t
		}
	}
}

// streamFrame is a server frame, with the fields Stream reads.
type streamFrame struct {
	Op         string          `json:"op"`
	Topic      string          `json:"topic"`
	AfterSeq   *int64          `json:"after_seq"`
	Time       string          `json:"time"`
	MissedFrom int64           `json:"missed_from"`
	MissedTo   int64           `json:"missed_to"`
	FirstSeq   int64           `json:"first_seq"`
	Error      json.RawMessage `json:"error"`
}

func (f streamFrame) problem() *Problem {
	var p Problem
	if err := json.Unmarshal(f.Error, &p); err != nil || p.Status == 0 {
		return &Problem{Status: http.StatusInternalServerError, Title: "Internal error",
			Detail: "the server sent an error frame that is not a problem: " + strings.TrimSpace(string(f.Error))}
	}
	return &p
}
