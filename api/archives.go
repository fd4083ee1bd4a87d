package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/archive"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/filter"
)

// ArchiveReader reads archives (archive.Channel implements it).
type ArchiveReader interface {
	Run(ctx context.Context, config json.RawMessage, q archive.Query, emit func(archive.Hit) error) (archive.Page, error)
}

// Archive limits of the API.
const (
	// archiveTimeout is the archive subscription's delivery timeout: the
	// time one batch may take to write (the engine adds a little).
	archiveTimeout = herald.MaxTimeout
	// maxReplayEvents bounds the events one replay request publishes.
	maxReplayEvents = 1_000_000
	// replayChunk is how many events a replay publishes in one commit.
	replayChunk = 500
)

// archiveSpec is the body of PUT /v1/archives/{name}.
type archiveSpec struct {
	Topics      string                 `json:"topics"`
	Filter      json.RawMessage        `json:"filter"`
	Description string                 `json:"description"`
	Partition   []archive.PartitionKey `json:"partition"`
	Format      string                 `json:"format"`
	Compression string                 `json:"compression"`
	Flush       *archive.Flush         `json:"flush"`
	Destination json.RawMessage        `json:"destination"`
	// MaxHold bounds the retention hold of a paused or disabled archive
	// (herald.Archive.MaxHold); nil keeps the stored one, or the default.
	MaxHold *string `json:"max_hold"`
	// Start applies to creation: where the archive starts in the topics
	// ("now", the default, "earliest" or a time).
	Start json.RawMessage `json:"start"`
}

// archiveJSON is an archive on the wire.
type archiveJSON struct {
	Name           string                 `json:"name"`
	Topics         string                 `json:"topics"`
	Filter         json.RawMessage        `json:"filter,omitempty"`
	Description    string                 `json:"description"`
	Partition      []archive.PartitionKey `json:"partition"`
	Format         string                 `json:"format"`
	Compression    string                 `json:"compression,omitempty"`
	Flush          archive.Flush          `json:"flush"`
	Destination    json.RawMessage        `json:"destination"`
	MaxHold        string                 `json:"max_hold"`
	State          string                 `json:"state"`
	StateReason    string                 `json:"state_reason,omitempty"`
	SubscriptionID string                 `json:"subscription_id"`
	CreatedAt      string                 `json:"created_at"`
	UpdatedAt      string                 `json:"updated_at"`
	LastSuccessAt  string                 `json:"last_success_at,omitempty"`
	Stats          *statsJSON             `json:"stats,omitempty"`
}

// archiveOf returns the name of the archive whose subscription has the
// id, or "" when none has.
func (s *Server) archiveOf(ctx context.Context, subID string) (string, error) {
	st, err := s.archiveStore()
	if err != nil {
		return "", nil
	}
	after := ""
	for {
		list, err := st.ListArchives(ctx, after, 1000)
		if err != nil {
			return "", err
		}
		for _, a := range list {
			if a.SubscriptionID == subID {
				return a.Name, nil
			}
		}
		if len(list) < 1000 {
			return "", nil
		}
		after = list[len(list)-1].Name
	}
}

// maxHold reads the spec's max_hold; def when it is left out.
func (spec archiveSpec) maxHold(def time.Duration) (time.Duration, error) {
	if spec.MaxHold == nil {
		return def, nil
	}
	d, err := herald.ParseDuration(*spec.MaxHold)
	if err != nil {
		return 0, herald.FieldErrorf("max_hold", "max_hold is a duration such as 7d or 12h, got %q", *spec.MaxHold)
	}
	return d, herald.ValidateArchiveMaxHold(d)
}

func (s *Server) archiveStore() (herald.ArchiveStore, error) {
	if s.archives == nil || s.subs == nil {
		return nil, herald.Errorf(herald.CodeUnavailable, "this server does not keep archives")
	}
	return s.archives, nil
}

// archiveName reads the {name} path value.
func archiveName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := herald.ValidateArchiveName(name); err != nil {
		return "", err
	}
	return name, nil
}

// loadArchive returns the archive named in the path and its subscription.
func (s *Server) loadArchive(r *http.Request) (herald.Archive, herald.Subscription, error) {
	st, err := s.archiveStore()
	if err != nil {
		return herald.Archive{}, herald.Subscription{}, err
	}
	name := r.PathValue("name")
	if herald.ValidateArchiveName(name) != nil {
		return herald.Archive{}, herald.Subscription{}, herald.Errorf(herald.CodeNotFound, "archive %q not found", truncate(name, 64))
	}
	a, err := st.GetArchive(r.Context(), name)
	if err != nil {
		return herald.Archive{}, herald.Subscription{}, err
	}
	sub, err := s.subs.GetSubscription(r.Context(), a.SubscriptionID)
	if herald.IsCode(err, herald.CodeNotFound) {
		return herald.Archive{}, herald.Subscription{}, herald.Errorf(herald.CodeNotFound, "archive %q has lost its subscription %s; delete it and create it again", name, a.SubscriptionID)
	}
	return a, sub, err
}

func (s *Server) toArchiveJSON(a herald.Archive, sub herald.Subscription) archiveJSON {
	out := archiveJSON{
		Name: a.Name, Topics: sub.Topic, Description: sub.Description, State: string(sub.State),
		SubscriptionID: sub.ID, CreatedAt: formatTime(a.CreatedAt), UpdatedAt: formatTime(sub.UpdatedAt),
		LastSuccessAt: formatOptTime(sub.LastSuccessAt), Destination: json.RawMessage(`{}`),
		MaxHold: herald.FormatDuration(a.MaxHold),
	}
	out.StateReason, _ = splitReason(sub.StateReason, false)
	if len(sub.Filter) > 0 {
		out.Filter = sub.Filter
	}
	if ch, err := s.channels.Get(archive.Name); err == nil {
		var c archive.Config
		if json.Unmarshal(ch.Public(sub.Config), &c) == nil {
			out.Partition, out.Format, out.Compression, out.Flush = c.Partition, c.Format, c.Compression, c.Flush
			out.Destination, _ = json.Marshal(c.Destination)
		}
	}
	return out
}

// archiveConfig builds the archive channel's config from the spec and
// validates it; errors name the spec's members.
func (s *Server) archiveConfig(ctx context.Context, spec archiveSpec, previous json.RawMessage) (json.RawMessage, error) {
	ch, err := s.channels.Get(archive.Name)
	if err != nil {
		return nil, herald.Errorf(herald.CodeUnavailable, "this server does not offer archives")
	}
	config := map[string]any{"partition": spec.Partition, "format": spec.Format}
	if spec.Compression != "" {
		config["compression"] = spec.Compression
	}
	if spec.Flush != nil {
		config["flush"] = spec.Flush
	}
	if len(bytes.TrimSpace(spec.Destination)) == 0 || isNull(spec.Destination) {
		return nil, herald.FieldErrorf("destination", `destination is required: {"type": "local", "path": "..."} or {"type": "s3", "bucket": "...", ...}`)
	}
	config["destination"] = spec.Destination
	raw, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	return ch.Validate(ctx, channel.ValidateParams{Config: raw, Previous: previous, Admin: true, Internal: true})
}

func (s *Server) putArchive(w http.ResponseWriter, r *http.Request) error {
	st, err := s.archiveStore()
	if err != nil {
		return err
	}
	name, err := archiveName(r)
	if err != nil {
		return err
	}
	var spec archiveSpec
	if err := decodeJSON(w, r, maxJSONBody, false, &spec); err != nil {
		return err
	}
	if spec.Topics == "" {
		return herald.FieldErrorf("topics", `topics is required: a topic, or a pattern such as "logs.>" (">" for every topic)`)
	}
	if err := herald.ValidatePattern(spec.Topics); err != nil {
		if e, ok := errors.AsType[*herald.Error](err); ok {
			e.Field = "topics"
		}
		return err
	}
	if len(spec.Description) > herald.MaxDescriptionLen {
		return herald.FieldErrorf("description", "description is %d bytes; the limit is %d", len(spec.Description), herald.MaxDescriptionLen)
	}
	f, err := filter.Parse(spec.Filter)
	if err != nil {
		return err
	}
	var canonFilter json.RawMessage
	if c := f.String(); f != nil && c != "{}" {
		canonFilter = json.RawMessage(c)
	}
	ctx := r.Context()
	now := s.now().UTC()

	a, err := st.GetArchive(ctx, name)
	switch {
	case err == nil:
		sub, err := s.subs.GetSubscription(ctx, a.SubscriptionID)
		if err != nil {
			return err
		}
		if sub.Topic != spec.Topics {
			return herald.Errorf(herald.CodeConflict, "the topics of archive %s are %q; they cannot change: create a new archive", name, sub.Topic)
		}
		hold, err := spec.maxHold(a.MaxHold)
		if err != nil {
			return err
		}

		sub, err = s.save(ctx, sub, func(sub *herald.Subscription) error {
			config, err := s.archiveConfig(ctx, spec, sub.Config)
			if err != nil {
				return err
			}
			sub.Config, sub.Filter, sub.Description = config, canonFilter, spec.Description
			sub.UpdatedAt = now
			return nil
		})
		if err != nil {
			return err
		}
		if hold != a.MaxHold {
			a.MaxHold = hold
			if err := st.UpdateArchive(ctx, a); err != nil {
				return err
			}
		}
		s.changed(sub.ID)
		return writeJSON(w, http.StatusOK, s.toArchiveJSON(a, sub))
	case !herald.IsCode(err, herald.CodeNotFound):
		return err
	}

	config, err := s.archiveConfig(ctx, spec, nil)
	if err != nil {
		return err
	}
	hold, err := spec.maxHold(herald.DefaultArchiveMaxHold)
	if err != nil {
		return err
	}
	start, err := parseStart(spec.Start, spec.Topics)
	if err != nil {
		return err
	}
	if start.Seq > 0 {
		return herald.FieldErrorf("start", `an archive starts "now", "earliest" or at a time`)
	}
	p := principalFrom(ctx)
	sub := herald.Subscription{
		ID: newSubscriptionID(), Topic: spec.Topics, Channel: archive.Name, Config: config,
		Description: spec.Description, Filter: canonFilter,
		// An archive retries for as long as retries go: a destination
		// that is down for a day must not turn its events into dead
		// letters.
		Retry:       herald.RetryPolicy{MaxAttempts: herald.MaxRetryAttempts, Initial: time.Second, Max: 10 * time.Minute},
		Timeout:     archiveTimeout,
		MaxInFlight: 1, // one batch at a time: each rewrites its partitions' manifests
		State:       herald.StateActive, OwnerKeyID: p.keyID,
		CreatedAt: now, UpdatedAt: now, LastActivityAt: now,
	}
	if err := s.subs.CreateSubscription(ctx, sub, start); err != nil {
		return err
	}
	a = herald.Archive{Name: name, SubscriptionID: sub.ID, MaxHold: hold, CreatedAt: now}
	if err := st.CreateArchive(ctx, a); err != nil {
		// Another request created it meanwhile: take ours back.
		_ = s.subs.DeleteSubscription(context.WithoutCancel(ctx), sub.ID)
		return err
	}
	s.changed(sub.ID)
	w.Header().Set("Location", "/v1/archives/"+name)
	return writeJSON(w, http.StatusCreated, s.toArchiveJSON(a, sub))
}

func (s *Server) getArchive(w http.ResponseWriter, r *http.Request) error {
	a, sub, err := s.loadArchive(r)
	if err != nil {
		return err
	}
	stats, err := s.subscriptionStats(r.Context(), sub.ID)
	if err != nil {
		return err
	}
	out := s.toArchiveJSON(a, sub)
	out.Stats = &stats
	return writeJSON(w, http.StatusOK, out)
}

type archiveListJSON struct {
	Archives   []archiveJSON `json:"archives"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

func (s *Server) listArchives(w http.ResponseWriter, r *http.Request) error {
	st, err := s.archiveStore()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	list, err := st.ListArchives(r.Context(), q.Get("cursor"), int(limit))
	if err != nil {
		return err
	}
	out := archiveListJSON{Archives: []archiveJSON{}}
	for _, a := range list {
		sub, err := s.subs.GetSubscription(r.Context(), a.SubscriptionID)
		if herald.IsCode(err, herald.CodeNotFound) {
			sub = herald.Subscription{ID: a.SubscriptionID, State: "lost", UpdatedAt: a.CreatedAt}
		} else if err != nil {
			return err
		}
		out.Archives = append(out.Archives, s.toArchiveJSON(a, sub))
	}
	if len(list) == int(limit) {
		out.NextCursor = list[len(list)-1].Name
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteArchive(w http.ResponseWriter, r *http.Request) error {
	st, err := s.archiveStore()
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	a, err := st.GetArchive(r.Context(), name)
	if err != nil {
		return err
	}
	if err := st.DeleteArchive(r.Context(), name); err != nil {
		return err
	}
	if err := s.subs.DeleteSubscription(r.Context(), a.SubscriptionID); err != nil && !herald.IsCode(err, herald.CodeNotFound) {
		return err
	}
	s.changed(a.SubscriptionID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) pauseArchive(w http.ResponseWriter, r *http.Request) error {
	return s.archiveState(w, r, func(sub *herald.Subscription) error {
		if sub.State != herald.StateActive {
			return herald.Errorf(herald.CodeConflict, "archive %s is %s; only an active archive can be paused", r.PathValue("name"), sub.State)
		}
		sub.State, sub.StateReason = herald.StatePaused, pausedReason
		return nil
	})
}

func (s *Server) resumeArchive(w http.ResponseWriter, r *http.Request) error {
	return s.archiveState(w, r, func(sub *herald.Subscription) error {
		switch sub.State {
		case herald.StatePaused, herald.StateDisabled:
			sub.State, sub.StateReason, sub.FailingSince = herald.StateActive, "", time.Time{}
			return nil
		}
		return herald.Errorf(herald.CodeConflict, "archive %s is %s; there is nothing to resume", r.PathValue("name"), sub.State)
	})
}

func (s *Server) archiveState(w http.ResponseWriter, r *http.Request, change func(*herald.Subscription) error) error {
	a, sub, err := s.loadArchive(r)
	if err != nil {
		return err
	}
	sub, err = s.save(r.Context(), sub, func(sub *herald.Subscription) error {
		if err := change(sub); err != nil {
			return err
		}
		sub.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return err
	}
	s.changed(sub.ID)
	return writeJSON(w, http.StatusOK, s.toArchiveJSON(a, sub))
}

// archiveQuery reads the query parameters of GET .../events and the body
// of POST .../replay into a Query.
func archiveQuery(from, to, topic, cursor string, filterRaw []byte, partition map[string]string) (archive.Query, error) {
	q := archive.Query{Topic: topic, Cursor: cursor, Partition: partition}
	var err error
	if from != "" {
		if q.From, err = time.Parse(time.RFC3339Nano, from); err != nil {
			return q, herald.FieldErrorf("from", "from must be an RFC 3339 time, got %q", truncate(from, 64))
		}
	}
	if to != "" {
		if q.To, err = time.Parse(time.RFC3339Nano, to); err != nil {
			return q, herald.FieldErrorf("to", "to must be an RFC 3339 time, got %q", truncate(to, 64))
		}
	}
	if len(filterRaw) > 0 {
		f, err := filter.Parse(filterRaw)
		if err != nil {
			if e, ok := errors.AsType[*herald.Error](err); ok {
				e.Field = strings.TrimSuffix("filter."+e.Field, ".")
			}
			return q, err
		}
		q.Filter = f
	}
	return q, nil
}

// archiveHitJSON is an archived event on the wire: the event as the
// events API shows it, and its partition's values.
type archiveHitJSON struct {
	eventJSON
	Partition map[string]string `json:"partition"`
}

type archiveEventsJSON struct {
	Events     []archiveHitJSON `json:"events"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

func (s *Server) queryArchive(w http.ResponseWriter, r *http.Request) error {
	_, sub, err := s.loadArchive(r)
	if err != nil {
		return err
	}
	if s.archiveReader == nil {
		return herald.Errorf(herald.CodeUnavailable, "this server does not read archives")
	}
	v := r.URL.Query()
	partition := map[string]string{}
	for k, vals := range v {
		if key, ok := strings.CutPrefix(k, "partition."); ok && len(vals) > 0 {
			partition[key] = vals[0]
		}
	}
	q, err := archiveQuery(v.Get("from"), v.Get("to"), v.Get("topic"), v.Get("cursor"), []byte(v.Get("filter")), partition)
	if err != nil {
		return err
	}
	ndjson := strings.Contains(r.Header.Get("Accept"), "application/x-ndjson")
	limit, err := queryInt(v.Get("limit"), "limit", archive.DefaultLimit, 1, archive.MaxLimit)
	if err != nil {
		return err
	}
	q.Limit = int(limit)
	if err := archive.CheckQuery(sub.Config, &q); err != nil {
		return err
	}
	if !ndjson {
		out := archiveEventsJSON{Events: []archiveHitJSON{}}
		page, err := s.archiveReader.Run(r.Context(), sub.Config, q, func(h archive.Hit) error {
			out.Events = append(out.Events, archiveHitJSON{eventJSON: toEventJSON(h.Event), Partition: h.Partition})
			return nil
		})
		if err != nil {
			return err
		}
		out.NextCursor = page.Next
		return writeJSON(w, http.StatusOK, out)
	}
	// NDJSON: one event per line as it is read; the cursor of the next
	// page comes in the Herald-Next-Cursor trailer.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Trailer", "Herald-Next-Cursor")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	rc := http.NewResponseController(w)
	n := 0
	page, err := s.archiveReader.Run(r.Context(), sub.Config, q, func(h archive.Hit) error {
		if err := enc.Encode(archiveHitJSON{eventJSON: toEventJSON(h.Event), Partition: h.Partition}); err != nil {
			return err
		}
		if n++; n%100 == 0 {
			_ = rc.Flush()
		}
		return nil
	})
	if err != nil {
		// The status is sent: end the stream early; the client sees no
		// trailer and a body cut short.
		s.log.Warn("archive query ended early", "archive", r.PathValue("name"), "err", err)
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("Herald-Next-Cursor", page.Next)
	return nil
}

// replaySpec is the body of POST /v1/archives/{name}/replay.
type replaySpec struct {
	From      string            `json:"from"`
	To        string            `json:"to"`
	Topic     string            `json:"topic"` // the topic to publish to; "" for each event's own
	Topics    string            `json:"topics"`
	Partition map[string]string `json:"partition"`
	Filter    json.RawMessage   `json:"filter"`
}

type replayResultJSON struct {
	Published  int `json:"published"`
	Duplicates int `json:"duplicates"`
}

func (s *Server) replayArchive(w http.ResponseWriter, r *http.Request) error {
	_, sub, err := s.loadArchive(r)
	if err != nil {
		return err
	}
	if s.archiveReader == nil || s.publisher == nil {
		return herald.Errorf(herald.CodeUnavailable, "this server does not replay archives")
	}
	var spec replaySpec
	if err := decodeJSON(w, r, maxJSONBody, false, &spec); err != nil {
		return err
	}
	if spec.From == "" || spec.To == "" {
		return herald.FieldErrorf(map[bool]string{true: "from", false: "to"}[spec.From == ""], "a replay needs from and to")
	}
	var filterRaw []byte
	if len(spec.Filter) > 0 && !isNull(spec.Filter) {
		filterRaw = spec.Filter
	}
	q, err := archiveQuery(spec.From, spec.To, spec.Topics, "", filterRaw, spec.Partition)
	if err != nil {
		return err
	}
	q.Limit = archive.MaxLimit
	if err := archive.CheckQuery(sub.Config, &q); err != nil {
		return err
	}
	if spec.Topic != "" {
		if _, err := s.publisher.Topic(r.Context(), spec.Topic); err != nil {
			if e, ok := errors.AsType[*herald.Error](err); ok && e.Field == "" {
				e.Field = "topic"
			}
			return err
		}
	}
	var out replayResultJSON
	var pending []*herald.Event
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		res, err := s.publisher.Publish(r.Context(), engine.PublishParams{Events: pending, Source: "archive", Batch: true})
		if err != nil {
			return err
		}
		for _, x := range res {
			if x.Duplicate {
				out.Duplicates++
			} else if x.Err == nil {
				out.Published++
			}
		}
		pending = pending[:0]
		return nil
	}
	total := 0
	for {
		page, err := s.archiveReader.Run(r.Context(), sub.Config, q, func(h archive.Hit) error {
			if total++; total > maxReplayEvents {
				return herald.Errorf(herald.CodeInvalid, "a replay publishes at most %d events; choose a shorter range", maxReplayEvents)
			}
			ev := h.Event
			// The original id is the idempotency key, so replaying the
			// same range twice publishes each event once (within the
			// topic's dedup window).
			next := &herald.Event{
				Topic: ev.Topic, Type: ev.Type, Key: ev.Key, ContentType: ev.ContentType, Headers: ev.Headers,
				Payload: ev.Payload, IdempotencyKey: ev.ID,
			}
			if spec.Topic != "" {
				next.Topic = spec.Topic
			}
			pending = append(pending, next)
			if len(pending) == replayChunk {
				return flush()
			}
			return nil
		})
		if err != nil {
			return err
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	if err := flush(); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}
