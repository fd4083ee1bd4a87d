// Package rules is Herald's stream processing: rules, which keep windowed
// aggregates per key over a topic and emit an event when a condition (a
// CEL expression) becomes true, and views, keyed tables kept up to date
// from a topic and read over HTTP.
//
// A rule or a view is a subscription whose channel is this package
// ("rule", "view"): it inherits cursors, leases, per-key order and
// at-least-once delivery from the engine. Its state lives in the store
// (herald.StateStore), one row per key, written in one transaction per
// batch together with the newest seq applied to each key, so an event the
// engine delivers again after a crash is recognized and skipped: the state
// is what it would have been without the crash. Emitted events carry a
// deterministic idempotency key (rule, key, window start, triggering
// seq), published before the state commits, so a batch replayed after a
// crash emits nothing twice.
package rules

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/filter"
)

// Limits of rules and views.
const (
	MaxNameLen = 100
	// MaxWindow bounds a window's size or a session's gap.
	MaxWindow = 7 * 24 * time.Hour
	// MaxEntriesPerKey bounds what a sliding window keeps per key: past
	// it, the oldest entries go first (the aggregate then covers the
	// newest MaxEntriesPerKey events of the window).
	MaxEntriesPerKey = 10000
	// MaxDistinctPerKey bounds the values distinct_count remembers per key
	// in a tumbling or session window (and per view key).
	MaxDistinctPerKey = 10000
	// MaxExpressionLen bounds a CEL expression.
	MaxExpressionLen = 4096
	// MaxFields bounds emit.fields.
	MaxFields = 32
	// DefaultMaxKeys is a rule's or view's bound on the keys its state
	// holds when max_keys is absent; MaxMaxKeys is the largest max_keys.
	DefaultMaxKeys = 1000000
	MaxMaxKeys     = 100000000
)

// Window kinds.
const (
	WindowSliding  = "sliding"  // any interval of Size ending at an event, by event time
	WindowTumbling = "tumbling" // aligned intervals of Size: [0, Size), [Size, 2*Size), ...
	WindowSession  = "session"  // events of a key less than Gap apart
)

// Aggregate operations.
var aggregateOps = []string{"count", "sum", "min", "max", "avg", "distinct_count", "latest"}

// Window is a rule's window.
type Window struct {
	Kind string `json:"kind"`
	Size string `json:"size,omitempty"`
	Gap  string `json:"gap,omitempty"`

	size, gap time.Duration
}

// Aggregate is what a rule or a view computes per key.
type Aggregate struct {
	Op    string `json:"op"`
	Field string `json:"field,omitempty"` // a payload field path; latest without one keeps the whole payload
}

// Emit is what a rule publishes when its condition becomes true.
type Emit struct {
	Topic string `json:"topic"`
	Type  string `json:"type,omitempty"`
	// Fields are computed members of the emitted payload: name -> CEL
	// expression, with the same variables as the condition.
	Fields map[string]string `json:"fields,omitempty"`
}

// Spec is a rule as written in PUT /v1/rules/{name}.
type Spec struct {
	Input string `json:"input"`
	// Filter selects input events: an object in the filter language of
	// subscriptions, or a string holding a CEL expression over event.
	Filter json.RawMessage `json:"filter,omitempty"`
	// Key is the payload field path events are grouped by ("wallet_id",
	// "customer.id"); empty means the event's key.
	Key string `json:"key,omitempty"`
	// Time is the payload field holding the event time (RFC 3339 or Unix
	// seconds); empty means the time Herald stamped on the event.
	Time      string    `json:"time,omitempty"`
	Window    *Window   `json:"window,omitempty"`
	Aggregate Aggregate `json:"aggregate"`
	When      string    `json:"when"`
	Emit      Emit      `json:"emit"`
	// Partitions splits the rule's keys by hash into that many parts,
	// each run under a lease of its own, so several nodes share the rule
	// (1 when 0; at most MaxPartitions). It cannot change.
	Partitions int `json:"partitions,omitempty"`
	// MaxKeys bounds the keys the state holds (DefaultMaxKeys when 0):
	// past it, events of new keys are refused (counted, logged) while
	// known keys go on.
	MaxKeys int64 `json:"max_keys,omitempty"`
}

// checkMaxKeys applies the default and checks the bound.
func checkMaxKeys(n *int64) error {
	if *n == 0 {
		*n = DefaultMaxKeys
	}
	if *n < 1 || *n > MaxMaxKeys {
		return herald.FieldErrorf("max_keys", "max_keys must be between 1 and %d, got %d", MaxMaxKeys, *n)
	}
	return nil
}

// ValidateName checks a rule or view name: 1 to MaxNameLen of
// [A-Za-z0-9_.-].
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return herald.FieldErrorf("name", "a name is 1 to %d characters", MaxNameLen)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return herald.FieldErrorf("name", "name %q: use letters, digits, '_', '-' and '.'", name)
		}
	}
	return nil
}

func parseWindowDuration(field, s string) (time.Duration, error) {
	d, err := herald.ParseDuration(s)
	if err != nil || d <= 0 || d > MaxWindow {
		return 0, herald.FieldErrorf(field, "%s must be a duration between 1ms and %s, like \"2m\", got %q", field, herald.FormatDuration(MaxWindow), s)
	}
	return d, nil
}

func (w *Window) check() error {
	switch w.Kind {
	case WindowSliding, WindowTumbling:
		if w.Gap != "" {
			return herald.FieldErrorf("window.gap", "gap is for session windows; %s windows have a size", w.Kind)
		}
		d, err := parseWindowDuration("window.size", w.Size)
		w.size = d
		return err
	case WindowSession:
		if w.Size != "" {
			return herald.FieldErrorf("window.size", "a session window has a gap, not a size")
		}
		d, err := parseWindowDuration("window.gap", w.Gap)
		w.gap = d
		return err
	}
	return herald.FieldErrorf("window.kind", "window.kind must be %q, %q or %q, got %q", WindowSliding, WindowTumbling, WindowSession, w.Kind)
}

func (a *Aggregate) check(prefix string) error {
	op := a.Op
	if op == "" {
		return herald.FieldErrorf(prefix+".op", "%s.op is required: one of %s", prefix, strings.Join(aggregateOps, ", "))
	}
	known := false
	for _, o := range aggregateOps {
		known = known || o == op
	}
	if !known {
		return herald.FieldErrorf(prefix+".op", "%s.op must be one of %s, got %q", prefix, strings.Join(aggregateOps, ", "), op)
	}
	if a.Field == "" && op != "count" && op != "latest" {
		return herald.FieldErrorf(prefix+".field", "%s %s needs a field: the payload field path to aggregate", prefix, op)
	}
	return checkPath(prefix+".field", a.Field)
}

func checkPath(field, path string) error {
	if path == "" {
		return nil
	}
	if len(path) > 200 {
		return herald.FieldErrorf(field, "%s is longer than 200 bytes", field)
	}
	for seg := range strings.SplitSeq(path, ".") {
		if seg == "" {
			return herald.FieldErrorf(field, "%s %q has an empty segment", field, path)
		}
	}
	return nil
}

// checkInput checks the input topic or pattern and the filter, and returns
// the filter for the subscription (the filter language) and the CEL one.
func checkInput(input string, raw json.RawMessage, pattern bool) (sub json.RawMessage, cel string, err error) {
	if input == "" {
		return nil, "", herald.FieldErrorf("input", "input is required: the topic to read")
	}
	if pattern {
		if err := herald.ValidatePattern(input); err != nil {
			return nil, "", herald.FieldErrorf("input", "%s", err.Error())
		}
	} else if err := herald.ValidateTopicName(input); err != nil {
		return nil, "", herald.FieldErrorf("input", "%s", err.Error())
	}
	if herald.IsSystemTopic(input) {
		return nil, "", herald.FieldErrorf("input", "input %q is a reserved topic", input)
	}
	trimmed := strings.TrimSpace(string(raw))
	switch {
	case trimmed == "" || trimmed == "null":
		return nil, "", nil
	case strings.HasPrefix(trimmed, `"`):
		if err := json.Unmarshal(raw, &cel); err != nil {
			return nil, "", herald.FieldErrorf("filter", "filter: %v", err)
		}
		return nil, cel, nil
	default:
		if _, err := filter.Parse(raw); err != nil {
			return nil, "", err
		}
		return raw, "", nil
	}
}

// Check validates the spec, applies defaults and compiles its expressions.
// Errors are CodeInvalid naming the field.
func (s *Spec) Check() (*Program, error) {
	subFilter, celFilter, err := checkInput(s.Input, s.Filter, true)
	if err != nil {
		return nil, err
	}
	if err := checkPath("key", s.Key); err != nil {
		return nil, err
	}
	if err := checkPath("time", s.Time); err != nil {
		return nil, err
	}
	if s.Window != nil {
		if err := s.Window.check(); err != nil {
			return nil, err
		}
	}
	if err := s.Aggregate.check("aggregate"); err != nil {
		return nil, err
	}
	if s.When == "" {
		return nil, herald.FieldErrorf("when", "when is required: a CEL condition, like \"value > 10000\"")
	}
	if s.Emit.Topic == "" {
		return nil, herald.FieldErrorf("emit.topic", "emit.topic is required: the topic results go to")
	}
	if err := herald.ValidateTopicName(s.Emit.Topic); err != nil || herald.IsSystemTopic(s.Emit.Topic) {
		return nil, herald.FieldErrorf("emit.topic", "emit.topic %q is not a topic callers may write", s.Emit.Topic)
	}
	if herald.MatchTopic(s.Input, s.Emit.Topic) {
		return nil, herald.FieldErrorf("emit.topic", "emit.topic %q matches the input: the rule would read its own results", s.Emit.Topic)
	}
	if len(s.Emit.Type) > 200 {
		return nil, herald.FieldErrorf("emit.type", "emit.type is longer than 200 bytes")
	}
	if len(s.Emit.Fields) > MaxFields {
		return nil, herald.FieldErrorf("emit.fields", "at most %d fields", MaxFields)
	}
	if s.Partitions < 0 || s.Partitions > MaxPartitions {
		return nil, herald.FieldErrorf("partitions", "partitions must be between 1 and %d, got %d", MaxPartitions, s.Partitions)
	}
	if s.Partitions == 1 {
		s.Partitions = 0 // one is the default: the same rule either way
	}
	if err := checkMaxKeys(&s.MaxKeys); err != nil {
		return nil, err
	}
	p := &Program{spec: s, subFilter: subFilter}
	if celFilter != "" {
		if p.filter, err = filter.CompileCEL("filter", celFilter); err != nil {
			return nil, err
		}
	}
	if p.when, err = compile("when", s.When, ruleEnv); err != nil {
		return nil, err
	}
	p.fields = map[string]*expr{}
	for name, src := range s.Emit.Fields {
		if name == "" || len(name) > 100 {
			return nil, herald.FieldErrorf("emit.fields", "a field name is 1 to 100 bytes")
		}
		if p.fields[name], err = compile("emit.fields."+name, src, ruleEnv); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Program is a checked rule, ready to run.
type Program struct {
	spec      *Spec
	subFilter json.RawMessage
	filter    *filter.Expr // nil: every event
	when      *expr
	fields    map[string]*expr
}

// Spec returns the rule as checked, with its defaults.
func (p *Program) Spec() *Spec { return p.spec }

// SubscriptionFilter is the filter-language part of the input filter, for
// the subscription (nil when there is none).
func (p *Program) SubscriptionFilter() json.RawMessage { return p.subFilter }

// ParseSpec decodes and checks a rule's canonical JSON (a subscription's
// config).
func ParseSpec(raw json.RawMessage) (*Program, error) {
	var s Spec
	if err := strictDecode(raw, &s); err != nil {
		return nil, err
	}
	return s.Check()
}

func strictDecode(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			name = strings.Trim(name, `"`)
			return herald.FieldErrorf(name, "unknown member %q", name)
		}
		return herald.FieldErrorf("", "not a valid definition: %v", fmt.Sprint(err))
	}
	return nil
}
