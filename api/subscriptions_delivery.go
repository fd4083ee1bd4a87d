package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// Limits of the delivery endpoints.
const (
	// maxReplay bounds the events one replay request schedules.
	maxReplay = 100000
	// maxRedriveIDs bounds the event ids of one redrive request.
	maxRedriveIDs = 1000
)

// deadLetterJSON is a dead letter on the wire.
type deadLetterJSON struct {
	Topic     string `json:"topic"`
	Seq       int64  `json:"seq"`
	EventID   string `json:"event_id"`
	Key       string `json:"key,omitempty"`
	Attempts  int    `json:"attempts"`
	LastError string `json:"last_error"`
	// LastErrorDetail is the raw cause behind LastError, for admins.
	LastErrorDetail string `json:"last_error_detail,omitempty"`
	DeadAt          string `json:"dead_at"`
}

type deadLetterListJSON struct {
	DeadLetters []deadLetterJSON `json:"dead_letters"`
	NextCursor  string           `json:"next_cursor,omitempty"`
}

// Dead letter cursors are the (topic, seq) of the last one returned.
func encodePosCursor(c herald.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.Topic + " " + strconv.FormatInt(c.Seq, 10)))
}

func decodePosCursor(s string) (herald.Cursor, error) {
	if s == "" {
		return herald.Cursor{}, nil
	}
	bad := herald.FieldErrorf("cursor", "cursor is not one this server issued")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return herald.Cursor{}, bad
	}
	topic, seqText, ok := strings.Cut(string(b), " ")
	seq, err := strconv.ParseInt(seqText, 10, 64)
	if !ok || err != nil || seq < 0 || herald.ValidateTopicName(topic) != nil {
		return herald.Cursor{}, bad
	}
	return herald.Cursor{Topic: topic, Seq: seq}, nil
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	after, err := decodePosCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	if err := s.touch(r.Context(), &sub); err != nil {
		return err
	}
	dls, err := s.subs.ListDeadLetters(r.Context(), sub.ID, after, int(limit)+1)
	if err != nil {
		return err
	}
	out := deadLetterListJSON{DeadLetters: []deadLetterJSON{}}
	for i, d := range dls {
		if i == int(limit) {
			last := dls[i-1]
			out.NextCursor = encodePosCursor(herald.Cursor{Topic: last.Topic, Seq: last.Seq})
			break
		}
		reason, detail := splitReason(d.LastError, showsDetail(r))
		out.DeadLetters = append(out.DeadLetters, deadLetterJSON{
			Topic: d.Topic, Seq: d.Seq, EventID: d.EventID, Key: d.Key,
			Attempts: d.Attempts, LastError: reason, LastErrorDetail: detail, DeadAt: formatTime(d.DeadAt),
		})
	}
	return writeJSON(w, http.StatusOK, out)
}

type redriveRequest struct {
	EventIDs []string `json:"event_ids"`
}

func (s *Server) redriveDeadLetters(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	var req redriveRequest
	if err := decodeJSON(w, r, maxJSONBody, true, &req); err != nil {
		return err
	}
	if req.EventIDs != nil {
		if err := checkEventIDs(req.EventIDs); err != nil {
			return err
		}
	}
	n, err := s.subs.RedriveDeadLetters(r.Context(), sub.ID, req.EventIDs, s.now().UTC())
	if err != nil {
		return err
	}
	if err := s.touch(r.Context(), &sub); err != nil {
		return err
	}
	s.changed(sub.ID)
	return writeJSON(w, http.StatusOK, map[string]int64{"redriven": n})
}

// checkEventIDs validates a non-nil list of event ids to act on.
func checkEventIDs(ids []string) error {
	switch {
	case len(ids) == 0:
		return herald.FieldErrorf("event_ids", "event_ids is empty; leave it out to act on every dead letter")
	case len(ids) > maxRedriveIDs:
		return herald.FieldErrorf("event_ids", "%d event ids; the limit is %d per request", len(ids), maxRedriveIDs)
	}
	for i, id := range ids {
		if id == "" || len(id) > herald.MaxEventIDLen {
			return herald.FieldErrorf("event_ids["+strconv.Itoa(i)+"]", "an event id is 1 to %d bytes", herald.MaxEventIDLen)
		}
	}
	return nil
}

func (s *Server) deleteDeadLetters(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	var ids []string
	if id := r.PathValue("event_id"); id != "" {
		if len(id) > herald.MaxEventIDLen {
			return herald.Errorf(herald.CodeNotFound, "subscription %s has no dead letter with that event id", sub.ID)
		}
		ids = []string{id}
	}
	n, err := s.subs.DeleteDeadLetters(r.Context(), sub.ID, ids)
	if err != nil {
		return err
	}
	if ids != nil && n == 0 {
		return herald.Errorf(herald.CodeNotFound, "subscription %s has no dead letter with event id %q", sub.ID, ids[0])
	}
	if err := s.touch(r.Context(), &sub); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]int64{"deleted": n})
}

type replayRequest struct {
	FromSeq  *int64 `json:"from_seq"`
	FromTime string `json:"from_time"`
	ToSeq    *int64 `json:"to_seq"`
	Topic    string `json:"topic"`
}

func (s *Server) replay(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	var req replayRequest
	if err := decodeJSON(w, r, maxJSONBody, false, &req); err != nil {
		return err
	}
	var fromTime time.Time
	switch {
	case req.FromSeq != nil && req.FromTime != "":
		return herald.FieldErrorf("from_seq", "give from_seq or from_time, not both")
	case req.FromSeq != nil:
		if *req.FromSeq < 0 {
			return herald.FieldErrorf("from_seq", "from_seq must be 0 or more, got %d", *req.FromSeq)
		}
	case req.FromTime != "":
		t, err := time.Parse(time.RFC3339Nano, req.FromTime)
		if err != nil {
			return herald.FieldErrorf("from_time", "from_time must be an RFC 3339 time such as 2025-01-02T15:04:05Z, got %q", truncate(req.FromTime, 64))
		}
		fromTime = t.UTC()
	default:
		return herald.FieldErrorf("from_seq", "give from_seq or from_time: where the replay starts")
	}
	if req.ToSeq != nil {
		if *req.ToSeq < 0 || (req.FromSeq != nil && *req.ToSeq < *req.FromSeq) {
			return herald.FieldErrorf("to_seq", "to_seq must be at least from_seq, got %d", *req.ToSeq)
		}
	}
	topics, err := s.replayTopics(r, sub, req.Topic)
	if err != nil {
		return err
	}

	now := s.now().UTC()
	var out replayJSON
	truncated := false
	for _, t := range topics {
		if out.Scheduled >= maxReplay {
			truncated = true
			break
		}
		from := int64(1)
		if req.FromSeq != nil {
			from = max(*req.FromSeq, 1)
		} else if from, err = s.store.SeqAtTime(r.Context(), t.Name, fromTime); err != nil {
			return err
		}
		to := t.HeadSeq
		if req.ToSeq != nil {
			to = min(*req.ToSeq, t.HeadSeq)
		}
		// Seqs are gap-free and retention removes from the front, so the
		// events of [from, to] before the first retained one are gone.
		retained := t.FirstSeq
		if retained == 0 {
			retained = t.HeadSeq + 1
		}
		if gone := min(to, retained-1) - from + 1; gone > 0 {
			out.NotRetained += gone
		}
		from = max(from, retained)
		if to < from {
			continue
		}
		limit := maxReplay - out.Scheduled
		n, err := s.subs.ScheduleReplay(r.Context(), sub.ID, t.Name, from, to, now, int(limit))
		if err != nil {
			return err
		}
		out.Scheduled += n
		if want := to - from + 1; n == limit && want > n {
			truncated = true
		} else {
			// ScheduleReplay leaves alone the events already waiting (or,
			// rarely, pruned since the topic was read).
			out.AlreadyPending += want - n
		}
	}
	if err := s.touch(r.Context(), &sub); err != nil {
		return err
	}
	if out.Scheduled == 0 {
		out.Reason = replayNothingReason(sub, topics, out)
	} else if truncated {
		out.Reason = fmt.Sprintf("stopped at the limit of %d events per request; replay the rest in another request", maxReplay)
	}
	s.changed(sub.ID)
	return writeJSON(w, http.StatusAccepted, out)
}

// replayJSON is the answer of a replay: what it scheduled and what it left
// out, and why when it scheduled nothing.
type replayJSON struct {
	Scheduled      int64  `json:"scheduled"`
	AlreadyPending int64  `json:"already_pending"`
	NotRetained    int64  `json:"not_retained"`
	Reason         string `json:"reason,omitempty"`
}

// replayNothingReason says why a replay that covered the topics scheduled
// nothing, so a caller is not left guessing from a bare 0.
func replayNothingReason(sub herald.Subscription, topics []herald.Topic, out replayJSON) string {
	switch {
	case len(topics) == 0:
		return fmt.Sprintf("no topic matches the subscription's pattern %s", sub.Topic)
	case out.AlreadyPending > 0 && out.NotRetained > 0:
		return fmt.Sprintf("%d events of the range are already waiting in the subscription's retry set and %d have passed retention", out.AlreadyPending, out.NotRetained)
	case out.AlreadyPending > 0:
		return fmt.Sprintf("the %d events of the range are already waiting in the subscription's retry set; they are sent when due (see GET .../attempts)", out.AlreadyPending)
	case out.NotRetained > 0:
		return fmt.Sprintf("the %d events of the range have passed retention and are no longer stored", out.NotRetained)
	case len(topics) == 1 && topics[0].HeadSeq == 0:
		return fmt.Sprintf("topic %s has no events", topics[0].Name)
	case len(topics) == 1:
		return fmt.Sprintf("the range holds no event: the newest event of %s is seq %d", topics[0].Name, topics[0].HeadSeq)
	}
	return fmt.Sprintf("the range holds no event in any of the %d matching topics", len(topics))
}

// replayTopics returns the topics a replay covers, with their head seqs:
// the subscription's topic, the one asked for, or every topic its pattern
// matches.
func (s *Server) replayTopics(r *http.Request, sub herald.Subscription, asked string) ([]herald.Topic, error) {
	ctx := r.Context()
	if asked != "" {
		if err := herald.ValidateTopicName(asked); err != nil {
			return nil, err
		}
		if !herald.MatchTopic(sub.Topic, asked) {
			return nil, herald.FieldErrorf("topic", "topic %q is not one subscription %s receives (%s)", asked, sub.ID, sub.Topic)
		}
		t, err := s.store.GetTopic(ctx, asked)
		if err != nil {
			return nil, err
		}
		return []herald.Topic{t}, nil
	}
	if !herald.IsPattern(sub.Topic) {
		t, err := s.store.GetTopic(ctx, sub.Topic)
		if err != nil {
			return nil, err
		}
		return []herald.Topic{t}, nil
	}
	var out []herald.Topic
	after := ""
	for {
		page, err := s.store.ListTopics(ctx, after, maxListLimit)
		if err != nil {
			return nil, err
		}
		for _, t := range page {
			if herald.MatchTopic(sub.Topic, t.Name) {
				out = append(out, t)
			}
		}
		if len(page) < maxListLimit {
			return out, nil
		}
		after = page[len(page)-1].Name
	}
}

// millis is a latency on the wire: milliseconds, to the microsecond.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// attemptJSON is one delivery attempt on the wire.
type attemptJSON struct {
	// ID is the attempt's place in the attempt log; a sampled success
	// (Sampled) has none.
	ID         int64   `json:"id,omitempty"`
	Sampled    bool    `json:"sampled,omitempty"`
	Topic      string  `json:"topic"`
	Seq        int64   `json:"seq"`
	EventID    string  `json:"event_id"`
	Attempt    int     `json:"attempt"`
	Time       string  `json:"time"`
	Outcome    string  `json:"outcome"`
	StatusCode int     `json:"status_code,omitempty"`
	LatencyMS  float64 `json:"latency_ms"`
	Error      string  `json:"error,omitempty"`
	// ErrorDetail is the raw cause behind Error, for admins.
	ErrorDetail string `json:"error_detail,omitempty"`
	Response    string `json:"response,omitempty"`
}

type attemptListJSON struct {
	Attempts   []attemptJSON `json:"attempts"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

func (s *Server) listAttempts(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	f := herald.AttemptFilter{EventID: q.Get("event_id")}
	if len(f.EventID) > herald.MaxEventIDLen {
		return herald.FieldErrorf("event_id", "an event id is at most %d bytes", herald.MaxEventIDLen)
	}
	switch o := herald.Outcome(q.Get("outcome")); o {
	case "", herald.OutcomeSuccess, herald.OutcomeFailure:
		f.Outcome = o
	default:
		return herald.FieldErrorf("outcome", "outcome must be success or failure, got %q", truncate(string(o), 64))
	}
	var cur attemptCursor
	if c := q.Get("cursor"); c != "" {
		if cur, err = parseAttemptCursor(c); err != nil {
			return err
		}
	}
	if err := s.touch(r.Context(), &sub); err != nil {
		return err
	}
	attempts, next, err := s.attemptsPage(r.Context(), sub.ID, f, cur, int(limit))
	if err != nil {
		return err
	}
	out := attemptListJSON{Attempts: make([]attemptJSON, 0, len(attempts)), NextCursor: next}
	detail := showsDetail(r)
	for i := range attempts {
		out.Attempts = append(out.Attempts, toAttemptJSON(&attempts[i], detail))
	}
	return writeJSON(w, http.StatusOK, out)
}

// testEventType is the type of the synthetic events that
// POST /v1/subscriptions/{id}/test sends.
const testEventType = "herald.test"

// testResultJSON is the answer of the test endpoint: how the endpoint took
// the test event.
type testResultJSON struct {
	EventID    string  `json:"event_id"`
	Outcome    string  `json:"outcome"`
	StatusCode int     `json:"status_code,omitempty"`
	LatencyMS  float64 `json:"latency_ms"`
	Error      string  `json:"error,omitempty"`
	// ErrorDetail is the raw cause behind Error, for admins.
	ErrorDetail string `json:"error_detail,omitempty"`
	Response    string `json:"response,omitempty"`
}

// testSubscription sends a synthetic event of type herald.test to the
// subscription's endpoint now, the way every event is sent (signed with
// its secrets, its static headers, through the shared sender and its SSRF
// guard, under its timeout up to maxTestTimeout), and answers how the
// endpoint took it.
//
// The event is in no topic's log and touches no delivery state: it is
// neither retried nor dead-lettered, not in the attempt log, and does not
// start or end a run of failures. A developer's tests can then neither
// disable a subscription nor hide a real failure, and the answer is the
// record. Only an endpoint that answered the verification challenge gets
// one: Herald sends nothing to an endpoint that has not agreed.
func (s *Server) testSubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	if s.deliverer == nil {
		return herald.Errorf(herald.CodeUnavailable, "this server does not send test events")
	}
	if err := decodeJSON(w, r, maxJSONBody, true, &struct{}{}); err != nil {
		return err
	}
	if sub.Challenge != "" {
		return herald.Errorf(herald.CodeConflict, "subscription %s is %s and its endpoint has not answered the verification challenge; Herald sends nothing to an endpoint before it has, test events included", sub.ID, sub.State)
	}
	now := s.now().UTC()
	payload, _ := marshalJSON(struct {
		Type           string `json:"type"`
		SubscriptionID string `json:"subscription_id"`
		Topic          string `json:"topic"`
		Time           string `json:"time"`
		Message        string `json:"message"`
	}{testEventType, sub.ID, sub.Topic, formatTime(now), "A test event from Herald. It is in no topic's log and is not retried."})
	ev := &herald.Event{
		ID: herald.NewID(now), Topic: sub.Topic, Type: testEventType,
		ContentType: "application/json", Payload: bytes.TrimSuffix(payload, []byte("\n")), Time: now,
	}
	// The sender bounds the request by the timeout; the margin covers
	// waiting for a free send slot.
	sub.Timeout = min(sub.Timeout, maxTestTimeout)
	ctx, cancel := context.WithTimeout(r.Context(), sub.Timeout+testSlotWait)
	res := s.deliverer.Deliver(ctx, &sub, ev, 1)
	cancel()
	if err := s.touch(r.Context(), &sub); err != nil {
		return err
	}
	out := testResultJSON{
		EventID: ev.ID, Outcome: string(herald.OutcomeFailure), StatusCode: res.StatusCode,
		LatencyMS: millis(res.Latency), Error: res.Err, Response: string(res.Response),
	}
	if res.Outcome == herald.Delivered {
		out.Outcome = string(herald.OutcomeSuccess)
	}
	if showsDetail(r) {
		out.ErrorDetail = res.Detail
	}
	return writeJSON(w, http.StatusOK, out)
}

// Bounds of a test send. The subscription's timeout applies, but at most
// maxTestTimeout, so that the answer comes before clients give up waiting
// for it (the Go client waits 30s for response headers).
const (
	maxTestTimeout = 20 * time.Second
	testSlotWait   = 5 * time.Second // waiting for a free send slot
)
