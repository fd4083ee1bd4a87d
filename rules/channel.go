package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/filter"
)

// Channel names.
const (
	ChannelRule = "rule"
	ChannelView = "view"
)

// Publisher commits a batch's state with the events it emits, in one
// transaction (engine.Publisher implements it; see its CommitState).
type Publisher interface {
	CommitState(ctx context.Context, p engine.PublishParams, b herald.StateBatch) ([]herald.AppendResult, error)
}

// Decoder renders a payload as JSON: protobuf through its topic's schema
// (schema.Registry implements it).
type Decoder interface {
	JSON(ctx context.Context, topic string, payload []byte, contentType string) ([]byte, error)
}

// Deps are what rules and views run on. Decoder may be nil (payloads are
// then read as JSON only); Logger and Registry may be nil.
type Deps struct {
	State     herald.StateStore
	Publisher Publisher
	Decoder   Decoder
	Logger    *slog.Logger
	Registry  prometheus.Registerer
}

// maxCachedKeys bounds the keys a running rule keeps decoded in memory;
// past it arbitrary keys leave the cache (the store has every key).
const maxCachedKeys = 200000

// batchEvents is how many events a rule takes in one batch: one
// transaction of state per batch.
const batchEvents = 1000

type metrics struct {
	events  *prometheus.CounterVec
	emitted prometheus.Counter
	batches *prometheus.HistogramVec
	keys    *prometheus.GaugeVec
}

// Channel runs rules or views: the "rule" or "view" channel of the
// engine. Only Herald's own resources use it (ValidateParams.Internal).
type Channel struct {
	name string
	deps Deps
	m    *metrics
}

// NewChannels returns the rule channel and the view channel, sharing
// their metrics.
func NewChannels(deps Deps) (*Channel, *Channel) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_rule_events_total",
			Help: "Input events rules and views read, by kind (rule, view) and result (applied, duplicate: applied before a crash or retry, skipped: filtered out or without a key or value, refused: a new key past max_keys).",
		}, []string{"kind", "result"}),
		emitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_rule_emitted_total",
			Help: "Events rules emitted, each committed with the state that emitted it.",
		}),
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_rule_batch_duration_seconds",
			Help:    "Time to apply one batch of input events, state commit included, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"kind"}),
	}
	m.keys = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "herald_rule_state_keys",
		Help: "Keys the rules and views running on this node hold in their state, by kind (rule, view); each is bounded by its max_keys.",
	}, []string{"kind"})
	if deps.Registry != nil {
		deps.Registry.MustRegister(m.events, m.emitted, m.batches, m.keys)
	}
	return &Channel{name: ChannelRule, deps: deps, m: m}, &Channel{name: ChannelView, deps: deps, m: m}
}

var _ channel.Channel = (*Channel)(nil)

// Name is "rule" or "view".
func (c *Channel) Name() string { return c.name }

// Validate checks a rule's or view's definition; only Herald's own rule
// and view endpoints may write one.
func (c *Channel) Validate(_ context.Context, p channel.ValidateParams) (json.RawMessage, error) {
	if !p.Internal {
		return nil, herald.FieldErrorf("channel", "the %s channel is Herald's own: use /v1/%ss", c.name, c.name)
	}
	var v any
	var err error
	if c.name == ChannelRule {
		var prg *Program
		if prg, err = ParseSpec(p.Config); err == nil {
			v = prg.Spec()
		}
	} else {
		var prg *ViewProgram
		if prg, err = ParseViewSpec(p.Config); err == nil {
			v = prg.Spec()
		}
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// Public returns the config: a definition holds no secret.
func (c *Channel) Public(config json.RawMessage) json.RawMessage { return config }

// Destination is the subscription's own: rules share no remote server.
func (c *Channel) Destination(json.RawMessage) string { return "" }

// Owner is the StateStore owner of a rule's or a view's state.
func Owner(kind, name string) string { return kind + ":" + name }

// Open starts running the rule or view on this node: the sink reads its
// state from the store as keys come, so a node that takes the lease
// continues where the last one committed.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	s := &sink{c: c, sub: sub, cache: map[string]*keyState{}, log: c.deps.Logger.With("subscription_id", sub.ID)}
	var err error
	if c.name == ChannelRule {
		if s.rule, err = ParseSpec(sub.Config); err != nil {
			return nil, err
		}
		s.name, s.part = splitPartition(sub.ID)
		s.parts = s.rule.Partitions()
		if s.part >= s.parts {
			return nil, fmt.Errorf("subscription %s: partition %d of a rule with %d", sub.ID, s.part, s.parts)
		}
		s.filter, s.keyPath, s.agg = s.rule.filter, s.rule.spec.Key, s.rule.spec.Aggregate
		s.single = !herald.IsPattern(s.rule.spec.Input)
		// Each partition holds its share of the keys.
		s.maxKeys = (s.rule.spec.MaxKeys + int64(s.parts) - 1) / int64(s.parts)
		s.owner = PartitionOwner(s.name, s.part)
	} else {
		if s.view, err = ParseViewSpec(sub.Config); err != nil {
			return nil, err
		}
		s.name = viewName(sub.ID)
		s.filter, s.keyPath, s.agg = s.view.filter, s.view.spec.Key, *s.view.spec.Aggregate
		s.single = true
		s.maxKeys = s.view.spec.MaxKeys
		s.owner, s.parts = Owner(c.name, s.name), 1
	}
	return s, nil
}

// Subscription ids of rules and views: the name with a prefix, so the
// API finds a rule's subscription by its name.
const (
	RulePrefix = "rule_"
	ViewPrefix = "view_"
)

func ruleName(subID string) string { return subID[len(RulePrefix):] }
func viewName(subID string) string { return subID[len(ViewPrefix):] }

// sink applies one rule's or view's input, one batch at a time.
type sink struct {
	c       *Channel
	sub     *herald.Subscription
	name    string
	owner   string
	rule    *Program
	view    *ViewProgram
	filter  *filter.Expr
	keyPath string
	agg     Aggregate
	single  bool // one input topic: the batch's newest seq is the position
	log     *slog.Logger
	// part of parts: a partitioned rule's sink applies the events of its
	// keys only (partitionOf).
	part, parts int

	mu    sync.Mutex
	cache map[string]*keyState
	// keys is how many keys the store holds for this rule (counted at the
	// first batch, again after a failed one); maxKeys bounds it.
	keys      int64
	keysKnown bool
	maxKeys   int64

	vars, evVars, winVars map[string]any // CEL variables, reused per event
}

var _ channel.ProgressBatcher = (*sink)(nil)

func (s *sink) BatchLimits() channel.BatchLimits {
	return channel.BatchLimits{MaxEvents: batchEvents}
}

func (s *sink) Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	return s.DeliverBatch(ctx, []channel.Delivery{{Event: ev, Attempt: attempt}})[0]
}

// Close takes the rule's keys out of the gauge: another node (or the
// next Open) counts them.
func (s *sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setKeys(0)
	s.keysKnown = false
	return nil
}

func (s *sink) kind() string { return s.c.name }

// item is one input event of a batch, decoded and keyed.
type item struct {
	ev   *herald.Event
	data any
	key  string
}

// errKeyLimit refuses a new key to a rule or view that holds its limit.
var errKeyLimit = errors.New("key limit reached")

// DeliverBatch is DeliverBatchAt without a subscription's progress: the
// state and the emitted events commit together, the cursors are the
// engine's.
func (s *sink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	return s.DeliverBatchAt(ctx, batch, channel.Progress{})
}

// DeliverBatchAt applies the events in order and commits, in one
// transaction, the state of every key they changed, the events the rule
// emits and the subscription's progress (its cursors, under its lease
// epoch). The keys the batch needs and the cache lacks are read from the
// store in one query first. A failure fails the whole batch, and the keys
// it touched leave the cache: nothing of it counts.
func (s *sink) DeliverBatchAt(ctx context.Context, batch []channel.Delivery, progress channel.Progress) []herald.DeliveryResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	results := make([]herald.DeliveryResult, len(batch))
	touched := map[string]*keyState{}
	var emits []*herald.Event
	var position int64
	var applied, dups, skipped, refused int
	fail := func(err error) []herald.DeliveryResult {
		for k := range touched {
			delete(s.cache, k)
		}
		s.keysKnown = false // count them again: new keys of this batch are not stored
		s.log.Warn("rule batch failed; it will be retried", "kind", s.kind(), "name", s.name, "err", err)
		for i := range results {
			results[i] = herald.DeliveryResult{Outcome: herald.Failed, Err: s.kind() + "-state-failure", Detail: err.Error()}
		}
		return results
	}
	if !s.keysKnown {
		n, err := s.c.deps.State.CountState(ctx, s.owner)
		if err != nil {
			return fail(fmt.Errorf("count keys: %w", err))
		}
		s.setKeys(n)
		s.keysKnown = true
	}
	items := make([]item, 0, len(batch))
	var missing []string
	wanted := map[string]bool{}
	for _, d := range batch {
		ev := d.Event
		if s.single && ev.Seq > position {
			position = ev.Seq
		}
		data, ok := s.decode(ctx, ev)
		if s.filter != nil {
			if !s.filter.Test(&filter.Event{Topic: ev.Topic, Seq: ev.Seq, ID: ev.ID, Type: ev.Type, Key: ev.Key, Time: ev.Time, Data: data}) {
				skipped++
				continue
			}
		}
		key, ok := s.keyOf(ev, data, ok)
		if !ok || s.parts > 1 && partitionOf(key, s.parts) != s.part {
			skipped++ // no key, or another partition's
			continue
		}
		items = append(items, item{ev: ev, data: data, key: key})
		if _, cached := s.cache[key]; !cached && !wanted[key] {
			wanted[key] = true
			missing = append(missing, key)
		}
	}
	stored := map[string]*keyState{} // read from the store for this batch
	if len(missing) > 0 {
		entries, err := s.c.deps.State.GetStates(ctx, s.owner, missing)
		if err != nil {
			return fail(fmt.Errorf("read state: %w", err))
		}
		for _, e := range entries {
			st := &keyState{}
			if err := json.Unmarshal(e.Value, st); err != nil {
				return fail(fmt.Errorf("decode the state of key %q: %w", e.Key, err))
			}
			if st.Seqs == nil {
				st.Seqs = map[string]int64{}
			}
			stored[e.Key] = st
		}
	}
	for _, it := range items {
		ev := it.ev
		st, err := s.load(it.key, touched, stored)
		if err != nil {
			refused++
			continue
		}
		if st.Seqs[ev.Topic] >= ev.Seq {
			dups++
			continue
		}
		st.Seqs[ev.Topic] = ev.Seq
		touched[it.key] = st
		applied++
		if s.view != nil {
			s.applyView(st, ev, it.data)
			continue
		}
		if e := s.applyRule(st, it.key, ev, it.data); e != nil {
			emits = append(emits, e)
		}
	}
	if len(touched) > 0 || position > 0 || len(emits) > 0 || len(progress.Cursors) > 0 {
		entries := make([]herald.StateEntry, 0, len(touched))
		for k, st := range touched {
			raw, err := json.Marshal(st)
			if err != nil {
				return fail(err)
			}
			if len(raw) > herald.MaxStateValueBytes {
				return fail(fmt.Errorf("the state of key %q is %d bytes; the limit is %d", k, len(raw), herald.MaxStateValueBytes))
			}
			var seq int64
			for _, q := range st.Seqs {
				seq = max(seq, q)
			}
			entries = append(entries, herald.StateEntry{Key: k, Value: raw, Seq: seq})
		}
		b := herald.StateBatch{Owner: s.owner, Entries: entries, Position: position,
			SubscriptionID: progress.SubscriptionID, Epoch: progress.Epoch, Cursors: progress.Cursors}
		if _, err := s.c.deps.Publisher.CommitState(ctx, engine.PublishParams{Events: emits, Source: "rule"}, b); err != nil {
			return fail(fmt.Errorf("commit state: %w", err))
		}
	}
	for k, st := range touched {
		s.cache[k] = st
	}
	for k := range s.cache { // past the bound, forget arbitrary keys: the store has them
		if len(s.cache) <= maxCachedKeys {
			break
		}
		delete(s.cache, k)
	}
	if refused > 0 {
		s.log.Warn("events for new keys refused: the key limit is reached", "kind", s.kind(), "name", s.name,
			"events", refused, "max_keys", s.maxKeys)
	}
	s.c.m.events.WithLabelValues(s.kind(), "applied").Add(float64(applied))
	s.c.m.events.WithLabelValues(s.kind(), "duplicate").Add(float64(dups))
	s.c.m.events.WithLabelValues(s.kind(), "skipped").Add(float64(skipped))
	s.c.m.events.WithLabelValues(s.kind(), "refused").Add(float64(refused))
	s.c.m.emitted.Add(float64(len(emits)))
	s.c.m.batches.WithLabelValues(s.kind()).Observe(time.Since(start).Seconds())
	for i := range results {
		results[i] = herald.DeliveryResult{Outcome: herald.Delivered}
	}
	return results
}

// load returns the key's state: changed earlier in the batch, cached, read
// from the store for this batch, or a fresh one for a new key (errKeyLimit
// when the rule holds its limit of keys). The caller may change it: a
// failed batch drops the keys it touched from the cache.
func (s *sink) load(key string, touched, stored map[string]*keyState) (*keyState, error) {
	if st, ok := touched[key]; ok {
		return st, nil
	}
	if st, ok := s.cache[key]; ok {
		return st, nil
	}
	if st, ok := stored[key]; ok {
		return st, nil
	}
	if s.keys >= s.maxKeys {
		return nil, errKeyLimit
	}
	s.setKeys(s.keys + 1)
	st := &keyState{Seqs: map[string]int64{}}
	stored[key] = st // a second event of the key in this batch finds it
	return st, nil
}

// setKeys records how many keys the rule holds, in the gauge too.
func (s *sink) setKeys(n int64) {
	s.c.m.keys.WithLabelValues(s.kind()).Add(float64(n - s.keys))
	s.keys = n
}

// decode reads the payload as JSON (protobuf through its schema).
func (s *sink) decode(ctx context.Context, ev *herald.Event) (any, bool) {
	raw := ev.Payload
	if s.c.deps.Decoder != nil {
		if js, err := s.c.deps.Decoder.JSON(ctx, ev.Topic, ev.Payload, ev.ContentType); err == nil {
			raw = js
		}
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, false
	}
	return v, true
}

func (s *sink) keyOf(ev *herald.Event, data any, decoded bool) (string, bool) {
	if s.view != nil && (ev.Type == TypeViewSet || ev.Type == TypeViewDelete) {
		return ev.Key, ev.Key != ""
	}
	if s.keyPath == "" {
		return ev.Key, ev.Key != ""
	}
	if !decoded {
		return "", false
	}
	v, ok := field(data, s.keyPath)
	if !ok {
		return "", false
	}
	k := keyString(v)
	return k, k != "" && len(k) <= herald.MaxEventKeyLen
}

// sampleOf is what the event contributes to the aggregate.
func (s *sink) sampleOf(ev *herald.Event, data any) sample {
	v, ok := field(data, s.agg.Field)
	if !ok {
		if s.agg.Field == "" && s.agg.Op == "latest" {
			return sample{have: true, l: json.RawMessage(ev.Payload), d: string(ev.Payload)}
		}
		return sample{}
	}
	out := sample{have: true}
	out.v, out.ok = toNumber(v)
	if s.agg.Op != "latest" && s.agg.Op != "distinct_count" {
		return out // the number is all the other ops keep
	}
	raw, _ := json.Marshal(v)
	out.l, out.d = raw, string(raw)
	if str, isStr := v.(string); isStr {
		out.d = str
	}
	return out
}

func (s *sink) applyView(st *keyState, ev *herald.Event, data any) {
	switch ev.Type {
	case TypeViewSet:
		raw := json.RawMessage(ev.Payload)
		if !json.Valid(raw) {
			raw, _ = json.Marshal(string(ev.Payload))
		}
		st.Acc.set(s.agg.Op, raw)
		st.Deleted = false
	case TypeViewDelete:
		st.Acc, st.Deleted = acc{}, true
	default:
		if st.Deleted {
			st.Acc, st.Deleted = acc{}, false
		}
		smp := s.sampleOf(ev, data)
		if s.agg.Op != "count" && !smp.have {
			return
		}
		st.Acc.add(smp)
	}
	st.Last = ev.Time.UnixNano()
}

// eventTime is the event's time: the rule's time field when it has one.
func (s *sink) eventTime(ev *herald.Event, data any) time.Time {
	if s.rule.spec.Time != "" {
		if v, ok := field(data, s.rule.spec.Time); ok {
			if t, ok := timeOf(v); ok {
				return t
			}
		}
	}
	return ev.Time
}

// applyRule adds the event to the key's window and returns the event to
// emit when the condition became true with it.
func (s *sink) applyRule(st *keyState, key string, ev *herald.Event, data any) *herald.Event {
	spec := s.rule.spec
	t := s.eventTime(ev, data)
	tn := t.UnixNano()
	smp := s.sampleOf(ev, data)
	var a acc
	var wStart, wEnd time.Time
	switch w := spec.Window; {
	case w == nil:
		st.Acc.add(smp)
		a = st.Acc
		wEnd = t
	case w.Kind == WindowSliding:
		// Entries stay in time order; the window ends at this event.
		i, _ := slices.BinarySearchFunc(st.Entries, tn, func(e entry, t int64) int { return cmpInt(e.T, t+1) })
		st.Entries = slices.Insert(st.Entries, i, entry{T: tn, V: smp.v, N: smp.ok, D: smp.d, L: smp.l})
		newest := st.Entries[len(st.Entries)-1].T
		cut := 0
		for cut < len(st.Entries) && st.Entries[cut].T <= newest-int64(w.size) {
			cut++
		}
		if over := len(st.Entries) - cut - MaxEntriesPerKey; over > 0 {
			cut += over
		}
		st.Entries = st.Entries[cut:]
		wStart, wEnd = t.Add(-w.size), t
		for _, e := range st.Entries {
			if e.T > tn-int64(w.size) && e.T <= tn {
				a.add(sample{v: e.V, ok: e.N, d: e.D, l: e.L, have: e.L != nil})
			}
		}
	case w.Kind == WindowTumbling:
		ws := tn - mod(tn, int64(w.size))
		if ws < st.Start {
			return nil // late: its window has closed
		}
		if ws != st.Start {
			st.Start, st.Acc, st.Fired = ws, acc{}, false
		}
		st.Acc.add(smp)
		a = st.Acc
		wStart, wEnd = time.Unix(0, ws).UTC(), time.Unix(0, ws+int64(w.size)).UTC()
	case w.Kind == WindowSession:
		if st.Last == 0 || tn-st.Last >= int64(w.gap) {
			st.Start, st.Acc, st.Fired = tn, acc{}, false
		}
		st.Acc.add(smp)
		a = st.Acc
		wStart, wEnd = time.Unix(0, st.Start).UTC(), time.Unix(0, max(st.Last, tn)+int64(w.gap)).UTC()
	}
	st.Last = max(st.Last, tn)
	value := a.value(spec.Aggregate.Op)
	// The variables live in maps the sink reuses (it applies one event at
	// a time, under its lock): no allocation per event for them.
	if s.vars == nil {
		s.vars, s.evVars, s.winVars = map[string]any{}, map[string]any{}, map[string]any{}
	}
	vars := s.vars
	vars["event"] = setEventVars(s.evVars, ev, data)
	vars["value"], vars["count"], vars["key"] = value, a.Count, key
	s.winVars["start"], s.winVars["end"] = wStart, wEnd
	vars["window"] = s.winVars
	hit, err := s.rule.when.test(vars)
	if err != nil {
		s.log.Debug("rule condition failed", "name", s.name, "err", err)
		hit = false
	}
	fire := hit && !st.Fired
	st.Fired = hit
	if !fire {
		return nil
	}
	payload := map[string]any{
		"rule":   s.name,
		"key":    key,
		"value":  value,
		"count":  a.Count,
		"window": map[string]any{"start": wStart.UTC().Format(time.RFC3339Nano), "end": wEnd.UTC().Format(time.RFC3339Nano)},
		"event":  map[string]any{"topic": ev.Topic, "seq": ev.Seq, "id": ev.ID},
	}
	if spec.Key != "" {
		if _, taken := payload[spec.Key]; !taken {
			payload[spec.Key] = key
		}
	}
	for name, e := range s.rule.fields {
		v, err := e.eval(vars)
		if err != nil {
			s.log.Debug("rule field failed", "name", s.name, "field", name, "err", err)
			continue
		}
		payload[name] = v
	}
	body, err := json.Marshal(payload)
	if err != nil {
		s.log.Warn("rule result cannot be encoded", "name", s.name, "err", err)
		return nil
	}
	typ := spec.Emit.Type
	if typ == "" {
		typ = "rule." + s.name
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%s\x00%d", s.name, key, wStart.UnixNano(), ev.Topic, ev.Seq))
	return &herald.Event{
		Topic:          spec.Emit.Topic,
		Type:           typ,
		Key:            key,
		IdempotencyKey: "rule-" + hex.EncodeToString(sum[:20]),
		ContentType:    "application/json",
		Payload:        body,
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// setEventVars fills m with the event as CEL sees it.
func setEventVars(m map[string]any, ev *herald.Event, data any) map[string]any {
	m["topic"], m["seq"], m["id"], m["type"], m["key"] = ev.Topic, ev.Seq, ev.ID, ev.Type, ev.Key
	m["time"], m["data"] = ev.Time, data
	return m
}
