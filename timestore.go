package herald

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// ScheduledEvent is an event accepted for later: it was committed when it
// was published (the publish is durable and acknowledged) and joins its
// topic's log, with the same ID, when DueAt comes.
type ScheduledEvent struct {
	Event           // Topic, ID, metadata, Payload; Time is when it was accepted; Seq is 0
	DueAt time.Time // when it becomes visible
	// Pos orders pending events of one DueAt (the order they were
	// scheduled); set by the store when it reads them.
	Pos int64
}

// DuePosition is a place in the delayed set's due order (DueAt, then
// Pos): DueEvents reads after it. The zero value is before every event.
type DuePosition struct {
	DueAt time.Time
	Pos   int64
}

// After returns the position just after e.
func (e *ScheduledEvent) After() DuePosition { return DuePosition{DueAt: e.DueAt, Pos: e.Pos} }

// Nanos is the position's DueAt in Unix nanoseconds, 0 for the zero time.
func (p DuePosition) Nanos() int64 {
	if p.DueAt.IsZero() {
		return 0
	}
	return p.DueAt.UnixNano()
}

// EventRef names one event of one topic.
type EventRef struct {
	Topic string
	ID    string
}

// Schedule publishes an event at the ticks of a cron expression or an
// interval. The scheduler fires each tick once across all nodes: a tick's
// idempotency key is derived from the schedule's name and the tick time.
type Schedule struct {
	Name string
	// Cron is a cron expression (robfig/cron syntax, seconds optional,
	// descriptors such as @hourly); exactly one of Cron and Every is set.
	Cron string
	// Every fires at StartAt (or the creation time) plus whole multiples.
	Every time.Duration
	// TimeZone is the IANA zone Cron is read in; "" is UTC.
	TimeZone string
	// Event is what each tick publishes.
	Event ScheduleEvent
	// StartAt and EndAt bound the ticks (zero: unbounded).
	StartAt, EndAt time.Time
	// Missed is the policy for ticks that passed while no node could fire
	// them: MissedSkip, MissedOnce or MissedAll (up to MaxMissed).
	Missed    string
	MaxMissed int
	Paused    bool
	// LastTick is the newest tick fired or skipped; the next tick is after
	// it. Zero before the first.
	LastTick  time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ScheduleEvent is the event a schedule publishes at each tick.
type ScheduleEvent struct {
	Topic       string            `json:"topic"`
	Type        string            `json:"type,omitempty"`
	Key         string            `json:"key,omitempty"`
	ContentType string            `json:"content_type,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Payload     []byte            `json:"payload,omitempty"`
}

// Missed-tick policies of a Schedule.
const (
	MissedSkip = "skip" // fire none of the missed ticks; carry on from now
	MissedOnce = "once" // fire the newest missed tick once
	MissedAll  = "all"  // fire every missed tick, oldest first, up to MaxMissed
)

// TimeStore keeps what Herald does at a time of its own choosing: delayed
// events waiting for their due time, schedules, and the named leases that
// decide which node promotes and fires. Both stores implement it and pass
// storetest.RunTime. All methods are safe for concurrent use.
type TimeStore interface {
	// ScheduleEvents commits the events, all or none, to be published at
	// their DueAt. Each has Topic, ID, Time and DueAt set. An event whose
	// (Topic, ID), or whose non-empty (Topic, IdempotencyKey), names a
	// pending event is not stored: its result has Duplicate set and the
	// pending event's ID. Seq is always 0.
	ScheduleEvents(ctx context.Context, events []ScheduledEvent) ([]AppendResult, error)

	// DueEvents returns up to limit pending events whose DueAt is at or
	// before now and whose position is after the given one, in DueAt
	// order (then in the order they were scheduled). They stay pending
	// until an Append of them with Event.Delayed set, or DeleteScheduled.
	DueEvents(ctx context.Context, now time.Time, after DuePosition, limit int) ([]ScheduledEvent, error)

	// NextDue returns the earliest DueAt pending, or the zero time.
	NextDue(ctx context.Context) (time.Time, error)

	// DeleteScheduled removes the pending events named (missing ones are
	// ignored) in one transaction: how the promoter drops events that can
	// no longer be published.
	DeleteScheduled(ctx context.Context, refs []EventRef) error

	// CancelScheduled removes one pending event, or returns CodeNotFound
	// (it was never scheduled, was cancelled, or is already published).
	CancelScheduled(ctx context.Context, topic, id string) error

	// ListScheduled returns up to limit pending events of the topic in
	// DueAt order, after the (afterDue, afterID) position (zero values for
	// the first page).
	ListScheduled(ctx context.Context, topic string, afterDue time.Time, afterID string, limit int) ([]ScheduledEvent, error)

	// CountScheduled returns how many events are pending in all topics.
	CountScheduled(ctx context.Context) (int64, error)

	// PutSchedule creates the schedule or replaces its definition, and
	// reports whether it was created. An update keeps CreatedAt and
	// LastTick (ticks already fired are not fired again).
	PutSchedule(ctx context.Context, s Schedule) (Schedule, bool, error)
	// GetSchedule returns the schedule or CodeNotFound.
	GetSchedule(ctx context.Context, name string) (Schedule, error)
	// ListSchedules returns up to limit schedules after the name, in name order.
	ListSchedules(ctx context.Context, after string, limit int) ([]Schedule, error)
	// DeleteSchedule removes the schedule or returns CodeNotFound.
	DeleteSchedule(ctx context.Context, name string) error
	// SetSchedulePaused pauses or resumes it; CodeNotFound if missing.
	SetSchedulePaused(ctx context.Context, name string, paused bool, now time.Time) (Schedule, error)
	// AdvanceSchedule sets LastTick to tick if tick is after the stored
	// one (it never moves back), or returns CodeNotFound.
	AdvanceSchedule(ctx context.Context, name string, tick time.Time) error

	// AcquireNamedLease gives node the named lease until now+ttl if it is free,
	// expired, or already node's, and reports whether node holds it.
	AcquireNamedLease(ctx context.Context, name, node string, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseNamedLease gives up node's lease, if it holds it.
	ReleaseNamedLease(ctx context.Context, name, node string) error
}

// scheduleSpec is how stores keep a schedule's definition: one JSON
// document both stores write and read the same way.
type scheduleSpec struct {
	Cron      string        `json:"cron,omitempty"`
	Every     int64         `json:"every_ns,omitempty"`
	TimeZone  string        `json:"time_zone,omitempty"`
	Event     ScheduleEvent `json:"event"`
	StartAt   int64         `json:"start_ns,omitempty"`
	EndAt     int64         `json:"end_ns,omitempty"`
	Missed    string        `json:"missed,omitempty"`
	MaxMissed int           `json:"max_missed,omitempty"`
}

// EncodeScheduleSpec returns the stored form of s's definition (not its
// name, pause, last tick or times, which stores keep in columns).
func EncodeScheduleSpec(s Schedule) ([]byte, error) {
	sp := scheduleSpec{Cron: s.Cron, Every: int64(s.Every), TimeZone: s.TimeZone, Event: s.Event,
		Missed: s.Missed, MaxMissed: s.MaxMissed}
	if !s.StartAt.IsZero() {
		sp.StartAt = s.StartAt.UnixNano()
	}
	if !s.EndAt.IsZero() {
		sp.EndAt = s.EndAt.UnixNano()
	}
	return json.Marshal(sp)
}

// DecodeScheduleSpec fills the definition of s from its stored form.
func DecodeScheduleSpec(b []byte, s *Schedule) error {
	var sp scheduleSpec
	if err := json.Unmarshal(b, &sp); err != nil {
		return fmt.Errorf("schedule %s: stored definition: %w", s.Name, err)
	}
	s.Cron, s.Every, s.TimeZone, s.Event = sp.Cron, time.Duration(sp.Every), sp.TimeZone, sp.Event
	s.Missed, s.MaxMissed = sp.Missed, sp.MaxMissed
	s.StartAt, s.EndAt = time.Time{}, time.Time{}
	if sp.StartAt != 0 {
		s.StartAt = time.Unix(0, sp.StartAt).UTC()
	}
	if sp.EndAt != 0 {
		s.EndAt = time.Unix(0, sp.EndAt).UTC()
	}
	return nil
}
