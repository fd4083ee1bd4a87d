package template

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // quiet hours name time zones; a minimal image has no zoneinfo

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Schedule is when a person's messages go out, part of the config of the
// email, sms and push channels: a digest gathers events into one message,
// quiet hours hold them back.
type Schedule struct {
	Digest     *Digest     `json:"digest,omitempty"`
	QuietHours *QuietHours `json:"quiet_hours,omitempty"`
}

// Digest gathers the events of a subscription over Window (from the first
// one) into one message listing them, at most Max events per message.
// Gathered events are not settled until their message is sent, so a
// restart loses none: whoever dispatches the subscription next gathers
// them again, in a window that starts then.
type Digest struct {
	Window string `json:"window"`
	Max    int    `json:"max,omitempty"`
}

// Digest limits.
const (
	MinDigestWindow  = time.Second
	MaxDigestWindow  = 24 * time.Hour
	DefaultDigestMax = 50
	MaxDigestMax     = 500
)

// QuietHours hold a subscription's messages between Start and End
// ("22:00" to "07:00", wrapping midnight when End is earlier) in TimeZone
// (an IANA name, "Europe/Paris"; default UTC). Events that arrive then wait
// and go out when the quiet hours end: one message each, or, with Digest,
// those held together as one message. A hold is no failed attempt.
type QuietHours struct {
	Start    string `json:"start"`
	End      string `json:"end"`
	TimeZone string `json:"time_zone,omitempty"`
	Digest   bool   `json:"digest,omitempty"`
}

// ReasonQuietHours is the reason a held event shows in the retry set.
const ReasonQuietHours = "quiet-hours"

// Validate checks the schedule. Errors name the field ("digest.window",
// "quiet_hours.time_zone").
func (s Schedule) Validate() error {
	_, err := s.compile()
	return err
}

// compiled is a checked schedule.
type compiled struct {
	window     time.Duration // 0: no digest
	max        int
	quiet      bool
	start, end int // minutes since midnight
	loc        *time.Location
	quietDig   bool
}

func (s Schedule) compile() (compiled, error) {
	var c compiled
	if d := s.Digest; d != nil {
		w, err := herald.ParseDuration(d.Window)
		if err != nil || w < MinDigestWindow || w > MaxDigestWindow {
			return c, herald.FieldErrorf("digest.window", "digest.window must be a duration from %s to %s such as \"15m\", got %q",
				herald.FormatDuration(MinDigestWindow), herald.FormatDuration(MaxDigestWindow), truncate(d.Window, 40))
		}
		c.window, c.max = w, d.Max
		if c.max == 0 {
			c.max = DefaultDigestMax
		}
		if c.max < 1 || c.max > MaxDigestMax {
			return c, herald.FieldErrorf("digest.max", "digest.max must be from 1 to %d, got %d", MaxDigestMax, d.Max)
		}
	}
	if q := s.QuietHours; q != nil {
		var err error
		if c.start, err = clock(q.Start); err != nil {
			return c, herald.FieldErrorf("quiet_hours.start", "quiet_hours.start %v", err)
		}
		if c.end, err = clock(q.End); err != nil {
			return c, herald.FieldErrorf("quiet_hours.end", "quiet_hours.end %v", err)
		}
		if c.start == c.end {
			return c, herald.FieldErrorf("quiet_hours.end", "quiet_hours.end must differ from start")
		}
		c.loc = time.UTC
		if q.TimeZone != "" {
			if c.loc, err = time.LoadLocation(q.TimeZone); err != nil || q.TimeZone == "Local" || len(q.TimeZone) > 64 {
				return c, herald.FieldErrorf("quiet_hours.time_zone", "quiet_hours.time_zone %q is not an IANA time zone such as \"Europe/Paris\"", truncate(q.TimeZone, 64))
			}
		}
		c.quiet, c.quietDig = true, q.Digest
		if c.quietDig && c.max == 0 {
			c.max = DefaultDigestMax
		}
	}
	return c, nil
}

// clock reads "HH:MM" as minutes since midnight.
func clock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || len(h) != 2 || len(m) != 2 || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, fmt.Errorf("must be a time of day as HH:MM (00:00 to 23:59), got %q", truncate(s, 20))
	}
	return hh*60 + mm, nil
}

// quietUntil reports whether t falls in the quiet hours and, if so, when
// they end.
func (c compiled) quietUntil(t time.Time) (time.Time, bool) {
	if !c.quiet {
		return time.Time{}, false
	}
	lt := t.In(c.loc)
	m := lt.Hour()*60 + lt.Minute()
	in := c.start < c.end && m >= c.start && m < c.end || c.start > c.end && (m >= c.start || m < c.end)
	if !in {
		return time.Time{}, false
	}
	y, mo, d := lt.Date()
	end := time.Date(y, mo, d, c.end/60, c.end%60, 0, 0, c.loc)
	if !end.After(lt) {
		end = time.Date(y, mo, d+1, c.end/60, c.end%60, 0, 0, c.loc)
	}
	return end, true
}

// SendFunc renders and sends one message made from d (one event, or a
// digest with d.Events set); id is stable for the same events, for the
// destination's own deduplication (an email's Message-ID).
type SendFunc func(ctx context.Context, d Data, id string) herald.DeliveryResult

// SinkParams are what NewSink needs.
type SinkParams struct {
	Schedule       Schedule
	SubscriptionID string
	UnsubscribeURL string
	// Now is the clock of quiet hours; nil means time.Now.
	Now  func() time.Time
	Send SendFunc
}

// NewSink returns the sink of a person's subscription: each event sent at
// once by Send, or, as the schedule says, held in quiet hours and gathered
// into digests (then the sink is a channel.Batcher). The schedule must
// have passed Validate.
func NewSink(p SinkParams) (channel.Sink, error) {
	c, err := p.Schedule.compile()
	if err != nil {
		return nil, err
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	s := &sink{p: p, c: c}
	if c.window > 0 || c.quietDig {
		return &digestSink{sink: s}, nil
	}
	return s, nil
}

type sink struct {
	p SinkParams
	c compiled
}

func (s *sink) held() (herald.DeliveryResult, bool) {
	end, quiet := s.c.quietUntil(s.p.Now())
	if !quiet {
		return herald.DeliveryResult{}, false
	}
	return herald.DeliveryResult{Outcome: herald.Deferred, Err: ReasonQuietHours, RetryAfter: end.Sub(s.p.Now())}, true
}

func (s *sink) Deliver(ctx context.Context, ev *herald.Event, _ int) herald.DeliveryResult {
	if res, ok := s.held(); ok {
		return res
	}
	return s.p.Send(ctx, DataFor(ev, s.p.SubscriptionID, s.p.UnsubscribeURL), ev.ID)
}

func (s *sink) Close(context.Context) error { return nil }

// digestSink gathers events into digests.
type digestSink struct{ *sink }

var _ channel.Batcher = (*digestSink)(nil)

// BatchLimits: a digest is one batch, gathered over the window. Without a
// digest (quiet hours' digest only) a second: the events held overnight
// come due within moments of each other, and are gathered into one
// message even when they were held by different calls.
func (s *digestSink) BatchLimits() channel.BatchLimits {
	if s.c.window == 0 {
		return channel.BatchLimits{MaxEvents: s.c.max, Linger: time.Second}
	}
	return channel.BatchLimits{MaxEvents: s.c.max, Linger: s.c.window}
}

func (s *digestSink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	results := make([]herald.DeliveryResult, len(batch))
	if res, ok := s.held(); ok {
		for i := range results {
			results[i] = res
		}
		return results
	}
	// With a digest, the batch is one message. With quiet hours' digest
	// only, the events held by quiet hours are one message and any other
	// goes alone.
	// Event times are read on the sink's clock (the same as time.Now but
	// in tests that move it).
	skew := s.p.Now().Sub(time.Now())
	var together []int
	for i, d := range batch {
		if s.c.window > 0 {
			together = append(together, i)
		} else if _, quiet := s.c.quietUntil(d.Event.Time.Add(skew)); quiet {
			together = append(together, i)
		} else {
			results[i] = s.Deliver(ctx, d.Event, d.Attempt)
		}
	}
	switch len(together) {
	case 0:
	case 1:
		d := batch[together[0]]
		results[together[0]] = s.Deliver(ctx, d.Event, d.Attempt)
	default:
		evs := make([]*herald.Event, len(together))
		for j, i := range together {
			evs[j] = batch[i].Event
		}
		res := s.p.Send(ctx, DigestData(evs, s.p.SubscriptionID, s.p.UnsubscribeURL), "digest."+evs[0].ID+"."+strconv.Itoa(len(evs)))
		for _, i := range together {
			results[i] = res
		}
	}
	return results
}
