package template

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

func TestQuietHours(t *testing.T) {
	t.Parallel()
	paris, _ := time.LoadLocation("Europe/Paris")
	c, err := Schedule{QuietHours: &QuietHours{Start: "22:00", End: "07:00", TimeZone: "Europe/Paris"}}.compile()
	if err != nil {
		t.Fatal(err)
	}
	day, _ := Schedule{QuietHours: &QuietHours{Start: "12:00", End: "13:30"}}.compile()
	for _, tc := range []struct {
		c     compiled
		at    time.Time
		quiet bool
		end   time.Time
	}{
		{c, time.Date(2026, 1, 10, 21, 59, 59, 0, paris), false, time.Time{}},
		{c, time.Date(2026, 1, 10, 22, 0, 0, 0, paris), true, time.Date(2026, 1, 11, 7, 0, 0, 0, paris)},
		{c, time.Date(2026, 1, 11, 3, 0, 0, 0, paris), true, time.Date(2026, 1, 11, 7, 0, 0, 0, paris)},
		{c, time.Date(2026, 1, 11, 7, 0, 0, 0, paris), false, time.Time{}},
		// The same instant written in UTC: the zone is the subscriber's.
		{c, time.Date(2026, 1, 10, 21, 30, 0, 0, time.UTC), true, time.Date(2026, 1, 11, 7, 0, 0, 0, paris)},
		// Across the spring change (02:00 -> 03:00 on 29 March 2026).
		{c, time.Date(2026, 3, 29, 1, 30, 0, 0, paris), true, time.Date(2026, 3, 29, 7, 0, 0, 0, paris)},
		{day, time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC), true, time.Date(2026, 1, 10, 13, 30, 0, 0, time.UTC)},
		{day, time.Date(2026, 1, 10, 13, 30, 0, 0, time.UTC), false, time.Time{}},
		{day, time.Date(2026, 1, 10, 23, 0, 0, 0, time.UTC), false, time.Time{}},
	} {
		end, quiet := tc.c.quietUntil(tc.at)
		if quiet != tc.quiet || !end.Equal(tc.end) {
			t.Errorf("at %s: quiet %v until %s, want %v until %s", tc.at, quiet, end, tc.quiet, tc.end)
		}
	}
}

func TestScheduleValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s     Schedule
		field string
	}{
		{Schedule{Digest: &Digest{Window: "15m"}}, ""},
		{Schedule{Digest: &Digest{Window: "0s"}}, "digest.window"},
		{Schedule{Digest: &Digest{Window: "25h"}}, "digest.window"},
		{Schedule{Digest: &Digest{Window: "1m", Max: 501}}, "digest.max"},
		{Schedule{QuietHours: &QuietHours{Start: "7:00", End: "08:00"}}, "quiet_hours.start"},
		{Schedule{QuietHours: &QuietHours{Start: "07:00", End: "24:00"}}, "quiet_hours.end"},
		{Schedule{QuietHours: &QuietHours{Start: "07:00", End: "07:00"}}, "quiet_hours.end"},
		{Schedule{QuietHours: &QuietHours{Start: "07:00", End: "08:00", TimeZone: "Local"}}, "quiet_hours.time_zone"},
		{Schedule{QuietHours: &QuietHours{Start: "07:00", End: "08:00", TimeZone: "America/New_York"}}, ""},
	} {
		err := tc.s.Validate()
		if got := fieldOf(err); got != tc.field || (tc.field != "") != (err != nil) {
			t.Errorf("%+v: error %v (field %q), want field %q", tc.s, err, got, tc.field)
		}
	}
}

func fieldOf(err error) string {
	if e, ok := err.(*herald.Error); ok {
		return e.Field
	}
	return ""
}

// A digest sink sends one message for its batch; in quiet hours it holds
// every event until they end, as no attempt.
func TestDigestSink(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	var sent []Data
	s, err := NewSink(SinkParams{
		Schedule: Schedule{Digest: &Digest{Window: "1m", Max: 10}, QuietHours: &QuietHours{Start: "22:00", End: "07:00"}},
		Now:      func() time.Time { return now },
		Send: func(_ context.Context, d Data, id string) herald.DeliveryResult {
			sent = append(sent, d)
			return herald.DeliveryResult{Outcome: herald.Delivered}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	b := s.(channel.Batcher)
	if l := b.BatchLimits(); l.MaxEvents != 10 || l.Linger != time.Minute {
		t.Fatalf("limits %+v", l)
	}
	batch := []channel.Delivery{
		{Event: &herald.Event{ID: "a", Topic: "t", Time: now}, Attempt: 1},
		{Event: &herald.Event{ID: "b", Topic: "t", Time: now}, Attempt: 1},
	}
	res := b.DeliverBatch(t.Context(), batch)
	if len(sent) != 1 || len(sent[0].Events) != 2 || res[0].Outcome != herald.Delivered || res[1].Outcome != herald.Delivered {
		t.Fatalf("sent %d messages, results %+v", len(sent), res)
	}
	now = time.Date(2026, 1, 10, 23, 0, 0, 0, time.UTC)
	res = b.DeliverBatch(t.Context(), batch)
	if len(sent) != 1 || res[0].Outcome != herald.Deferred || res[0].RetryAfter != 8*time.Hour || res[0].Err != ReasonQuietHours {
		t.Fatalf("in quiet hours: %d messages, results %+v", len(sent), res)
	}
}

func TestLibraryResolve(t *testing.T) {
	t.Parallel()
	entries := map[string]*libEntry{}
	for _, n := range []Named{
		{Name: "any-order", Topic: "orders.>"},
		{Name: "eu", Topic: "orders.eu.*"},
		{Name: "eu-paid", Topic: "orders.eu.*", EventType: "paid"},
		{Name: "exact", Topic: "orders.eu.fr"},
		{Name: "named-only"},
	} {
		set, err := n.Templates.Parse(true)
		if err != nil {
			t.Fatal(err)
		}
		entries[n.Name] = &libEntry{named: n, set: set}
	}
	// Tenant acme has a template of a platform template's name, and one
	// less specific than the platform's for orders.eu.fr: its own come
	// first all the same.
	acme := map[string]*libEntry{}
	for _, n := range []Named{
		{Name: "named-only"},
		{Name: "acme-orders", Topic: "orders.>"},
	} {
		set, err := n.Templates.Parse(true)
		if err != nil {
			t.Fatal(err)
		}
		acme["acme:"+n.Name] = &libEntry{named: n, set: set}
	}
	now := time.Now()
	l := &Library{now: time.Now, refresh: time.Hour, cache: map[string]*libCache{
		"":     {loaded: now, entries: entries},
		"acme": {loaded: now, entries: map[string]*libEntry{"named-only": acme["acme:named-only"], "acme-orders": acme["acme:acme-orders"]}},
		"beta": {loaded: now, entries: map[string]*libEntry{}},
	}}
	for _, tc := range []struct{ tenant, name, topic, typ, want string }{
		{"", "", "orders.eu.fr", "paid", "exact"},
		{"", "", "orders.eu.de", "paid", "eu-paid"},
		{"", "", "orders.eu.de", "refunded", "eu"},
		{"", "", "orders.us", "paid", "any-order"},
		{"", "", "invoices", "paid", ""},
		{"", "named-only", "invoices", "", "named-only"},
		{"acme", "", "orders.eu.fr", "paid", "acme:acme-orders"},
		{"acme", "", "invoices", "paid", ""},
		{"acme", "named-only", "invoices", "", "acme:named-only"},
		{"acme", "eu", "invoices", "", "eu"}, // the platform's, by name
		{"beta", "", "orders.eu.fr", "paid", "exact"},
		{"beta", "named-only", "invoices", "", "named-only"},
	} {
		set, err := l.Resolve(t.Context(), tc.tenant, tc.name, tc.topic, tc.typ)
		got := ""
		for name, e := range entries {
			if set != nil && e.set == set {
				got = name
			}
		}
		for name, e := range acme {
			if set != nil && e.set == set {
				got = name
			}
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q, %q, %q, %q) = %q, %v; want %q", tc.tenant, tc.name, tc.topic, tc.typ, got, err, tc.want)
		}
	}
	if _, err := l.Resolve(t.Context(), "acme", "nope", "orders", ""); err == nil {
		t.Error("a missing named template resolved")
	}
}
