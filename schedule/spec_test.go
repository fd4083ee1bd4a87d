package schedule

import (
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func paris(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	return loc
}

func fmtTicks(ts []time.Time, loc *time.Location) string {
	var out []string
	for _, t := range ts {
		out = append(out, t.In(loc).Format("01-02T15:04Z07:00"))
	}
	return strings.Join(out, " ")
}

// Daylight saving in Europe/Paris, 2026: the clocks go forward at 02:00 on
// 29 March (02:00-03:00 does not exist) and back at 03:00 on 25 October
// (02:00-03:00 happens twice).
func TestNextAcrossDST(t *testing.T) {
	t.Parallel()
	loc := paris(t)
	for _, c := range []struct {
		cron string
		from time.Time
		n    int
		want string
	}{
		// A daily time in the gap fires once, when the clocks go forward.
		{"30 2 * * *", time.Date(2026, 3, 28, 12, 0, 0, 0, loc), 3, "03-29T03:00+02:00 03-30T02:30+02:00 03-31T02:30+02:00"},
		// A daily time in the repeated hour fires once, at its first occurrence.
		{"30 2 * * *", time.Date(2026, 10, 24, 12, 0, 0, 0, loc), 3, "10-25T02:30+02:00 10-26T02:30+01:00 10-27T02:30+01:00"},
		// Hourly: the missing hour is not invented, the repeated one fires once.
		{"0 * * * *", time.Date(2026, 3, 29, 0, 30, 0, 0, loc), 3, "03-29T01:00+01:00 03-29T03:00+02:00 03-29T04:00+02:00"},
		{"0 * * * *", time.Date(2026, 10, 25, 0, 30, 0, 0, loc), 4, "10-25T01:00+02:00 10-25T02:00+02:00 10-25T03:00+01:00 10-25T04:00+01:00"},
		// With seconds, and a descriptor.
		{"15 0 9 * * MON", time.Date(2026, 3, 28, 0, 0, 0, 0, loc), 2, "03-30T09:00+02:00 04-06T09:00+02:00"},
		{"@daily", time.Date(2026, 3, 28, 12, 0, 0, 0, loc), 2, "03-29T00:00+01:00 03-30T00:00+02:00"},
	} {
		s := &herald.Schedule{Name: "x", Cron: c.cron, TimeZone: "Europe/Paris"}
		if err := Validate(withTopic(s)); err != nil {
			t.Fatal(err)
		}
		if got := fmtTicks(NextN(s, c.from, c.n), loc); got != c.want {
			t.Errorf("%s from %s:\n got %s\nwant %s", c.cron, c.from, got, c.want)
		}
	}
	// The seconds field counts when given.
	s := &herald.Schedule{Name: "x", Cron: "15 0 9 * * MON", TimeZone: "Europe/Paris"}
	if got := Next(s, time.Date(2026, 3, 28, 0, 0, 0, 0, loc)); got.Second() != 15 {
		t.Errorf("seconds = %d; want 15", got.Second())
	}
}

func withTopic(s *herald.Schedule) *herald.Schedule {
	s.Event.Topic = "jobs"
	return s
}

func TestNextEveryAndBounds(t *testing.T) {
	t.Parallel()
	created := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &herald.Schedule{Name: "x", Every: 10 * time.Minute, CreatedAt: created}
	if got := fmtTicks(NextN(s, created, 2), time.UTC); got != "01-01T00:10Z 01-01T00:20Z" {
		t.Errorf("every from creation = %s", got)
	}
	if got := Next(s, created.Add(25*time.Minute)); !got.Equal(created.Add(30 * time.Minute)) {
		t.Errorf("every keeps its phase: %s", got)
	}
	s.StartAt, s.EndAt = created.Add(time.Hour+5*time.Minute), created.Add(time.Hour+26*time.Minute)
	if got := fmtTicks(NextN(s, created, 5), time.UTC); got != "01-01T01:05Z 01-01T01:15Z 01-01T01:25Z" {
		t.Errorf("every within start and end = %s", got)
	}
}

func TestDuePolicies(t *testing.T) {
	t.Parallel()
	created := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(missed string, max int) *herald.Schedule {
		return &herald.Schedule{Name: "x", Every: time.Minute, CreatedAt: created, Missed: missed, MaxMissed: max}
	}
	at := func(min int, sec int) time.Time {
		return created.Add(time.Duration(min)*time.Minute + time.Duration(sec)*time.Second)
	}
	for _, c := range []struct {
		name     string
		s        *herald.Schedule
		now      time.Time
		fire     string
		lastTick time.Time
	}{
		{"nothing due yet", mk("skip", 10), at(0, 59), "", time.Time{}},
		{"on time", mk("skip", 10), at(1, 2), "01-01T00:01Z", at(1, 0)},
		{"on time, once", mk("once", 10), at(1, 2), "01-01T00:01Z", at(1, 0)},
		// Down from 00:00 to 00:05:30: ticks 1 to 5 were missed.
		{"skip", mk("skip", 10), at(5, 30), "", at(5, 0)},
		{"once", mk("once", 10), at(5, 30), "01-01T00:05Z", at(5, 0)},
		{"all", mk("all", 10), at(5, 30), "01-01T00:01Z 01-01T00:02Z 01-01T00:03Z 01-01T00:04Z 01-01T00:05Z", at(5, 0)},
		{"all, bounded", mk("all", 2), at(5, 30), "01-01T00:04Z 01-01T00:05Z", at(5, 0)},
		// Down until just after 00:05: tick 5 is on time, 1 to 4 missed.
		{"skip, last on time", mk("skip", 10), at(5, 3), "01-01T00:05Z", at(5, 0)},
		{"once, last on time", mk("once", 10), at(5, 3), "01-01T00:05Z", at(5, 0)},
		{"all, last on time, bounded", mk("all", 2), at(5, 3), "01-01T00:03Z 01-01T00:04Z 01-01T00:05Z", at(5, 0)},
		// A year down with "all": only the newest few, found at once.
		{"all after a year", mk("all", 3), created.Add(365 * 24 * time.Hour).Add(30 * time.Second), "12-31T23:58Z 12-31T23:59Z 01-01T00:00Z", created.Add(365 * 24 * time.Hour)},
	} {
		fire, last := Due(c.s, c.now)
		if got := fmtTicks(fire, time.UTC); got != c.fire || !last.Equal(c.lastTick) {
			t.Errorf("%s: fire %q, last %s; want %q, %s", c.name, got, last, c.fire, c.lastTick)
		}
	}
	// After the last tick is recorded, nothing is due again.
	s := mk("all", 10)
	s.LastTick = at(5, 0)
	if fire, _ := Due(s, at(5, 30)); len(fire) != 0 {
		t.Errorf("due again after recording: %v", fire)
	}
	s.Paused = true
	if fire, _ := Due(s, at(9, 0)); len(fire) != 0 {
		t.Errorf("a paused schedule is due: %v", fire)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := func() *herald.Schedule {
		return &herald.Schedule{Name: "nightly-report", Cron: "0 3 * * *", Event: herald.ScheduleEvent{Topic: "jobs"}}
	}
	s := ok()
	if err := Validate(s); err != nil || s.Missed != "skip" || s.MaxMissed != DefaultMaxMissed || s.Event.ContentType == "" {
		t.Fatalf("Validate = %v, %+v", err, s)
	}
	for field, mut := range map[string]func(*herald.Schedule){
		"name":          func(s *herald.Schedule) { s.Name = "no spaces" },
		"cron":          func(s *herald.Schedule) { s.Cron = "61 * * * *" },
		"every":         func(s *herald.Schedule) { s.Every = time.Millisecond; s.Cron = "" },
		"time_zone":     func(s *herald.Schedule) { s.TimeZone = "Mars/Olympus" },
		"missed":        func(s *herald.Schedule) { s.Missed = "some" },
		"max_missed":    func(s *herald.Schedule) { s.MaxMissed = MaxMissed + 1 },
		"end_at":        func(s *herald.Schedule) { s.StartAt = time.Now(); s.EndAt = s.StartAt },
		"event.topic":   func(s *herald.Schedule) { s.Event.Topic = "herald.x" },
		"event.data":    func(s *herald.Schedule) { s.Event.Payload = make([]byte, MaxPayload+1) },
		"event.headers": func(s *herald.Schedule) { s.Event.Headers = map[string]string{"bad name": "x"} },
	} {
		s := ok()
		mut(s)
		err := Validate(s)
		if he, isHE := err.(*herald.Error); !isHE || he.Code != herald.CodeInvalid || he.Field != field {
			t.Errorf("%s: Validate = %v; want CodeInvalid naming %s", field, err, field)
		}
	}
	s = ok()
	s.Cron = "TZ=Asia/Tokyo 0 3 * * *"
	if err := Validate(s); err == nil {
		t.Error("a TZ= prefix was accepted")
	}
}

func TestTickEvent(t *testing.T) {
	t.Parallel()
	s := &herald.Schedule{Name: "n", Event: herald.ScheduleEvent{Topic: "jobs", Type: "run", Headers: map[string]string{"A": "1"}, Payload: []byte("x")}}
	tick := time.Date(2030, 1, 1, 3, 0, 0, 0, time.UTC)
	e := TickEvent(s, tick)
	if e.IdempotencyKey != IdempotencyKey("n", tick) || e.Headers["Herald-Tick"] != "2030-01-01T03:00:00Z" || e.Headers["Herald-Schedule"] != "n" || e.Headers["A"] != "1" || e.Topic != "jobs" {
		t.Errorf("TickEvent = %+v", e)
	}
	if IdempotencyKey("n", tick) == IdempotencyKey("n", tick.Add(time.Second)) || IdempotencyKey("n", tick) != IdempotencyKey("n", tick.In(time.FixedZone("x", 3600))) {
		t.Error("the idempotency key is not one per tick instant")
	}
	if len(s.Event.Headers) != 1 {
		t.Error("TickEvent changed the schedule's headers")
	}
}
