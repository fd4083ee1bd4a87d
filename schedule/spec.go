package schedule

import (
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/heraldhq/herald"
)

// Limits of a schedule definition.
const (
	// MinEvery is the shortest interval.
	MinEvery = time.Second
	// MaxPayload bounds a schedule's event payload.
	MaxPayload = 64 << 10
	// DefaultMaxMissed and MaxMissed bound the ticks the "all" policy
	// fires after downtime.
	DefaultMaxMissed = 100
	MaxMissed        = 1000
	// Grace is how late a tick may be and still count as on time: the
	// "skip" policy fires a tick found later than this as missed (not at
	// all). It covers a failover between nodes (the lease moves within
	// five seconds) and a busy machine.
	Grace = 15 * time.Second
	// MaxSchedules bounds how many schedules a server keeps.
	MaxSchedules = 10000
	// NextTimes is how many upcoming ticks a schedule's GET shows.
	NextTimes = 5
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// parser reads robfig/cron expressions: five fields, or six with seconds
// first, or a descriptor (@hourly, @every 1h30m).
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ValidateName checks a schedule name: 1 to 128 letters, digits, '.', '_'
// or '-', starting with a letter or digit.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return herald.FieldErrorf("name", "a schedule name is 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit; got %q", name)
	}
	return nil
}

// Validate checks a schedule's definition and fills in its defaults
// (Missed "skip", MaxMissed 100). Errors are CodeInvalid naming the field
// as the API spells it.
func Validate(s *herald.Schedule) error {
	if err := ValidateName(s.Name); err != nil {
		return err
	}
	switch {
	case s.Cron == "" && s.Every == 0:
		return herald.FieldErrorf("cron", "give cron (a cron expression) or every (an interval)")
	case s.Cron != "" && s.Every != 0:
		return herald.FieldErrorf("cron", "give cron or every, not both")
	case s.Every != 0 && s.Every < MinEvery:
		return herald.FieldErrorf("every", "every must be at least %s", MinEvery)
	}
	if s.Cron != "" {
		if strings.HasPrefix(s.Cron, "TZ=") || strings.HasPrefix(s.Cron, "CRON_TZ=") {
			return herald.FieldErrorf("cron", "set the time zone with time_zone, not in the expression")
		}
		if _, err := parser.Parse(s.Cron); err != nil {
			return herald.FieldErrorf("cron", "cron expression %q: %v", s.Cron, err)
		}
	}
	if _, err := location(s.TimeZone); err != nil {
		return herald.FieldErrorf("time_zone", "unknown time zone %q: give an IANA name such as Europe/Paris, or UTC", s.TimeZone)
	}
	if !s.EndAt.IsZero() && !s.EndAt.After(s.StartAt) {
		return herald.FieldErrorf("end_at", "end_at must be after start_at")
	}
	switch s.Missed {
	case "":
		s.Missed = herald.MissedSkip
	case herald.MissedSkip, herald.MissedOnce, herald.MissedAll:
	default:
		return herald.FieldErrorf("missed", "missed must be skip, once or all, got %q", s.Missed)
	}
	switch {
	case s.MaxMissed == 0:
		s.MaxMissed = DefaultMaxMissed
	case s.MaxMissed < 1 || s.MaxMissed > MaxMissed:
		return herald.FieldErrorf("max_missed", "max_missed must be 1 to %d", MaxMissed)
	}
	ev := &s.Event
	if err := herald.ValidateTopicName(ev.Topic); err != nil {
		return herald.FieldErrorf("event.topic", "%s", err.(*herald.Error).Message)
	}
	if herald.IsSystemTopic(ev.Topic) {
		return herald.FieldErrorf("event.topic", "topic %q is reserved", ev.Topic)
	}
	if len(ev.Payload) > MaxPayload {
		return herald.FieldErrorf("event.data", "the payload is %d bytes; a schedule's is at most %d", len(ev.Payload), MaxPayload)
	}
	if ev.ContentType == "" {
		ev.ContentType = "application/octet-stream"
	}
	e := herald.Event{Type: ev.Type, Key: ev.Key, ContentType: ev.ContentType, Headers: ev.Headers}
	if err := herald.ValidateEvent(&e); err != nil {
		he := err.(*herald.Error)
		return herald.FieldErrorf("event."+he.Field, "%s", he.Message)
	}
	return nil
}

func location(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	return time.LoadLocation(name)
}

// Next returns the first tick of s strictly after t, within its start and
// end, or the zero time when there is none. Cron expressions are read in
// the schedule's time zone: see docs/schedules.md for what a daylight
// saving change does to them.
func Next(s *herald.Schedule, t time.Time) time.Time {
	if !s.StartAt.IsZero() && t.Before(s.StartAt) {
		t = s.StartAt.Add(-time.Nanosecond)
	}
	var next time.Time
	if s.Every > 0 {
		anchor := s.StartAt
		if anchor.IsZero() {
			anchor = s.CreatedAt
		}
		if t.Before(anchor) {
			next = anchor
		} else {
			k := t.Sub(anchor)/s.Every + 1
			next = anchor.Add(k * s.Every)
		}
	} else {
		sched, err := parser.Parse(s.Cron)
		if err != nil {
			return time.Time{}
		}
		loc, err := location(s.TimeZone)
		if err != nil {
			return time.Time{}
		}
		next = nextWall(sched, t, loc)
		if next.IsZero() {
			return time.Time{}
		}
	}
	if !s.EndAt.IsZero() && next.After(s.EndAt) {
		return time.Time{}
	}
	return next.UTC()
}

// nextWall returns the first tick of sched strictly after t, reading the
// expression against the wall clock of loc, so that daylight saving
// changes do what people expect of a clock on the wall:
//
//   - a wall time that happens twice (the clocks go back) fires once, at
//     its first occurrence;
//   - a wall time that does not happen (the clocks go forward over it)
//     fires once, at the moment the clocks go forward.
func nextWall(sched cron.Schedule, t time.Time, loc *time.Location) time.Time {
	w := wallOf(t.In(loc))
	for range 1000 {
		w = sched.Next(w)
		if w.IsZero() {
			return time.Time{}
		}
		if r := inZone(w, loc); r.After(t) {
			return r
		}
	}
	return time.Time{}
}

// inZone returns the instant the wall time w (given in UTC) names in loc:
// the first of two, or the end of the gap it falls in.
func inZone(w time.Time, loc *time.Location) time.Time {
	r := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), loc)
	if !sameWall(r.In(loc), w) {
		// Skipped: r is w read with an offset from one side of the gap.
		start, end := r.ZoneBounds()
		if wallOf(r.In(loc)).After(w) {
			return start
		}
		return end
	}
	// Repeated? The same wall time in the zone before this one.
	start, _ := r.ZoneBounds()
	if !start.IsZero() {
		_, off := r.Zone()
		_, prevOff := start.Add(-time.Nanosecond).Zone()
		if prevOff > off {
			if alt := r.Add(-time.Duration(prevOff-off) * time.Second); alt.Before(start) && sameWall(alt.In(loc), w) {
				return alt
			}
		}
	}
	return r
}

func sameWall(t, w time.Time) bool {
	y, mo, d := t.Date()
	wy, wmo, wd := w.Date()
	return y == wy && mo == wmo && d == wd && t.Hour() == w.Hour() && t.Minute() == w.Minute() && t.Second() == w.Second()
}

// wallOf returns t's clock reading as a UTC time, for comparing wall times.
func wallOf(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// NextN returns up to n ticks of s after t.
func NextN(s *herald.Schedule, t time.Time, n int) []time.Time {
	var out []time.Time
	for range n {
		t = Next(s, t)
		if t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

// base is the time after which s's next tick comes: its last tick, or
// its creation (a new schedule fires no tick from before it existed).
func base(s *herald.Schedule) time.Time {
	if !s.LastTick.IsZero() {
		return s.LastTick
	}
	return s.CreatedAt
}

// Due returns the ticks of s to fire at now, oldest first, by its missed
// policy, and the tick to record as the last one (zero: none due).
//
//   - A tick at most Grace late is on time and fires under every policy.
//   - skip: later ticks are missed and none of them fires.
//   - once: of the missed ticks, the newest fires once.
//   - all: every missed tick fires, oldest first; when more than MaxMissed
//     are missed, only the newest MaxMissed do.
func Due(s *herald.Schedule, now time.Time) (fire []time.Time, last time.Time) {
	if s.Paused {
		return nil, time.Time{}
	}
	limit := max(s.MaxMissed, 1)
	from := base(s)
	if s.Every > 0 {
		// Only the newest limit+1 ticks can fire: start just before them.
		if t := now.Add(-time.Duration(limit+1) * s.Every); t.After(from) {
			from = t
		}
	}
	var ticks []time.Time
	for t, n := Next(s, from), 0; !t.IsZero() && !t.After(now) && n < maxWalk; t, n = Next(s, t), n+1 {
		ticks = append(ticks, t)
		if len(ticks) > 2*(limit+1) {
			ticks = append(ticks[:0], ticks[len(ticks)-(limit+1):]...)
		}
	}
	if len(ticks) == 0 {
		return nil, time.Time{}
	}
	last = ticks[len(ticks)-1]
	var onTime []time.Time
	if now.Sub(last) <= Grace {
		onTime, ticks = ticks[len(ticks)-1:], ticks[:len(ticks)-1]
	}
	switch s.Missed {
	case herald.MissedOnce:
		if len(ticks) > 0 && len(onTime) == 0 {
			fire = ticks[len(ticks)-1:]
		}
	case herald.MissedAll:
		if len(ticks) > limit {
			ticks = ticks[len(ticks)-limit:]
		}
		fire = ticks
	}
	return append(slices.Clone(fire), onTime...), last
}

// maxWalk bounds the ticks Due walks in one call (a cron expression of
// every second after a year of downtime): the rest are walked by the next
// calls, each of which records its last tick.
const maxWalk = 100_000

// IdempotencyKey is the key of the event a tick publishes: the same for a
// tick on every node and after every restart, so the topic's dedup makes
// a tick fired twice one event.
func IdempotencyKey(name string, tick time.Time) string {
	return "herald.schedule:" + name + ":" + tick.UTC().Format(time.RFC3339Nano)
}

// TickEvent returns the event a tick of s publishes. It carries the
// schedule's name and the tick time in the headers Herald-Schedule and
// Herald-Tick.
func TickEvent(s *herald.Schedule, tick time.Time) *herald.Event {
	h := make(map[string]string, len(s.Event.Headers)+2)
	for k, v := range s.Event.Headers {
		h[k] = v
	}
	h["Herald-Schedule"] = s.Name
	h["Herald-Tick"] = tick.UTC().Format(time.RFC3339Nano)
	return &herald.Event{
		Topic: s.Event.Topic, Type: s.Event.Type, Key: s.Event.Key, ContentType: s.Event.ContentType,
		Headers: h, Payload: s.Event.Payload, IdempotencyKey: IdempotencyKey(s.Name, tick),
	}
}
