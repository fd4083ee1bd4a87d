package rules

import (
	"encoding/json"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/filter"
)

// Event types of a view's manual overrides, published on its input topic
// (so they replay with it): the payload of a set is the key's new value
// (JSON); a delete has none. The event's key names the view key.
const (
	TypeViewSet    = "herald.view.set"
	TypeViewDelete = "herald.view.delete"
)

// ViewSpec is a view as written in PUT /v1/views/{name}: a keyed table
// kept up to date from a topic.
type ViewSpec struct {
	Input  string          `json:"input"`
	Filter json.RawMessage `json:"filter,omitempty"`
	// Key is the payload field path rows are keyed by; empty means the
	// event's key.
	Key string `json:"key,omitempty"`
	// Aggregate is what each row holds: the latest value (of a field, or
	// the whole payload) by default, or count, sum, min, max, avg,
	// distinct_count of a field over every event of the key.
	Aggregate *Aggregate `json:"aggregate,omitempty"`
	// MaxKeys bounds the rows (DefaultMaxKeys when 0): past it, events
	// of new keys are refused (counted, logged) while known rows go on.
	MaxKeys int64 `json:"max_keys,omitempty"`
}

// ViewProgram is a checked view.
type ViewProgram struct {
	spec      *ViewSpec
	subFilter json.RawMessage
	filter    *filter.Expr
}

// Spec returns the view as checked, with its defaults.
func (p *ViewProgram) Spec() *ViewSpec { return p.spec }

// SubscriptionFilter is the filter-language part of the input filter.
func (p *ViewProgram) SubscriptionFilter() json.RawMessage { return p.subFilter }

// Check validates the view, applies its defaults and compiles its filter.
func (v *ViewSpec) Check() (*ViewProgram, error) {
	subFilter, celFilter, err := checkInput(v.Input, v.Filter, false)
	if err != nil {
		return nil, err
	}
	if err := checkPath("key", v.Key); err != nil {
		return nil, err
	}
	if v.Aggregate == nil {
		v.Aggregate = &Aggregate{Op: "latest"}
	}
	if err := v.Aggregate.check("aggregate"); err != nil {
		return nil, err
	}
	if err := checkMaxKeys(&v.MaxKeys); err != nil {
		return nil, err
	}
	p := &ViewProgram{spec: v, subFilter: subFilter}
	if celFilter != "" {
		if p.filter, err = filter.CompileCEL("filter", celFilter); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// ParseViewSpec decodes and checks a view's canonical JSON.
func ParseViewSpec(raw json.RawMessage) (*ViewProgram, error) {
	var s ViewSpec
	if err := strictDecode(raw, &s); err != nil {
		return nil, err
	}
	return s.Check()
}

// Row is one key of a view, as readers see it.
type Row struct {
	Key       string
	Value     any
	Seq       int64 // the newest input event the row reflects
	UpdatedAt time.Time
}

// ViewRow decodes a stored view row; ok is false for a deleted one.
func ViewRow(op string, e herald.StateEntry) (Row, bool) {
	var st keyState
	if err := json.Unmarshal(e.Value, &st); err != nil || st.Deleted {
		return Row{}, false
	}
	return Row{Key: e.Key, Value: st.Acc.value(op), Seq: e.Seq, UpdatedAt: e.UpdatedAt}, true
}
