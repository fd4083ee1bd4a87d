package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// MaxPositions bounds the per-topic positions a client may resume from
// (the WebSocket "positions" object, or the topics in an SSE
// Last-Event-ID).
const MaxPositions = 10000

type startKind uint8

const (
	startLive startKind = iota // only events committed from now on
	startSeq                   // after a seq
	startTime                  // from the first event at or after a time
)

// startSpec is where a subscription starts: a default for every topic it
// covers (live, a seq or a time) and positions that override it for
// some topics.
type startSpec struct {
	kind      startKind
	seq       int64
	time      time.Time
	positions map[string]int64
	// mark is the start time carried in a pattern stream's SSE id; zero
	// when the stream started from a position rather than live.
	mark time.Time
}

// replays reports whether the subscription reads history before going
// live.
func (st startSpec) replays() bool { return st.kind != startLive || len(st.positions) > 0 }

// after returns the seq after which the subscription starts in the topic,
// and false when it starts live there.
func (st startSpec) after(ctx context.Context, store Store, topic string) (int64, bool, error) {
	if p, ok := st.positions[topic]; ok {
		return p, true, nil
	}
	switch st.kind {
	case startSeq:
		return st.seq, true, nil
	case startTime:
		seq, err := store.SeqAtTime(ctx, topic, st.time)
		if err != nil {
			return 0, false, err
		}
		return seq - 1, true, nil
	}
	return 0, false, nil
}

// parseSince reads a start given as text (the ?since= parameter): a seq
// ("0" means every retained event) or an RFC 3339 time.
func parseSince(s, field string) (startSpec, error) {
	if s == "" {
		return startSpec{}, nil
	}
	if isDigits(s) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return startSpec{}, herald.FieldErrorf(field, "since %q is out of range", s)
		}
		return startSpec{kind: startSeq, seq: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return startSpec{}, herald.FieldErrorf(field, "since must be a seq (0 or more) or an RFC 3339 time, got %q", s)
	}
	return startSpec{kind: startTime, time: t}, nil
}

// parseSinceJSON reads the "since" of a WebSocket subscribe: absent or
// null (live), a seq, or an RFC 3339 time string.
func parseSinceJSON(raw json.RawMessage) (startSpec, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return startSpec{}, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return startSpec{}, herald.FieldErrorf("since", "since must be a seq or an RFC 3339 time string")
		}
		if isDigits(s) {
			return startSpec{}, herald.FieldErrorf("since", "since %q: give a seq as a number, a time as an RFC 3339 string", s)
		}
		return parseSince(s, "since")
	}
	s := string(raw)
	if !isDigits(s) {
		return startSpec{}, herald.FieldErrorf("since", "since must be a seq (a whole number, 0 or more) or an RFC 3339 time string")
	}
	return parseSince(s, "since")
}

// checkPositions validates resume positions against the subscription's
// topic or pattern.
func checkPositions(pattern string, p map[string]int64) error {
	if len(p) > MaxPositions {
		return herald.FieldErrorf("positions", "%d positions; the limit is %d", len(p), MaxPositions)
	}
	for topic, seq := range p {
		if err := herald.ValidateTopicName(topic); err != nil {
			return herald.FieldErrorf("positions", "positions: %s", err.(*herald.Error).Message)
		}
		if !herald.MatchTopic(pattern, topic) {
			return herald.FieldErrorf("positions", "positions: topic %q does not match %q", topic, pattern)
		}
		if seq < 0 {
			return herald.FieldErrorf("positions", "positions: the seq of %q must be 0 or more", topic)
		}
	}
	return nil
}

// parseLastEventID reads the id an EventSource sends back when it
// reconnects. For a single topic it is the seq of the last event. For a
// pattern it is the position vector written by formatPositionID:
// "@<unix ms>" (the time the stream first started live, if it did), then
// ",<topic>=<seq>" for each topic the stream has covered.
func parseLastEventID(id, pattern string) (startSpec, error) {
	const field = "Last-Event-ID"
	if isDigits(id) {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil {
			return startSpec{}, herald.FieldErrorf(field, "Last-Event-ID %q is out of range", id)
		}
		if herald.IsPattern(pattern) {
			return startSpec{kind: startSeq, seq: n}, nil
		}
		return startSpec{positions: map[string]int64{pattern: n}}, nil
	}
	if !herald.IsPattern(pattern) {
		return startSpec{}, herald.FieldErrorf(field, "Last-Event-ID must be the seq of an event of %s", pattern)
	}
	st := startSpec{positions: map[string]int64{}}
	for i, part := range strings.Split(id, ",") {
		if i == 0 && strings.HasPrefix(part, "@") {
			ms, err := strconv.ParseInt(part[1:], 10, 64)
			if err != nil || ms < 0 || !isDigits(part[1:]) {
				return startSpec{}, herald.FieldErrorf(field, "Last-Event-ID: bad start mark %q", part)
			}
			st.mark = time.UnixMilli(ms).UTC()
			continue
		}
		topic, seqText, ok := strings.Cut(part, "=")
		seq, err := strconv.ParseInt(seqText, 10, 64)
		if !ok || err != nil || !isDigits(seqText) {
			return startSpec{}, herald.FieldErrorf(field, "Last-Event-ID: want \"@<ms>,<topic>=<seq>,...\", got %q", part)
		}
		st.positions[topic] = seq
	}
	if err := checkPositions(pattern, st.positions); err != nil {
		return startSpec{}, herald.FieldErrorf(field, "Last-Event-ID: %s", err.(*herald.Error).Message)
	}
	return st, nil
}

// formatPositionID writes a pattern stream's event id (see
// parseLastEventID).
func formatPositionID(b []byte, mark time.Time, p *positions) []byte {
	if !mark.IsZero() {
		b = append(b, '@')
		b = strconv.AppendInt(b, mark.UnixMilli(), 10)
	}
	for i, c := range p.sorted() {
		if i > 0 || !mark.IsZero() {
			b = append(b, ',')
		}
		b = append(b, c.topic...)
		b = append(b, '=')
		b = strconv.AppendInt(b, c.after, 10)
	}
	return b
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func quote(s string) string { return strconv.Quote(s) }
