package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// Delayed publishing: the request headers and CloudEvents extension
// attributes that give an event a due time.
const (
	headerDeliverAt = "Herald-Deliver-At" // RFC 3339 time
	headerDelay     = "Herald-Delay"      // a duration: "90s", "15m", "1d"
	// The same as CloudEvents extension attributes (lower-case letters and
	// digits, as the spec requires), carried to Herald as ce- headers.
	ceDeliverAt = "ce-heralddeliverat"
	ceDelay     = "ce-heralddelay"
)

// DelayedEvents lists and cancels the events waiting for their due time
// (the store's herald.TimeStore).
type DelayedEvents interface {
	ListScheduled(ctx context.Context, topic string, afterDue time.Time, afterID string, limit int) ([]herald.ScheduledEvent, error)
	CancelScheduled(ctx context.Context, topic, id string) error
}

// dueTime reads a due time from deliverAt (RFC 3339) or delay (a
// duration after now); both empty is the zero time, publish now. field
// prefixes the names errors give ("events[2]." in a batch), names the
// request headers when header is true.
func dueTime(deliverAt, delay string, now time.Time, header bool, field string) (time.Time, error) {
	atName, delayName := field+"deliver_at", field+"delay"
	if header {
		atName, delayName = headerDeliverAt, headerDelay
	}
	switch {
	case deliverAt != "" && delay != "":
		return time.Time{}, herald.FieldErrorf(atName, "give %s or %s, not both", atName, delayName)
	case deliverAt != "":
		t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(deliverAt))
		if err != nil {
			return time.Time{}, herald.FieldErrorf(atName, "%s must be an RFC 3339 time such as 2030-01-02T15:04:05Z, got %q", atName, deliverAt)
		}
		return t.UTC(), nil
	case delay != "":
		d, err := herald.ParseDuration(strings.TrimSpace(delay))
		if err != nil || d < 0 {
			return time.Time{}, herald.FieldErrorf(delayName, "%s must be a non-negative duration such as 90s, 15m or 1d, got %q", delayName, delay)
		}
		return now.Add(d), nil
	}
	return time.Time{}, nil
}

// requestDue reads the due time of a single publish: Herald's headers, or
// else the CloudEvents extension attributes (which are taken out of the
// event's headers: they are instructions to Herald, not event data).
func requestDue(h http.Header, e *herald.Event, now time.Time) (time.Time, error) {
	ceAt, ceDel := e.Headers[ceDeliverAt], e.Headers[ceDelay]
	delete(e.Headers, ceDeliverAt)
	delete(e.Headers, ceDelay)
	if len(e.Headers) == 0 {
		e.Headers = nil
	}
	at, del := h.Get(headerDeliverAt), h.Get(headerDelay)
	if at != "" || del != "" {
		return dueTime(at, del, now, true, "")
	}
	if ceAt != "" || ceDel != "" {
		due, err := dueTime(ceAt, ceDel, now, false, "")
		if he, ok := err.(*herald.Error); ok {
			he.Field = strings.Replace(strings.Replace(he.Field, "deliver_at", "heralddeliverat", 1), "delay", "heralddelay", 1)
		}
		return due, err
	}
	return time.Time{}, nil
}

// scheduledJSON is a pending delayed event on the wire.
type scheduledJSON struct {
	eventJSON
	DeliverAt string `json:"deliver_at"`
}

type scheduledListJSON struct {
	Events     []scheduledJSON `json:"events"`
	NextCursor string          `json:"next_cursor,omitempty"`
}

func toScheduledJSON(e *herald.ScheduledEvent) scheduledJSON {
	out := scheduledJSON{eventJSON: toEventJSON(&e.Event), DeliverAt: formatTime(e.DueAt)}
	return out
}

// Scheduled-list cursors are the (due time, id) of the last one returned.
func encodeDueCursor(due time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(due.UnixNano(), 10) + " " + id))
}

func decodeDueCursor(s string) (time.Time, string, error) {
	if s == "" {
		return time.Time{}, "", nil
	}
	bad := herald.FieldErrorf("cursor", "cursor is not one this server issued")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return time.Time{}, "", bad
	}
	n, id, ok := strings.Cut(string(b), " ")
	ns, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || id == "" {
		return time.Time{}, "", bad
	}
	return time.Unix(0, ns).UTC(), id, nil
}

// listScheduled answers GET /v1/topics/{topic}/scheduled: the topic's
// pending delayed events in due order.
func (s *Server) listScheduled(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if err := authorize(r, herald.ActionRead, name); err != nil {
		return err
	}
	if s.delayed == nil {
		return herald.Errorf(herald.CodeUnavailable, "delayed events are not available on this server")
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	afterDue, afterID, err := decodeDueCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	events, err := s.delayed.ListScheduled(r.Context(), name, afterDue, afterID, int(limit)+1)
	if err != nil {
		return err
	}
	out := scheduledListJSON{Events: make([]scheduledJSON, 0, len(events))}
	for i := range events {
		if i == int(limit) {
			last := events[i-1]
			out.NextCursor = encodeDueCursor(last.DueAt, last.ID)
			break
		}
		out.Events = append(out.Events, toScheduledJSON(&events[i]))
	}
	return writeJSON(w, http.StatusOK, out)
}

// cancelScheduled answers DELETE /v1/topics/{topic}/scheduled/{id}: 204,
// or 404 once the event was published (or never pending).
func (s *Server) cancelScheduled(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if err := authorize(r, herald.ActionPublish, name); err != nil {
		return err
	}
	if s.delayed == nil {
		return herald.Errorf(herald.CodeUnavailable, "delayed events are not available on this server")
	}
	if err := s.delayed.CancelScheduled(r.Context(), name, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
