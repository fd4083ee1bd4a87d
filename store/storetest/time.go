package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// RunTime runs the conformance suite of herald.TimeStore: delayed events,
// schedules and named leases. open is as for Run; the store it returns
// must implement herald.TimeStore.
func RunTime(t *testing.T, open func(t *testing.T) herald.Store) {
	ts := func(t *testing.T) herald.TimeStore {
		s, ok := open(t).(herald.TimeStore)
		if !ok {
			t.Fatal("the store does not implement herald.TimeStore")
		}
		return s
	}
	t.Run("Delayed", func(t *testing.T) { t.Parallel(); runDelayed(t, ts(t)) })
	t.Run("PromoteInAppend", func(t *testing.T) { t.Parallel(); runPromoteInAppend(t, open(t)) })
	t.Run("Schedules", func(t *testing.T) { t.Parallel(); runSchedules(t, ts(t)) })
	t.Run("NamedLeases", func(t *testing.T) { t.Parallel(); runNamedLeases(t, ts(t)) })
}

func delayed(topic, id string, due time.Time) herald.ScheduledEvent {
	return herald.ScheduledEvent{Event: herald.Event{Topic: topic, ID: id, Type: "t", ContentType: "text/plain",
		Payload: []byte("p-" + id), Time: due.Add(-time.Hour), Headers: map[string]string{"h": id}}, DueAt: due}
}

func runDelayed(t *testing.T, s herald.TimeStore) {
	ctx := t.Context()
	b := base()
	if due, err := s.NextDue(ctx); err != nil || !due.IsZero() {
		t.Fatalf("NextDue on empty = %v, %v; want zero", due, err)
	}
	// Scheduled out of due order, two at the same due time.
	in := []herald.ScheduledEvent{
		delayed("a", "e3", b.Add(3*time.Second)),
		delayed("a", "e1", b.Add(time.Second)),
		delayed("b", "e2", b.Add(2*time.Second)),
		delayed("a", "e2b", b.Add(2*time.Second)),
	}
	in[1].IdempotencyKey = "k1"
	res, err := s.ScheduleEvents(ctx, in)
	if err != nil {
		t.Fatalf("ScheduleEvents: %v", err)
	}
	for i, r := range res {
		if r.Duplicate || r.ID != in[i].ID || r.Seq != 0 {
			t.Fatalf("result %d = %+v", i, r)
		}
	}
	// A repeated id, and a repeated idempotency key, answer the pending event.
	dupID := delayed("a", "e3", b.Add(9*time.Second))
	dupKey := delayed("a", "other", b.Add(9*time.Second))
	dupKey.IdempotencyKey = "k1"
	res, err = s.ScheduleEvents(ctx, []herald.ScheduledEvent{dupID, dupKey})
	if err != nil {
		t.Fatalf("ScheduleEvents dups: %v", err)
	}
	if !res[0].Duplicate || res[0].ID != "e3" || !res[1].Duplicate || res[1].ID != "e1" {
		t.Fatalf("dup results = %+v", res)
	}
	if n, err := s.CountScheduled(ctx); err != nil || n != 4 {
		t.Fatalf("CountScheduled = %d, %v; want 4", n, err)
	}
	if due, err := s.NextDue(ctx); err != nil || !due.Equal(b.Add(time.Second)) {
		t.Fatalf("NextDue = %v, %v", due, err)
	}
	due, err := s.DueEvents(ctx, b.Add(2*time.Second), herald.DuePosition{}, 10)
	if err != nil {
		t.Fatalf("DueEvents: %v", err)
	}
	var ids []string
	for _, e := range due {
		ids = append(ids, e.ID)
	}
	if want := "e1 e2 e2b"; join(ids) != want {
		t.Fatalf("due ids = %q; want %q (due order, then scheduling order)", join(ids), want)
	}
	got := due[0]
	if got.Topic != "a" || got.Type != "t" || got.IdempotencyKey != "k1" || string(got.Payload) != "p-e1" ||
		got.Headers["h"] != "e1" || !got.Time.Equal(in[1].Time) || !got.DueAt.Equal(in[1].DueAt) || got.ContentType != "text/plain" {
		t.Fatalf("due event = %+v; want %+v", got, in[1])
	}
	if page, err := s.DueEvents(ctx, b.Add(2*time.Second), herald.DuePosition{}, 1); err != nil || len(page) != 1 || page[0].ID != "e1" {
		t.Fatalf("DueEvents limit 1 = %v, %v", page, err)
	}
	// Reading on after a position: the promoter reads its next batch so.
	if page, err := s.DueEvents(ctx, b.Add(2*time.Second), due[0].After(), 10); err != nil || len(page) != 2 || page[0].ID != "e2" || page[1].ID != "e2b" {
		t.Fatalf("DueEvents after e1 = %v, %v; want e2 e2b", page, err)
	}
	if page, err := s.DueEvents(ctx, b.Add(2*time.Second), due[1].After(), 10); err != nil || len(page) != 1 || page[0].ID != "e2b" {
		t.Fatalf("DueEvents after e2 (same due time) = %v, %v; want e2b", page, err)
	}
	if page, err := s.DueEvents(ctx, b.Add(2*time.Second), due[2].After(), 10); err != nil || len(page) != 0 {
		t.Fatalf("DueEvents after the last = %v, %v; want none", page, err)
	}
	// Listing one topic, paged.
	list, err := s.ListScheduled(ctx, "a", time.Time{}, "", 2)
	if err != nil || len(list) != 2 || list[0].ID != "e1" || list[1].ID != "e2b" {
		t.Fatalf("ListScheduled page 1 = %v, %v", list, err)
	}
	list, err = s.ListScheduled(ctx, "a", list[1].DueAt, list[1].ID, 2)
	if err != nil || len(list) != 1 || list[0].ID != "e3" {
		t.Fatalf("ListScheduled page 2 = %v, %v", list, err)
	}
	// Promotion deletes; a missing ref is ignored.
	if err := s.DeleteScheduled(ctx, []herald.EventRef{{Topic: "a", ID: "e1"}, {Topic: "b", ID: "e2"}, {Topic: "b", ID: "nope"}}); err != nil {
		t.Fatalf("DeleteScheduled: %v", err)
	}
	if n, _ := s.CountScheduled(ctx); n != 2 {
		t.Fatalf("after delete: %d pending; want 2", n)
	}
	// The idempotency key is free again once its event was promoted.
	again := delayed("a", "e9", b.Add(time.Hour))
	again.IdempotencyKey = "k1"
	if res, err := s.ScheduleEvents(ctx, []herald.ScheduledEvent{again}); err != nil || res[0].Duplicate {
		t.Fatalf("reschedule after promotion = %+v, %v", res, err)
	}
	if err := s.CancelScheduled(ctx, "a", "e3"); err != nil {
		t.Fatalf("CancelScheduled: %v", err)
	}
	if err := s.CancelScheduled(ctx, "a", "e3"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("second CancelScheduled = %v; want CodeNotFound", err)
	}
	if err := s.CancelScheduled(ctx, "b", "e2b"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("cancel in the wrong topic = %v; want CodeNotFound", err)
	}
	if due, err := s.DueEvents(ctx, b.Add(time.Minute), herald.DuePosition{}, 10); err != nil || len(due) != 1 || due[0].ID != "e2b" {
		t.Fatalf("due after cancel = %v, %v", due, err)
	}
	// All or none: an invalid event stores nothing.
	bad := delayed("a", "has space", b)
	if _, err := s.ScheduleEvents(ctx, []herald.ScheduledEvent{delayed("a", "ok", b), bad}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("invalid event = %v; want CodeInvalid", err)
	}
	if err := s.CancelScheduled(ctx, "a", "ok"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("an event of a refused call was stored: %v", err)
	}
}

// runPromoteInAppend: an Append of events with Delayed set removes them
// from the delayed set in its transaction and appends only those still
// pending, so a promotion repeated (a second promoter, a retry) or one
// racing a cancel appends nothing: exactly once even without a dedup
// window.
func runPromoteInAppend(t *testing.T, st herald.Store) {
	ctx := t.Context()
	s := st.(herald.TimeStore)
	tp := topic("promoted")
	tp.DedupWindow = 0 // no dedup by id to hide a second append
	putTopic(t, st, tp)
	b := base()
	if _, err := s.ScheduleEvents(ctx, []herald.ScheduledEvent{
		delayed("promoted", "d1", b), delayed("promoted", "d2", b), delayed("promoted", "d3", b),
	}); err != nil {
		t.Fatalf("ScheduleEvents: %v", err)
	}
	if err := s.CancelScheduled(ctx, "promoted", "d3"); err != nil {
		t.Fatalf("CancelScheduled: %v", err)
	}
	promoted := func(ids ...string) []*herald.Event {
		var evs []*herald.Event
		for _, id := range ids {
			evs = append(evs, &herald.Event{Topic: "promoted", ID: id, Payload: []byte("p-" + id), Time: b, Delayed: true})
		}
		return evs
	}
	res, err := st.Append(ctx, promoted("d1", "d2", "d3"))
	if err != nil {
		t.Fatalf("Append promoted: %v", err)
	}
	if res[0].Duplicate || res[0].Seq != 1 || res[1].Duplicate || res[1].Seq != 2 {
		t.Fatalf("promoted results = %+v; want seqs 1 and 2", res)
	}
	if !res[2].Duplicate || res[2].Seq != 0 || res[2].ID != "d3" || res[2].Err != nil {
		t.Fatalf("cancelled event's result = %+v; want a Duplicate with seq 0", res[2])
	}
	if n, err := s.CountScheduled(ctx); err != nil || n != 0 {
		t.Fatalf("after promotion %d pending, %v; want 0", n, err)
	}
	// Promoted again (a second promoter, a retry): nothing is appended.
	res, err = st.Append(ctx, promoted("d2", "d1"))
	if err != nil || !res[0].Duplicate || !res[1].Duplicate || res[0].Seq != 0 {
		t.Fatalf("second promotion = %+v, %v; want duplicates", res, err)
	}
	evs, err := st.ReadEvents(ctx, "promoted", 0, 10)
	if err != nil || len(evs) != 2 || evs[0].ID != "d1" || evs[1].ID != "d2" {
		t.Fatalf("log = %v, %v; want d1 d2 once each", evs, err)
	}
	// An event not marked Delayed is appended as usual beside them.
	if res, err := st.Append(ctx, []*herald.Event{{Topic: "promoted", ID: "d1", Payload: []byte("p-d1"), Time: b}}); err != nil || res[0].Duplicate || res[0].Seq != 3 {
		t.Fatalf("plain append = %+v, %v", res, err)
	}
}

func join(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += " "
		}
		out += s
	}
	return out
}

func runSchedules(t *testing.T, s herald.TimeStore) {
	ctx := t.Context()
	b := base()
	sch := herald.Schedule{Name: "nightly", Cron: "0 3 * * *", TimeZone: "Europe/Paris",
		Event:   herald.ScheduleEvent{Topic: "jobs", Type: "run", Key: "k", ContentType: "application/json", Headers: map[string]string{"x": "1"}, Payload: []byte(`{"a":1}`)},
		StartAt: b, EndAt: b.Add(48 * time.Hour), Missed: herald.MissedAll, MaxMissed: 5, CreatedAt: b, UpdatedAt: b}
	got, created, err := s.PutSchedule(ctx, sch)
	if err != nil || !created {
		t.Fatalf("PutSchedule = %v, %v", created, err)
	}
	if got.Name != "nightly" || got.Cron != sch.Cron || got.TimeZone != sch.TimeZone || got.Event.Topic != "jobs" ||
		string(got.Event.Payload) != `{"a":1}` || got.Event.Headers["x"] != "1" || !got.StartAt.Equal(b) ||
		!got.EndAt.Equal(sch.EndAt) || got.Missed != "all" || got.MaxMissed != 5 || got.Paused || !got.LastTick.IsZero() {
		t.Fatalf("stored schedule = %+v", got)
	}
	if err := s.AdvanceSchedule(ctx, "nightly", b.Add(time.Hour)); err != nil {
		t.Fatalf("AdvanceSchedule: %v", err)
	}
	if err := s.AdvanceSchedule(ctx, "nightly", b); err != nil {
		t.Fatalf("AdvanceSchedule back: %v", err)
	}
	// An update replaces the definition and keeps the last tick and the creation time.
	upd := herald.Schedule{Name: "nightly", Every: time.Minute, Event: herald.ScheduleEvent{Topic: "jobs2"},
		Missed: herald.MissedSkip, CreatedAt: b.Add(time.Hour), UpdatedAt: b.Add(time.Hour)}
	got, created, err = s.PutSchedule(ctx, upd)
	if err != nil || created {
		t.Fatalf("PutSchedule update = %v, %v", created, err)
	}
	if got.Cron != "" || got.Every != time.Minute || got.Event.Topic != "jobs2" || !got.LastTick.Equal(b.Add(time.Hour)) ||
		!got.CreatedAt.Equal(b) || !got.UpdatedAt.Equal(b.Add(time.Hour)) || !got.StartAt.IsZero() {
		t.Fatalf("updated schedule = %+v (the last tick must not move back, the creation time stays)", got)
	}
	if got, err = s.SetSchedulePaused(ctx, "nightly", true, b.Add(2*time.Hour)); err != nil || !got.Paused {
		t.Fatalf("pause = %+v, %v", got, err)
	}
	if _, _, err := s.PutSchedule(ctx, herald.Schedule{Name: "alpha", Every: time.Second, Event: herald.ScheduleEvent{Topic: "x"}, CreatedAt: b, UpdatedAt: b}); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListSchedules(ctx, "", 10)
	if err != nil || len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "nightly" || !list[1].Paused {
		t.Fatalf("ListSchedules = %+v, %v", list, err)
	}
	if list, err = s.ListSchedules(ctx, "alpha", 10); err != nil || len(list) != 1 {
		t.Fatalf("ListSchedules after alpha = %+v, %v", list, err)
	}
	if err := s.DeleteSchedule(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"get":     func() error { _, err := s.GetSchedule(ctx, "nightly"); return err }(),
		"delete":  s.DeleteSchedule(ctx, "nightly"),
		"advance": s.AdvanceSchedule(ctx, "nightly", b),
		"pause":   func() error { _, err := s.SetSchedulePaused(ctx, "nightly", false, b); return err }(),
	} {
		if !herald.IsCode(err, herald.CodeNotFound) {
			t.Errorf("%s of a deleted schedule = %v; want CodeNotFound", name, err)
		}
	}
}

func runNamedLeases(t *testing.T, s herald.TimeStore) {
	ctx := t.Context()
	b := base()
	held := func(node string, now time.Time) bool {
		t.Helper()
		ok, err := s.AcquireNamedLease(ctx, "promote", node, now, 5*time.Second)
		if err != nil {
			t.Fatalf("AcquireNamedLease(%s): %v", node, err)
		}
		return ok
	}
	if !held("n1", b) {
		t.Fatal("n1 did not get a free lease")
	}
	if held("n2", b.Add(time.Second)) {
		t.Fatal("n2 got a lease n1 holds")
	}
	if !held("n1", b.Add(4*time.Second)) {
		t.Fatal("n1 could not renew")
	}
	if held("n2", b.Add(8*time.Second)) {
		t.Fatal("n2 got the lease before the renewal expired")
	}
	if !held("n2", b.Add(9*time.Second)) {
		t.Fatal("n2 did not get an expired lease")
	}
	if err := s.ReleaseNamedLease(ctx, "promote", "n1"); err != nil {
		t.Fatal(err)
	}
	if held("n1", b.Add(10*time.Second)) {
		t.Fatal("a release by a node that does not hold the lease freed it")
	}
	if err := s.ReleaseNamedLease(ctx, "promote", "n2"); err != nil {
		t.Fatal(err)
	}
	if !held("n1", b.Add(10*time.Second)) {
		t.Fatal("n1 did not get a released lease")
	}
}
