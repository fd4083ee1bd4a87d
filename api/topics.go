package api

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
)

// List limits shared by the list endpoints.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
	// maxTopicScans bounds the store pages one topic list request reads
	// while skipping topics the caller may not read; the page may then be
	// short, and next_cursor continues the scan.
	maxTopicScans = 10
)

// topicJSON is a topic on the wire.
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

func toTopicJSON(t herald.Topic) topicJSON {
	return topicJSON{
		Name:          t.Name,
		Retention:     herald.FormatDuration(t.Retention),
		MaxEventBytes: t.MaxEventBytes,
		DedupWindow:   herald.FormatDuration(t.DedupWindow),
		CreatedAt:     formatTime(t.CreatedAt),
		UpdatedAt:     formatTime(t.UpdatedAt),
		HeadSeq:       t.HeadSeq,
		FirstSeq:      t.FirstSeq,
		EventCount:    t.EventCount(),
	}
}

// topicSettings is the body of PUT /v1/topics/{topic}. An absent setting
// (or null, or "" for a duration, as elsewhere in the API) takes its
// default, on update too: PUT replaces the settings. A given one is taken
// as it is, zero included, so a dedup_window of "0s" turns deduplication
// off while a zero retention or max_event_bytes is refused as out of
// range: hence the pointers.
type topicSettings struct {
	Retention     *string `json:"retention"`
	MaxEventBytes *int    `json:"max_event_bytes"`
	DedupWindow   *string `json:"dedup_window"`
}

// topic returns the topic's settings: the defaults, overridden by every
// setting given, then validated.
func (ts topicSettings) topic(name string) (herald.Topic, error) {
	t := herald.Topic{Name: name}.WithDefaults()
	var err error
	if ts.Retention != nil && *ts.Retention != "" {
		if t.Retention, err = parseSetting("retention", *ts.Retention); err != nil {
			return t, err
		}
	}
	if ts.MaxEventBytes != nil {
		t.MaxEventBytes = *ts.MaxEventBytes
	}
	if ts.DedupWindow != nil && *ts.DedupWindow != "" {
		if t.DedupWindow, err = parseSetting("dedup_window", *ts.DedupWindow); err != nil {
			return t, err
		}
	}
	return t, t.Validate()
}

// parseSetting parses an optional duration setting; "" is 0, for the
// caller to read as "not given".
func parseSetting(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := herald.ParseDuration(s)
	if err != nil {
		return 0, &herald.Error{Code: herald.CodeInvalid, Field: field,
			Message: field + ` must be a duration like "7d", "24h" or "90m", got ` + strconv.Quote(s), Err: err}
	}
	return d, nil
}

// topicName returns the {topic} path value if it is a valid topic name.
func topicName(r *http.Request) (string, error) {
	name := r.PathValue("topic")
	return name, herald.ValidateTopicName(name)
}

// errReserved refuses changes to topics Herald writes itself.
func errReserved(name string) error {
	return herald.FieldErrorf("topic", "topic %q is reserved: names starting %q are written by Herald only", name, herald.SystemTopicPrefix)
}

func (s *Server) putTopic(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if herald.IsSystemTopic(name) {
		return errReserved(name)
	}
	var body topicSettings
	if err := decodeJSON(w, r, maxJSONBody, true, &body); err != nil {
		return err
	}
	t, err := body.topic(name)
	if err != nil {
		return err
	}
	t, created, err := s.topics.Put(r.Context(), t)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, toTopicJSON(t))
}

func (s *Server) getTopic(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if err := authorize(r, herald.ActionRead, name); err != nil {
		return err
	}
	// The store, not the cache: the statistics must be current.
	t, err := s.store.GetTopic(r.Context(), name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toTopicJSON(t))
}

func (s *Server) deleteTopic(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if err := s.topics.Delete(r.Context(), name); err != nil {
		return err
	}
	if s.notices != nil {
		s.notices.TopicDeleted(name) // e.g. its open streams end rather than wait forever
	}
	if s.schemas != nil {
		s.schemas.Forget(name)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type topicListJSON struct {
	Topics     []topicJSON `json:"topics"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

func (s *Server) listTopics(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	after, err := decodeCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	p := principalFrom(r.Context())
	visible := func(t herald.Topic) bool { return p.scopes.Allows(herald.ActionRead, t.Name) }

	out := topicListJSON{Topics: []topicJSON{}}
	for range maxTopicScans {
		page, err := s.store.ListTopics(r.Context(), after, int(limit)+1)
		if err != nil {
			return err
		}
		for _, t := range page {
			after = t.Name
			if !visible(t) {
				continue
			}
			if len(out.Topics) == int(limit) { // one more exists: this page is full
				out.NextCursor = encodeCursor(out.Topics[limit-1].Name)
				return writeJSON(w, http.StatusOK, out)
			}
			out.Topics = append(out.Topics, toTopicJSON(t))
		}
		if len(page) <= int(limit) { // the store has no more
			return writeJSON(w, http.StatusOK, out)
		}
	}
	// Scan budget spent among topics the caller may not read: continue
	// after the last one looked at.
	out.NextCursor = encodeCursor(after)
	return writeJSON(w, http.StatusOK, out)
}

// Cursors are opaque to callers; today they are the last topic name seen.
func encodeCursor(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || herald.ValidateTopicName(string(b)) != nil {
		return "", herald.FieldErrorf("cursor", "cursor is not one this server issued")
	}
	return string(b), nil
}

// queryInt parses an optional integer query parameter within [lo, hi].
func queryInt(s, field string, def, lo, hi int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, herald.FieldErrorf(field, "%s must be an integer from %d to %d, got %q", field, lo, hi, s)
	}
	return n, nil
}
