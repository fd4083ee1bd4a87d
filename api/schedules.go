package api

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/schedule"
)

// Schedules keeps schedules (the store's herald.TimeStore).
type Schedules interface {
	PutSchedule(ctx context.Context, s herald.Schedule) (herald.Schedule, bool, error)
	GetSchedule(ctx context.Context, name string) (herald.Schedule, error)
	ListSchedules(ctx context.Context, after string, limit int) ([]herald.Schedule, error)
	DeleteSchedule(ctx context.Context, name string) error
	SetSchedulePaused(ctx context.Context, name string, paused bool, now time.Time) (herald.Schedule, error)
	AdvanceSchedule(ctx context.Context, name string, tick time.Time) error
}

// maxScheduleBody bounds a schedule's JSON: its payload (64 KiB) as
// base64 plus the rest.
const maxScheduleBody = 128 << 10

// scheduleEventJSON is a schedule's event on the wire; the payload is
// data (JSON) or data_base64, as in a batch publish.
type scheduleEventJSON struct {
	Topic       string            `json:"topic"`
	Type        string            `json:"type,omitempty"`
	Key         string            `json:"key,omitempty"`
	ContentType string            `json:"content_type,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Data        json.RawMessage   `json:"data,omitempty"`
	DataBase64  *string           `json:"data_base64,omitempty"`
}

// scheduleJSON is a schedule on the wire. A PUT sends the definition;
// the answers add the state.
type scheduleJSON struct {
	Name      string            `json:"name,omitempty"`
	Cron      string            `json:"cron,omitempty"`
	Every     string            `json:"every,omitempty"`
	TimeZone  string            `json:"time_zone,omitempty"`
	Event     scheduleEventJSON `json:"event"`
	StartAt   string            `json:"start_at,omitempty"`
	EndAt     string            `json:"end_at,omitempty"`
	Missed    string            `json:"missed,omitempty"`
	MaxMissed int               `json:"max_missed,omitempty"`
	Paused    bool              `json:"paused"`

	LastTick      string   `json:"last_tick,omitempty"`
	NextFireTimes []string `json:"next_fire_times"`
	CreatedAt     string   `json:"created_at,omitempty"`
	UpdatedAt     string   `json:"updated_at,omitempty"`
}

type scheduleListJSON struct {
	Schedules  []scheduleJSON `json:"schedules"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

func (s *Server) toScheduleJSON(sch *herald.Schedule) scheduleJSON {
	out := scheduleJSON{
		Name: sch.Name, Cron: sch.Cron, TimeZone: sch.TimeZone,
		Event: scheduleEventJSON{Topic: sch.Event.Topic, Type: sch.Event.Type, Key: sch.Event.Key,
			ContentType: sch.Event.ContentType, Headers: sch.Event.Headers},
		Missed: sch.Missed, MaxMissed: sch.MaxMissed, Paused: sch.Paused,
		NextFireTimes: []string{}, CreatedAt: formatTime(sch.CreatedAt), UpdatedAt: formatTime(sch.UpdatedAt),
	}
	out.Event.Data, out.Event.DataBase64 = renderPayload(sch.Event.ContentType, sch.Event.Payload)
	if sch.Every > 0 {
		out.Every = herald.FormatDuration(sch.Every)
	}
	if !sch.StartAt.IsZero() {
		out.StartAt = formatTime(sch.StartAt)
	}
	if !sch.EndAt.IsZero() {
		out.EndAt = formatTime(sch.EndAt)
	}
	if !sch.LastTick.IsZero() {
		out.LastTick = formatTime(sch.LastTick)
	}
	if !sch.Paused {
		from := s.now()
		if b := sch.LastTick; b.After(from) {
			from = b
		}
		if b := sch.CreatedAt; b.After(from) {
			from = b
		}
		for _, t := range schedule.NextN(sch, from, schedule.NextTimes) {
			out.NextFireTimes = append(out.NextFireTimes, formatTime(t))
		}
	}
	return out
}

// parseSchedule turns a PUT body into a validated schedule.
func parseSchedule(name string, in scheduleJSON) (herald.Schedule, error) {
	sch := herald.Schedule{Name: name, Cron: in.Cron, TimeZone: in.TimeZone, Missed: in.Missed, MaxMissed: in.MaxMissed, Paused: in.Paused,
		Event: herald.ScheduleEvent{Topic: in.Event.Topic, Type: in.Event.Type, Key: in.Event.Key, ContentType: in.Event.ContentType, Headers: in.Event.Headers}}
	if in.Name != "" && in.Name != name {
		return sch, herald.FieldErrorf("name", "the body names schedule %q, the path %q", in.Name, name)
	}
	if in.Every != "" {
		d, err := herald.ParseDuration(in.Every)
		if err != nil || d <= 0 {
			return sch, herald.FieldErrorf("every", "every must be a duration such as 30s, 15m or 1d, got %q", in.Every)
		}
		sch.Every = d
	}
	for _, f := range []struct {
		field, v string
		dst      *time.Time
	}{{"start_at", in.StartAt, &sch.StartAt}, {"end_at", in.EndAt, &sch.EndAt}} {
		if f.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, f.v)
		if err != nil {
			return sch, herald.FieldErrorf(f.field, "%s must be an RFC 3339 time, got %q", f.field, f.v)
		}
		*f.dst = t.UTC()
	}
	switch ev := in.Event; {
	case ev.Data != nil && ev.DataBase64 != nil:
		return sch, herald.FieldErrorf("event.data", "data and data_base64 are mutually exclusive")
	case ev.Data != nil:
		sch.Event.Payload = []byte(ev.Data)
		sch.Event.ContentType = cmp.Or(sch.Event.ContentType, "application/json")
	case ev.DataBase64 != nil:
		b, err := decodeBase64(*ev.DataBase64)
		if err != nil {
			return sch, herald.FieldErrorf("event.data_base64", "data_base64 is not valid base64")
		}
		sch.Event.Payload = b
	}
	return sch, schedule.Validate(&sch)
}

func (s *Server) schedulesOrUnavailable() error {
	if s.schedules == nil {
		return herald.Errorf(herald.CodeUnavailable, "schedules are not available on this server")
	}
	return nil
}

// putSchedule answers PUT /v1/schedules/{name}: 201 created, 200 replaced.
func (s *Server) putSchedule(w http.ResponseWriter, r *http.Request) error {
	if err := s.schedulesOrUnavailable(); err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := schedule.ValidateName(name); err != nil {
		return err
	}
	var in scheduleJSON
	if err := decodeJSON(w, r, maxScheduleBody, false, &in); err != nil {
		return err
	}
	sch, err := parseSchedule(name, in)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	sch.CreatedAt, sch.UpdatedAt = now, now
	if _, err := s.schedules.GetSchedule(r.Context(), name); herald.IsCode(err, herald.CodeNotFound) {
		if n, err := s.schedules.ListSchedules(r.Context(), "", schedule.MaxSchedules); err == nil && len(n) >= schedule.MaxSchedules {
			return herald.Errorf(herald.CodeConflict, "this server keeps at most %d schedules", schedule.MaxSchedules)
		}
	}
	stored, created, err := s.schedules.PutSchedule(r.Context(), sch)
	if err != nil {
		return err
	}
	if s.scheduleWake != nil {
		s.scheduleWake()
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, s.toScheduleJSON(&stored))
}

func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) error {
	if err := s.schedulesOrUnavailable(); err != nil {
		return err
	}
	sch, err := s.schedules.GetSchedule(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.toScheduleJSON(&sch))
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request) error {
	if err := s.schedulesOrUnavailable(); err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	after, err := decodeCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	page, err := s.schedules.ListSchedules(r.Context(), after, int(limit)+1)
	if err != nil {
		return err
	}
	out := scheduleListJSON{Schedules: make([]scheduleJSON, 0, len(page))}
	for i := range page {
		if i == int(limit) {
			out.NextCursor = encodeCursor(page[i-1].Name)
			break
		}
		out.Schedules = append(out.Schedules, s.toScheduleJSON(&page[i]))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request) error {
	if err := s.schedulesOrUnavailable(); err != nil {
		return err
	}
	if err := s.schedules.DeleteSchedule(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) pauseSchedule(w http.ResponseWriter, r *http.Request) error {
	return s.setSchedulePaused(w, r, true)
}

func (s *Server) resumeSchedule(w http.ResponseWriter, r *http.Request) error {
	return s.setSchedulePaused(w, r, false)
}

// setSchedulePaused pauses or resumes a schedule. Resuming records now as
// its last tick: the ticks that passed while it was paused do not fire.
func (s *Server) setSchedulePaused(w http.ResponseWriter, r *http.Request, paused bool) error {
	if err := s.schedulesOrUnavailable(); err != nil {
		return err
	}
	name := r.PathValue("name")
	now := s.now().UTC()
	before, err := s.schedules.GetSchedule(r.Context(), name)
	if err != nil {
		return err
	}
	if !paused && before.Paused {
		if err := s.schedules.AdvanceSchedule(r.Context(), name, now); err != nil {
			return err
		}
	}
	sch, err := s.schedules.SetSchedulePaused(r.Context(), name, paused, now)
	if err != nil {
		return err
	}
	if s.scheduleWake != nil {
		s.scheduleWake()
	}
	return writeJSON(w, http.StatusOK, s.toScheduleJSON(&sch))
}
