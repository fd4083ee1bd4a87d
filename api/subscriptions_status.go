package api

import (
	"net/http"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/filter"
)

// Delivery states of one event at one subscription.
const (
	deliveryDelivered = "delivered" // at or below the cursor, and matched the filter
	deliveryFiltered  = "filtered"  // at or below the cursor, and did not match the filter
	deliveryPending   = "pending"   // above the cursor: not delivered yet
	deliveryRetrying  = "retrying"  // in the retry set
	deliveryDead      = "dead"      // a dead letter
)

// eventStatusJSON answers GET /v1/subscriptions/{id}/events/{event_id}.
type eventStatusJSON struct {
	SubscriptionID string `json:"subscription_id"`
	EventID        string `json:"event_id"`
	Topic          string `json:"topic"`
	Seq            int64  `json:"seq"`
	Status         string `json:"status"`
	// Attempts made so far (retrying, dead); the cursor (delivered,
	// filtered, pending) is where the subscription stands in the topic.
	Attempts      int    `json:"attempts,omitempty"`
	NextAttemptAt string `json:"next_attempt_at,omitempty"`
	LastError     string `json:"last_error,omitempty"`
	DeadAt        string `json:"dead_at,omitempty"`
	Cursor        int64  `json:"cursor"`
	// LastAttempt is the newest attempt of the event in the attempt log,
	// when the log has one.
	LastAttempt *attemptJSON `json:"last_attempt,omitempty"`
}

// eventStatus answers "what happened to event X at subscription Y" from
// the subscription's delivery state: its dead letters, its retry set and
// its cursor in the event's topic, with the newest logged attempt when
// there is one. A subscription to a pattern needs the event's topic
// (?topic=); one to a single topic reads it from the subscription.
func (s *Server) eventStatus(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	eventID := r.PathValue("event_id")
	if eventID == "" || len(eventID) > herald.MaxEventIDLen {
		return herald.FieldErrorf("event_id", "an event id is 1 to %d bytes", herald.MaxEventIDLen)
	}
	topic := r.URL.Query().Get("topic")
	switch {
	case topic == "" && herald.IsPattern(sub.Topic):
		return herald.FieldErrorf("topic", "the subscription is to the pattern %q: name the event's topic with ?topic=", sub.Topic)
	case topic == "":
		topic = sub.Topic
	case !herald.MatchTopic(sub.Topic, topic):
		return herald.FieldErrorf("topic", "topic %q does not match the subscription's %q", truncate(topic, 256), sub.Topic)
	}
	ctx := r.Context()
	ev, err := s.store.GetEvent(ctx, topic, eventID)
	if err != nil {
		if herald.IsCode(err, herald.CodeNotFound) {
			return &herald.Error{Code: herald.CodeNotFound, Field: "event_id",
				Message: "event " + truncate(eventID, 64) + " is not in topic " + topic + " (never published there, or past its retention)"}
		}
		return err
	}
	out := eventStatusJSON{SubscriptionID: sub.ID, EventID: ev.ID, Topic: topic, Seq: ev.Seq}
	cursors, err := s.subs.Cursors(ctx, sub.ID)
	if err != nil {
		return err
	}
	for _, c := range cursors {
		if c.Topic == topic {
			out.Cursor = c.Seq
		}
	}
	dead, err := s.subs.ListDeadLetters(ctx, sub.ID, herald.Cursor{Topic: topic, Seq: ev.Seq - 1}, 1)
	if err != nil {
		return err
	}
	detail := showsDetail(r)
	switch rt, rerr := s.subs.GetRetry(ctx, sub.ID, topic, ev.Seq); {
	case len(dead) == 1 && dead[0].Topic == topic && dead[0].Seq == ev.Seq:
		out.Status, out.Attempts, out.DeadAt = deliveryDead, dead[0].Attempts, formatTime(dead[0].DeadAt)
		out.LastError, _ = splitReason(dead[0].LastError, detail)
	case rerr == nil:
		out.Status, out.Attempts = deliveryRetrying, rt.Attempt
		if !rt.DueAt.IsZero() {
			out.NextAttemptAt = formatTime(rt.DueAt)
		}
		out.LastError, _ = splitReason(rt.LastError, detail)
	case !herald.IsCode(rerr, herald.CodeNotFound):
		return rerr
	case ev.Seq > out.Cursor:
		out.Status = deliveryPending
	default:
		out.Status = deliveryDelivered
		if f, err := filter.Parse(sub.Filter); err == nil && !f.MatchEvent(ctx, &ev, s.schemas) {
			out.Status = deliveryFiltered
		}
	}
	a, ok, err := s.newestAttempt(ctx, sub.ID, ev.ID, topic)
	if err != nil {
		return err
	}
	if ok {
		j := toAttemptJSON(&a, detail)
		out.LastAttempt = &j
	}
	return writeJSON(w, http.StatusOK, out)
}
