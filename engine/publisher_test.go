package engine_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
)

// newPublisher returns a publisher over a real SQLite store and committer,
// with a topic "orders" that takes payloads of at most 10 bytes.
func newPublisher(t *testing.T, cfg engine.PublisherConfig) (*engine.Publisher, engine.DispatchStore, *prometheus.Registry) {
	t.Helper()
	st, err := openSQLite(t.Context(), filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	committer := engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	if err := committer.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = committer.Stop(ctx)
	})
	topics := engine.NewTopics(st, engine.TopicsConfig{})
	if _, _, err := topics.Put(t.Context(), herald.Topic{Name: "orders", MaxEventBytes: 10}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	return engine.NewPublisher(topics, committer, cfg, nil, reg), st, reg
}

func TestPublisherRules(t *testing.T) {
	t.Parallel()
	p, st, reg := newPublisher(t, engine.PublisherConfig{})
	ctx := t.Context()
	ev := func(topic, payload string) *herald.Event {
		return &herald.Event{Topic: topic, Payload: []byte(payload), ContentType: "text/plain"}
	}

	// A publish is stamped, stored and counted under its source.
	res, err := p.Publish(ctx, engine.PublishParams{Events: []*herald.Event{ev("orders", "a"), ev("orders", "b")}, Source: "rule"})
	if err != nil || len(res) != 2 || res[0].Seq != 1 || res[1].Seq != 2 {
		t.Fatalf("Publish = %+v, %v; want seqs 1 and 2", res, err)
	}
	got, err := st.ReadEvents(ctx, "orders", 0, 10)
	if err != nil || len(got) != 2 || got[0].Time.IsZero() || got[0].ID == "" {
		t.Fatalf("stored %+v, %v; want two events with times and ids", got, err)
	}
	if n := counter(t, reg, "herald_events_published_total", "rule"); n != 2 {
		t.Errorf("published{source=rule} = %v, want 2", n)
	}

	// A repeated idempotency key answers the first event and counts as a
	// duplicate.
	first := ev("orders", "c")
	first.IdempotencyKey = "k1"
	if _, err := p.Publish(ctx, engine.PublishParams{Events: []*herald.Event{first}}); err != nil {
		t.Fatal(err)
	}
	again := ev("orders", "c")
	again.IdempotencyKey = "k1"
	res, err = p.Publish(ctx, engine.PublishParams{Events: []*herald.Event{again}})
	if err != nil || !res[0].Duplicate || res[0].Seq != 3 {
		t.Fatalf("a repeat = %+v, %v; want the duplicate of seq 3", res, err)
	}
	if n := counter(t, reg, "herald_events_duplicate_total", "api"); n != 1 {
		t.Errorf("duplicate{source=api} = %v, want 1", n)
	}

	// Refusals name the field, and of several events, the event; nothing
	// of a refused call is stored.
	for _, c := range []struct {
		name   string
		params engine.PublishParams
		code   herald.Code
		field  string
	}{
		{"unknown topic", engine.PublishParams{Events: []*herald.Event{ev("nope", "x")}}, herald.CodeNotFound, ""},
		{"reserved topic", engine.PublishParams{Events: []*herald.Event{ev("herald.subscriptions", "x")}}, herald.CodeInvalid, "topic"},
		{"bad topic name", engine.PublishParams{Events: []*herald.Event{ev("a..b", "x")}}, herald.CodeInvalid, "topic"},
		{"payload over the topic's limit", engine.PublishParams{Events: []*herald.Event{ev("orders", strings.Repeat("x", 11))}}, herald.CodeTooLarge, "data"},
		{"second event's key", engine.PublishParams{Events: []*herald.Event{ev("orders", "ok"), {Topic: "orders", Key: "a\nb"}}}, herald.CodeInvalid, "events[1].key"},
		{"no events", engine.PublishParams{}, herald.CodeInvalid, "events"},
	} {
		_, err := p.Publish(ctx, c.params)
		if he, ok := err.(*herald.Error); !ok || he.Code != c.code || (c.field != "" && he.Field != c.field) {
			t.Errorf("%s: err %v, want %s with field %q", c.name, err, c.code, c.field)
		}
	}
	if head, err := st.GetTopic(ctx, "orders"); err != nil || head.HeadSeq != 3 {
		t.Errorf("orders after refusals: head %d, %v; want 3", head.HeadSeq, err)
	}

	// Herald's own parts may write its reserved topics.
	if _, _, err := st.PutTopic(ctx, herald.Topic{Name: herald.SubscriptionsTopic}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	sys := ev(herald.SubscriptionsTopic, "x")
	if _, err := p.Publish(ctx, engine.PublishParams{Events: []*herald.Event{sys}, System: true}); err != nil {
		t.Errorf("a system publish to %s: %v", herald.SubscriptionsTopic, err)
	}
}

// With auto-create on, a publish to an unknown topic creates it with the
// defaults, but never a reserved one.
func TestPublisherAutoCreates(t *testing.T) {
	t.Parallel()
	p, st, _ := newPublisher(t, engine.PublisherConfig{AutoCreateTopics: true})
	ctx := t.Context()
	if _, err := p.Publish(ctx, engine.PublishParams{Events: []*herald.Event{{Topic: "fresh.topic", Payload: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.GetTopic(ctx, "fresh.topic"); err != nil || got.HeadSeq != 1 || got.Retention != herald.DefaultRetention {
		t.Errorf("auto-created topic %+v, %v; want the defaults with one event", got, err)
	}
	if _, err := p.Publish(ctx, engine.PublishParams{Events: []*herald.Event{{Topic: "herald.other", Payload: []byte("x")}}, System: true}); !herald.IsCode(err, herald.CodeNotFound) {
		t.Errorf("a system publish to a missing reserved topic: %v, want not found (never auto-created)", err)
	}
}

// counter returns the value of the counter name{source=...}.
func counter(t *testing.T, reg *prometheus.Registry, name, source string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == source {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{source=%q}", name, source)
	return 0
}

// An event whose due time passed between its stamping (the API stamps an
// event when the request arrives) and the publish joins the log at once,
// with a time at or after its due time, never before it.
func TestPublisherDueTimePassedWhileWaiting(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Millisecond)
	p, st, _ := newPublisher(t, engine.PublisherConfig{Delayed: noDelayedStore{}, Now: func() time.Time { return now }})
	arrived, due := now.Add(-2*time.Second), now.Add(-time.Second)
	e := &herald.Event{Topic: "orders", Payload: []byte("a"), ContentType: "text/plain", Time: arrived}
	res, err := p.Publish(t.Context(), engine.PublishParams{Events: []*herald.Event{e}, DeliverAt: []time.Time{due}})
	if err != nil || len(res) != 1 || res[0].Seq != 1 {
		t.Fatalf("Publish = %+v, %v; want it in the log at once, seq 1", res, err)
	}
	got, err := st.ReadEvents(t.Context(), "orders", 0, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("log %+v, %v; want the event", got, err)
	}
	if got[0].Time.Before(due) {
		t.Errorf("the event's time is %s, before its due time %s", got[0].Time, due)
	}
}

// noDelayedStore keeps no delayed event: a test whose events are all due
// fails if one is scheduled.
type noDelayedStore struct{}

func (noDelayedStore) ScheduleEvents(context.Context, []herald.ScheduledEvent) ([]herald.AppendResult, error) {
	return nil, herald.Errorf(herald.CodeUnsupported, "no event should be scheduled")
}
