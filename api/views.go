package api

import (
	"net/http"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/rules"
)

// View read limits.
const (
	// defaultViewWait and maxViewWait bound how long a read with min_seq
	// waits for the view to reach it.
	defaultViewWait = 5 * time.Second
	maxViewWait     = 30 * time.Second
	viewPollEvery   = 20 * time.Millisecond
)

// viewRowJSON is one key of a view.
type viewRowJSON struct {
	View      string `json:"view"`
	Key       string `json:"key"`
	Value     any    `json:"value"`
	UpdatedAt string `json:"updated_at"`
	Seq       int64  `json:"seq"`
}

// loadView returns the view's definition for a read: from memory when
// it was read less than viewDefTTL ago (see viewDefs), else from the
// store.
func (s *Server) loadView(r *http.Request) (*rules.ViewProgram, string, error) {
	if err := s.processorsOr503(); err != nil {
		return nil, "", err
	}
	name, err := processorName(r)
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	d, ok := s.viewDefs.get(name, now)
	if !ok {
		sub, _, err := s.loadProcessor(viewKind, r)
		if err != nil {
			return nil, "", err
		}
		p, err := rules.ParseViewSpec(sub.Config)
		if err != nil {
			return nil, "", err
		}
		d = viewDef{prog: p, topic: sub.Topic, at: now}
		s.viewDefs.put(name, d)
	}
	if err := authorize(r, herald.ActionRead, d.topic); err != nil {
		return nil, "", err
	}
	return d.prog, name, nil
}

// waitForSeq waits until the view has applied its input up to minSeq, or
// the wait ends (CodeTimeout, which says how far it is).
func (s *Server) waitForSeq(r *http.Request, name string, minSeq int64) error {
	if minSeq <= 0 {
		return nil
	}
	wait := defaultViewWait
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := herald.ParseDuration(v)
		if err != nil || d < 0 || d > maxViewWait {
			return herald.FieldErrorf("wait", "wait must be a duration up to %s, got %q", maxViewWait, v)
		}
		wait = d
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(viewPollEvery)
	defer tick.Stop()
	owner := rules.Owner(rules.ChannelView, name)
	for {
		pos, err := s.store.StatePosition(r.Context(), owner)
		if err != nil {
			return err
		}
		if pos >= minSeq {
			return nil
		}
		select {
		case <-r.Context().Done():
			return r.Context().Err()
		case <-deadline.C:
			return herald.Errorf(herald.CodeTimeout, "view %q reflects its input up to seq %d, not yet %d; try again", name, pos, minSeq)
		case <-tick.C:
		}
	}
}

func (s *Server) getViewRow(w http.ResponseWriter, r *http.Request) error {
	p, name, err := s.loadView(r)
	if err != nil {
		return err
	}
	minSeq, err := queryInt(r.URL.Query().Get("min_seq"), "min_seq", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	if err := s.waitForSeq(r, name, minSeq); err != nil {
		return err
	}
	key := r.PathValue("key")
	e, err := s.store.GetState(r.Context(), rules.Owner(rules.ChannelView, name), key)
	if err != nil {
		if herald.IsCode(err, herald.CodeNotFound) {
			return herald.Errorf(herald.CodeNotFound, "view %q has no key %q", name, key)
		}
		return err
	}
	row, ok := rules.ViewRow(p.Spec().Aggregate.Op, e)
	if !ok {
		return herald.Errorf(herald.CodeNotFound, "view %q has no key %q", name, key)
	}
	return writeJSON(w, http.StatusOK, viewRowJSON{View: name, Key: key, Value: row.Value, UpdatedAt: formatTime(row.UpdatedAt), Seq: row.Seq})
}

func (s *Server) listViewRows(w http.ResponseWriter, r *http.Request) error {
	p, name, err := s.loadView(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	after := ""
	if c := q.Get("cursor"); c != "" {
		if after, err = decodeCursor(c); err != nil {
			return err
		}
	}
	minSeq, err := queryInt(q.Get("min_seq"), "min_seq", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	if err := s.waitForSeq(r, name, minSeq); err != nil {
		return err
	}
	out := struct {
		Items      []viewRowJSON `json:"items"`
		NextCursor string        `json:"next_cursor,omitempty"`
	}{Items: []viewRowJSON{}}
	owner := rules.Owner(rules.ChannelView, name)
	// Deleted keys stay as tombstones in the store: skip them, reading on
	// while the page is short (bounded).
	for scans := 0; scans < maxTopicScans && len(out.Items) < int(limit); scans++ {
		entries, err := s.store.ListState(r.Context(), owner, after, int(limit))
		if err != nil {
			return err
		}
		for _, e := range entries {
			after = e.Key
			if row, ok := rules.ViewRow(p.Spec().Aggregate.Op, e); ok {
				out.Items = append(out.Items, viewRowJSON{View: name, Key: e.Key, Value: row.Value, UpdatedAt: formatTime(row.UpdatedAt), Seq: row.Seq})
				if len(out.Items) == int(limit) {
					break
				}
			}
		}
		if len(entries) < int(limit) {
			after = ""
			break
		}
	}
	if after != "" {
		out.NextCursor = encodeCursor(after)
	}
	return writeJSON(w, http.StatusOK, out)
}

// viewWriteJSON answers a manual set or delete: the override event's seq,
// which a read passes as min_seq to see it.
type viewWriteJSON struct {
	View    string `json:"view"`
	Key     string `json:"key"`
	Topic   string `json:"topic"`
	Seq     int64  `json:"seq"`
	EventID string `json:"event_id"`
}

// writeViewRow sets (PUT, the body is the JSON value) or deletes a key by
// hand: an override event on the view's input topic, so it replays with
// the input. The view applies it shortly; read with min_seq=seq to wait.
func (s *Server) writeViewRow(del bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, name, err := s.loadView(r)
		if err != nil {
			return err
		}
		key := r.PathValue("key")
		if key == "" || len(key) > herald.MaxEventKeyLen {
			return herald.FieldErrorf("key", "a key is 1 to %d bytes", herald.MaxEventKeyLen)
		}
		ev := &herald.Event{Topic: p.Spec().Input, Key: key, ContentType: "application/json", Type: rules.TypeViewDelete,
			Headers: map[string]string{"herald-view": name}}
		if !del {
			body, err := readBody(w, r, maxJSONBody)
			if err != nil {
				return err
			}
			var v any
			if err := unmarshalStrict(body, &v, ""); err != nil {
				return herald.FieldErrorf("value", "the body must be the key's value as JSON (like true, 12.5 or {\"a\":1})")
			}
			ev.Type, ev.Payload = rules.TypeViewSet, body
		} else {
			ev.Payload = []byte("null")
		}
		res, err := s.publisher.Publish(r.Context(), engine.PublishParams{Events: []*herald.Event{ev}, Source: "api"})
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusAccepted, viewWriteJSON{View: name, Key: key, Topic: ev.Topic, Seq: res[0].Seq, EventID: res[0].ID})
	}
}
