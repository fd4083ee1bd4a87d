package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
)

// PublisherConfig tunes the publisher. The zero value refuses events for
// topics that do not exist.
type PublisherConfig struct {
	// AutoCreateTopics makes a publish to an unknown topic create it with
	// the default settings (never a reserved "herald." topic).
	AutoCreateTopics bool
	// Usage, when set, counts the events committed (duplicates and
	// System ones not) for PublishParams.Tenant (usage.Meter implements
	// it).
	Usage interface {
		Published(tenant string, events, bytes int)
	}
	// Tenants, when set, holds each tenant's publishes to its
	// limits.publish_rate (TenantLimits implements it): AllowPublish
	// returns a CodeRateLimited error when the events do not fit now;
	// WaitPublish waits until they do (PublishParams.WaitRate).
	Tenants interface {
		AllowPublish(tenant string, n int) error
		WaitPublish(ctx context.Context, tenant string, n int) error
	}
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Delayed keeps events published with a due time until it comes (the
	// store's herald.TimeStore); nil refuses delayed publishes.
	Delayed DelayedStore
	// OnDelayed is told the due times of events just scheduled, so the
	// promoter wakes for one due sooner than it planned. It must not block.
	OnDelayed func(due time.Time)
	// Schemas validates payloads against their topics' schemas
	// (schema.Registry); nil checks none.
	Schemas SchemaValidator
}

// SchemaValidator checks a payload against its topic's schema: nil when it
// conforms or the topic has none, else a *herald.Error (CodeInvalid)
// naming the first violation.
type SchemaValidator interface {
	Validate(ctx context.Context, topic string, payload []byte, contentType string) error
}

// DelayedStore is where the Publisher keeps events until their due time.
type DelayedStore interface {
	ScheduleEvents(ctx context.Context, events []herald.ScheduledEvent) ([]herald.AppendResult, error)
}

// MaxDelay bounds how far ahead an event may be scheduled.
const MaxDelay = 366 * 24 * time.Hour

// PublishParams is one call to Publish.
type PublishParams struct {
	// Events to commit, all or none. Each names its Topic and carries its
	// Payload, ContentType and whatever metadata the caller has (Type,
	// Key, IdempotencyKey, Headers, ID). A zero Time is set to now; an
	// empty ID is assigned by the store at commit.
	Events []*herald.Event
	// System lets the caller write Herald's reserved "herald." topics.
	// Only Herald's own parts set it.
	System bool
	// Source names who publishes, for the metrics: "api", "source",
	// "rule", "schedule", "archive"... A small fixed set: it is a label.
	Source string
	// Batch says the events came as a list (a batch publish): errors name
	// the event, as "events[0].key", even when there is one.
	Batch bool
	// DeliverAt, when set, has one due time per event: an event whose due
	// time is after now is committed to the delayed set instead of its
	// topic's log, gets its id now, and joins the log at the due time
	// (its result has Seq 0). A zero or past due time publishes at once.
	DeliverAt []time.Time
	// Tenant is the tenant of the caller that publishes ("" for the
	// platform's own), whose usage the events count in.
	Tenant string
	// WaitRate says the caller can hold its events (a source, whose
	// messages wait in their service): when the tenant's publish rate is
	// used up, Publish waits until the events fit, or ctx ends, instead of
	// failing with CodeRateLimited.
	WaitRate bool
}

// Publisher is the one path by which anything becomes an event: the HTTP
// API, sources, rules, the scheduler, archive replays. Every rule of
// publishing lives here once: reserved topics, auto-create, the metadata
// limits, the topic's payload limit, the topic's schema, the time stamp,
// and the publish metrics. Authorization is the caller's (it knows the principal).
//
// Publish is safe for concurrent use; the Publisher owns no goroutine.
type Publisher struct {
	topics   TopicSource
	appender Appender
	cfg      PublisherConfig
	log      *slog.Logger

	published  *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	delayed    *prometheus.CounterVec
}

// TopicSource gives a topic's settings, creating a topic when asked
// (Topics implements it, with its cache).
type TopicSource interface {
	Get(ctx context.Context, name string) (herald.Topic, error)
	Put(ctx context.Context, t herald.Topic) (herald.Topic, bool, error)
}

// NewPublisher returns a publisher committing through appender (the
// Committer). logger and reg may be nil.
func NewPublisher(topics TopicSource, appender Appender, cfg PublisherConfig, logger *slog.Logger, reg prometheus.Registerer) *Publisher {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{
		topics: topics, appender: appender, cfg: cfg, log: logger,
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_events_published_total",
			Help: "Events committed (duplicates excluded), by who published them (api, source, rule, schedule...).",
		}, []string{"source"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_events_duplicate_total",
			Help: "Publishes answered with an earlier event (a repeated idempotency key or event id), by who published them.",
		}, []string{"source"}),
		delayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_events_delayed_total",
			Help: "Events accepted with a due time ahead, kept until it comes (pending ones repeated by id or idempotency key included), by who published them.",
		}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(p.published, p.duplicates, p.delayed)
	}
	return p
}

// Publish checks the events, commits them in one transaction and returns
// one result per event, in order: its id and seq, or the earlier event's
// with Duplicate set.
//
// Errors are *herald.Error: CodeInvalid naming the field at fault (as
// "events[3].key" when there are several events), CodeTooLarge for a
// payload over its topic's max_event_bytes, CodeNotFound for an unknown
// topic (unless AutoCreateTopics), CodeConflict for an event id that names
// a different event, CodeRateLimited (with RetryAfter) when the tenant's
// publish rate is used up (unless WaitRate), CodeUnavailable when the
// committer is stopping. On an
// error nothing is stored.
func (p *Publisher) Publish(ctx context.Context, params PublishParams) ([]herald.AppendResult, error) {
	events := params.Events
	if len(events) == 0 {
		return nil, herald.FieldErrorf("events", "no events to publish")
	}
	now, err := p.check(ctx, params)
	if err != nil {
		return nil, err
	}
	if params.DeliverAt != nil {
		return p.publishDelayed(ctx, params, now)
	}
	results, err := p.append(ctx, params, events)
	if err != nil {
		return nil, err
	}
	p.count(params.Source, results)
	p.countUsage(params, results)
	return results, nil
}

// StateCommitter commits a rule's or a view's batch in one transaction
// (the Committer implements it).
type StateCommitter interface {
	CommitStateBatch(ctx context.Context, b herald.StateBatch) ([]herald.AppendResult, error)
}

// CommitState commits a rule's or a view's batch: its state and cursors
// (in b) with the events it emits (params.Events, which may be none),
// in one transaction, so that the emitted events exist exactly when the
// state that emitted them does. The events are checked as Publish checks
// them (delayed events are refused) and counted in the same metrics.
// Errors are Publish's, and the store's for the batch (CodeConflict when
// the subscription's lease has moved); on an error nothing is stored.
func (p *Publisher) CommitState(ctx context.Context, params PublishParams, b herald.StateBatch) ([]herald.AppendResult, error) {
	sc, ok := p.appender.(StateCommitter)
	if !ok {
		return nil, herald.Errorf(herald.CodeUnsupported, "this server cannot commit rule state")
	}
	if params.DeliverAt != nil {
		return nil, herald.FieldErrorf("deliver_at", "a rule's events cannot be delayed")
	}
	if len(params.Events) > 0 {
		if _, err := p.check(ctx, params); err != nil {
			return nil, err
		}
	}
	b.Emits = params.Events
	results, err := sc.CommitStateBatch(ctx, b)
	if err != nil {
		return nil, err
	}
	if len(results) > 0 {
		p.count(params.Source, results)
		p.countUsage(params, results)
	}
	return results, nil
}

// check applies the rules of publishing to the events (see Publish) and
// stamps those without a time; it returns the time stamped.
func (p *Publisher) check(ctx context.Context, params PublishParams) (time.Time, error) {
	events := params.Events
	now := p.cfg.Now().UTC()
	settings := make(map[string]herald.Topic, 1)
	for i, e := range events {
		t, ok := settings[e.Topic]
		if !ok {
			var err error
			if t, err = p.topic(ctx, e.Topic, params.System); err != nil {
				return time.Time{}, err
			}
			settings[e.Topic] = t
		}
		if err := herald.ValidateEvent(e); err != nil {
			return time.Time{}, inEvent(err, i, params.list())
		}
		if len(e.Payload) > t.MaxEventBytes {
			return time.Time{}, inEvent(&herald.Error{Code: herald.CodeTooLarge, Field: "data",
				Message: fmt.Sprintf("the payload is %d bytes; topic %q takes at most %d", len(e.Payload), e.Topic, t.MaxEventBytes)}, i, params.list())
		}
		if p.cfg.Schemas != nil {
			if err := p.cfg.Schemas.Validate(ctx, e.Topic, e.Payload, e.ContentType); err != nil {
				return time.Time{}, inEvent(err, i, params.list())
			}
		}
		if e.Time.IsZero() {
			e.Time = now
		}
	}
	if p.cfg.Tenants != nil && params.Tenant != "" && !params.System {
		var err error
		if params.WaitRate {
			err = p.cfg.Tenants.WaitPublish(ctx, params.Tenant, len(events))
		} else {
			err = p.cfg.Tenants.AllowPublish(params.Tenant, len(events))
		}
		if err != nil {
			return time.Time{}, err
		}
	}
	return now, nil
}

// countUsage counts the events stored (not duplicates or failures) in
// the publishing tenant's usage.
func (p *Publisher) countUsage(params PublishParams, results []herald.AppendResult) {
	if p.cfg.Usage == nil || params.System {
		return // Herald's own events are no one's usage
	}
	n, bytes := 0, 0
	for i, r := range results {
		if r.Err == nil && !r.Duplicate && i < len(params.Events) {
			n++
			bytes += len(params.Events[i].Payload)
		}
	}
	p.cfg.Usage.Published(params.Tenant, n, bytes)
}

// append commits events to their topics' logs and checks the results.
func (p *Publisher) append(ctx context.Context, params PublishParams, events []*herald.Event) ([]herald.AppendResult, error) {
	results, err := p.appender.Append(ctx, events)
	if err != nil {
		return nil, err
	}
	if len(results) != len(events) {
		return nil, fmt.Errorf("append of %d events returned %d results", len(events), len(results))
	}
	for i, res := range results {
		if res.Err == nil {
			continue
		}
		if he, ok := errors.AsType[*herald.Error](res.Err); ok && he.Field != "topic" {
			return nil, inEvent(he, i, params.list())
		}
		return nil, res.Err
	}
	return results, nil
}

// publishDelayed commits the events due later to the delayed set and the
// others to the log: the delayed ones first, so an error of either leaves
// nothing behind that the caller was told failed, except the delayed
// ones when the log's commit fails, which are cancelled again.
func (p *Publisher) publishDelayed(ctx context.Context, params PublishParams, now time.Time) ([]herald.AppendResult, error) {
	events := params.Events
	if len(params.DeliverAt) != len(events) {
		return nil, fmt.Errorf("publish: %d due times for %d events", len(params.DeliverAt), len(events))
	}
	results := make([]herald.AppendResult, len(events))
	var later []herald.ScheduledEvent
	var laterIdx, nowIdx []int
	var immediate []*herald.Event
	var first time.Time
	for i, e := range events {
		due := params.DeliverAt[i]
		if !due.After(now) {
			// Its due time came while the request waited (it was stamped
			// when it arrived): it joins the log now, and its time says
			// so, never a time before its due time.
			if e.Time.Before(due) {
				e.Time = now
			}
			immediate = append(immediate, e)
			nowIdx = append(nowIdx, i)
			continue
		}
		if due.Sub(now) > MaxDelay {
			return nil, inEvent(herald.FieldErrorf("deliver_at", "the due time %s is more than %s ahead", due.Format(time.RFC3339), herald.FormatDuration(MaxDelay)), i, params.list())
		}
		if p.cfg.Delayed == nil {
			return nil, herald.Errorf(herald.CodeUnsupported, "this server does not keep delayed events")
		}
		if e.ID == "" {
			e.ID = herald.NewID(now)
		}
		later = append(later, herald.ScheduledEvent{Event: *e, DueAt: due.UTC()})
		laterIdx = append(laterIdx, i)
		if first.IsZero() || due.Before(first) {
			first = due
		}
	}
	if len(later) > 0 {
		res, err := p.cfg.Delayed.ScheduleEvents(ctx, later)
		if err != nil {
			return nil, err
		}
		for j, i := range laterIdx {
			results[i] = res[j]
		}
		if p.cfg.OnDelayed != nil {
			p.cfg.OnDelayed(first)
		}
		p.delayed.WithLabelValues(sourceLabel(params.Source)).Add(float64(len(later)))
	}
	if len(immediate) > 0 {
		res, err := p.append(ctx, params, immediate)
		if err != nil {
			if c, ok := p.cfg.Delayed.(interface {
				CancelScheduled(ctx context.Context, topic, id string) error
			}); ok {
				for j, i := range laterIdx {
					if !results[i].Duplicate {
						_ = c.CancelScheduled(context.WithoutCancel(ctx), later[j].Topic, later[j].ID)
					}
				}
			}
			return nil, err
		}
		for j, i := range nowIdx {
			results[i] = res[j]
		}
		p.count(params.Source, res)
	}
	p.countUsage(params, results)
	return results, nil
}

func sourceLabel(s string) string {
	if s == "" {
		return "api"
	}
	return s
}

// count adds committed and duplicate events to the publish metrics.
func (p *Publisher) count(src string, results []herald.AppendResult) {
	source := src
	if source == "" {
		source = "api"
	}
	var stored, dups int
	for _, res := range results {
		if res.Duplicate {
			dups++
		} else {
			stored++
		}
	}
	p.published.WithLabelValues(source).Add(float64(stored))
	p.duplicates.WithLabelValues(source).Add(float64(dups))
}

// Topic returns the settings of the topic an event may be published to:
// a reserved "herald." topic only for system callers, created with the
// defaults when it is missing and AutoCreateTopics is on. Callers that
// read a body before publishing (the API) ask first, for the payload
// limit.
func (p *Publisher) Topic(ctx context.Context, name string) (herald.Topic, error) {
	return p.topic(ctx, name, false)
}

func (p *Publisher) topic(ctx context.Context, name string, system bool) (herald.Topic, error) {
	if err := herald.ValidateTopicName(name); err != nil {
		return herald.Topic{}, err
	}
	if herald.IsSystemTopic(name) && !system {
		return herald.Topic{}, herald.FieldErrorf("topic", "topic %q is reserved: names starting %q are written by Herald only", name, herald.SystemTopicPrefix)
	}
	t, err := p.topics.Get(ctx, name)
	if herald.IsCode(err, herald.CodeNotFound) && p.cfg.AutoCreateTopics && !herald.IsSystemTopic(name) {
		now := p.cfg.Now().UTC()
		t, _, err = p.topics.Put(ctx, herald.Topic{Name: name, CreatedAt: now, UpdatedAt: now}.WithDefaults())
	}
	return t, err
}

// Health reports whether events can be committed now: the committer's
// last commit error within a short window, in caller-safe words (see
// Committer.Health); nil when it can.
func (p *Publisher) Health() error {
	if h, ok := p.appender.(interface{ Health() error }); ok {
		return h.Health()
	}
	return nil
}

// list reports whether errors name the event.
func (p PublishParams) list() bool { return p.Batch || len(p.Events) > 1 }

// inEvent names the event of a list that err is about: field "id" of the
// fourth becomes "events[3].id". A single event's error stays as it is.
func inEvent(err error, i int, list bool) error {
	he, ok := errors.AsType[*herald.Error](err)
	if !ok || !list {
		return err
	}
	prefix := fmt.Sprintf("events[%d]", i)
	field := prefix
	if he.Field != "" {
		field += "." + he.Field
	}
	return &herald.Error{Code: he.Code, Field: field, Message: prefix + ": " + he.Message, Err: he.Err}
}
